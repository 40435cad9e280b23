"""Text-video retrieval evaluation: batched feature extraction (cached), similarity, CLIP4Clip metrics.

    S[i,v] = λ·cos(t_i, v̄_v)     rows: the dataset's texts, columns: its distinct videos

Each item of the dataset is one text; items sharing a video (same id, file and window) share one column,
so MSRVTT train-style sets (20 sentences per video) decode every video once, and the true video of
text i is known by index (``text_to_video[i]``). text-to-video ranks rows, video-to-text ranks the
videos' best texts (``training.metrics``). Dual-softmax (DSL) numbers, when asked, sit under
``t2v_dsl`` / ``v2t_dsl``, apart from the protocol's numbers.

Teacher report: given a caption set that holds pseudo captions for every video of the split, the
image-level similarity the method distils from (S_img of PImgAlign: each video's pseudo captions against
every video's frames, ``training.losses.pimg_similarity``) is ranked as well, under ``teacher``
(docs/method.md, "Reading the teacher report"). ``groups`` (name -> text indices) adds the metrics of
each group of queries against the whole gallery, under ``groups`` (and ``teacher.groups``).

Feature cache: with ``cache_dir``, the text and video features are saved as
``features-<key>.safetensors``, ``key`` a hash of the model (config, every adapter tensor, a fingerprint
of each frozen tensor), the dataset (items, video file sizes and modification times, frames, transform,
tokenizer) and the frame sampler; a second evaluation with the same adapters reads them back instantly.

The dataset is a :class:`training.data.RetrievalDataset` (or a DataLoader over one): ``items``,
``tokenizer``, ``transform`` and ``__getitem__`` returning ``frames`` / ``frame_mask``. Frames may be uint8
(normalised here, on ``device``) or already normalised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from training.distributed import broadcast_object, gather_features, gather_objects, get_rank, shard_range
from training.metrics import dual_softmax, group_max, retrieval_metrics, text_video_metrics

__all__ = ["evaluate", "extract_features", "feature_cache_key", "CACHE_VERSION"]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


# ---------------------------------------------------------------------- the texts and their videos
def _video_key(item) -> tuple:
    return (item.video_id, str(item.path), item.start, item.end)


def video_columns(items) -> tuple[list[int], list[int]]:
    """(item index of each distinct video, in first-seen order; video column of each item/text)."""
    first: dict[tuple, int] = {}
    representatives, text_to_video = [], []
    for index, item in enumerate(items):
        key = _video_key(item)
        if key not in first:
            first[key] = len(representatives)
            representatives.append(index)
        text_to_video.append(first[key])
    return representatives, text_to_video


# ---------------------------------------------------------------------- the cache key
def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()


def _model_fingerprint(model, digest) -> None:
    """Config, every trainable tensor in full, and (shape, sum, |sum|, first values) of each frozen one."""
    cfg = getattr(model, "cfg", None)
    digest.update(
        json.dumps(asdict(cfg) if is_dataclass(cfg) else repr(cfg), sort_keys=True, default=str).encode()
    )
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype}:{p.requires_grad}".encode())
        if p.requires_grad:
            digest.update(_tensor_bytes(p))
        else:
            flat = p.detach().flatten()
            summary = torch.stack([flat.double().sum(), flat.double().abs().sum()])
            digest.update(_tensor_bytes(summary) + _tensor_bytes(flat[:16]))
    for name, b in sorted(model.named_buffers(), key=lambda kv: kv[0]):
        digest.update(name.encode() + _tensor_bytes(b.flatten()[:64]))


def _dataset_fingerprint(dataset, digest) -> None:
    """Items (ids, paths, windows, texts), file size + mtime of each video, frames, transform, tokenizer."""
    from shared.frames import SamplerConfig

    stats = {}
    for item in dataset.items:
        path = Path(item.path)
        if path not in stats:
            st = path.stat() if path.exists() else None
            stats[path] = (st.st_size, st.st_mtime_ns) if st else None
        digest.update(
            json.dumps([item.video_id, str(path), item.start, item.end, item.text, stats[path]]).encode()
        )
    transform = getattr(dataset, "transform", None)
    num_frames = getattr(dataset, "num_frames", None)
    parts = {
        "num_frames": num_frames,
        "sampler": SamplerConfig(num_frames=num_frames).provenance() if num_frames else None,
        "transform": repr(transform),
        "mean_std": [
            _tensor_bytes(torch.as_tensor(getattr(transform, k))).hex()
            for k in ("mean", "std")
            if hasattr(transform, k)
        ],
        "tokenizer": [
            type(getattr(dataset, "tokenizer", None)).__name__,
            getattr(getattr(dataset, "tokenizer", None), "context_length", None),
        ],
        "decode_short_side": getattr(dataset, "decode_short_side", None),
        "frame_store": getattr(getattr(dataset, "frame_store", None), "fingerprint", lambda: None)(),
    }
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())


def feature_cache_key(model, dataset, *, device: torch.device) -> str:
    """The hex key of the feature cache: model + dataset + sampler + how features are computed."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"v{CACHE_VERSION}:{device.type}:{torch.is_autocast_enabled(device.type)}".encode())
    _model_fingerprint(model, digest)
    _dataset_fingerprint(dataset, digest)
    return digest.hexdigest()


# ---------------------------------------------------------------------- extraction
def _collate(samples: list[dict]) -> dict:
    return {
        "frames": torch.stack([s["frames"] for s in samples]),
        "frame_mask": torch.stack([s["frame_mask"] for s in samples]),
        "index": [int(s["index"]) for s in samples],
        "decode_failed": [v for s in samples for v in s.get("decode_failed", [])],
    }


def _encode_texts(
    model, dataset, batch_size: int, device, progress: bool, share: range | None = None
) -> torch.Tensor:
    share = range(len(dataset.items)) if share is None else share
    texts = [dataset.items[i].text for i in (share or range(1))]  # an empty share encodes one text for D
    feats = []
    for start in tqdm(range(0, len(texts), batch_size), desc="texts", unit="batch", disable=not progress):
        tokens = dataset.tokenizer(texts[start : start + batch_size]).to(device)  # [b, L]
        feats.append(model.encode_text(tokens).float().cpu())  # [b, D]
    return torch.cat(feats)[: len(share)]  # [N_text, D]


def _encode_videos(
    model, dataset, rows: list[int], batch_size: int, device, num_workers: int, progress: bool
) -> tuple[torch.Tensor, list[str]]:
    loader = DataLoader(
        Subset(dataset, rows),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    feats, failed, done = [], [], 0
    for batch in tqdm(loader, desc="videos", unit="batch", disable=not progress):
        expected = rows[done : done + len(batch["index"])]
        if batch["index"] != expected:
            raise RuntimeError(
                f"the dataset returned items {batch['index']} for {expected}: it substitutes failed "
                "videos, which would misalign texts and videos; build it with on_decode_error='blank'"
            )
        frames = batch["frames"].to(device)  # [b, F, 3, S, S]
        if frames.dtype == torch.uint8:
            frames = dataset.transform.normalize(frames)
        _, video = model.encode_video(frames, batch["frame_mask"].to(device))  # [b, D]
        feats.append(video.float().cpu())
        failed += batch["decode_failed"]
        done += len(expected)
    return torch.cat(feats), failed  # [N_video, D]


def _gather_rows(local: torch.Tensor, device) -> torch.Tensor:
    """The ranks' row blocks concatenated in rank order (on the CPU); ``local`` itself with one process."""
    return gather_features(local.to(device)).cpu()  # NCCL gathers device tensors, gloo CPU ones


def extract_features(
    model, dataset, *, batch_size: int = 32, device=None, num_workers: int = 0, progress: bool = True
) -> dict:
    """``{"text_feats" [N_text, D], "video_feats" [N_video, D], "text_to_video" [N_text], "decode_failed"}``.

    Under a process group (torchrun, Ray Train) every rank encodes a contiguous share of the texts and of
    the distinct videos (``training.distributed.shard_range``) and the shares are gathered in rank order:
    every rank returns the same full features as one process would. All ranks must call it.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rows, text_to_video = video_columns(dataset.items)
    text_share, video_share = shard_range(len(dataset.items)), shard_range(len(rows))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            text = _encode_texts(model, dataset, batch_size, device, progress, text_share)
            own = [rows[i] for i in video_share] or rows[:1]  # an empty share encodes one video for D
            video, failed = _encode_videos(model, dataset, own, batch_size, device, num_workers, progress)
            text, video = _gather_rows(text, device), _gather_rows(video[: len(video_share)], device)
    finally:
        model.train(was_training)
    failed = [vid for part in gather_objects(failed if video_share else []) for vid in part]
    return {
        "text_feats": text,
        "video_feats": video,
        "text_to_video": torch.tensor(text_to_video),
        "decode_failed": sorted(set(failed)),
    }


def _read_cache(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        out = {k: f.get_tensor(k) for k in ("text_feats", "video_feats", "text_to_video")}
        out["decode_failed"] = json.loads(f.metadata()["decode_failed"])
    return out


def _write_cache(path: Path, feats: dict, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tensors = {k: feats[k].contiguous() for k in ("text_feats", "video_feats", "text_to_video")}
    save_file(tensors, str(tmp), metadata={"key": key, "decode_failed": json.dumps(feats["decode_failed"])})
    os.replace(tmp, path)  # a reader never sees a half-written file


# ---------------------------------------------------------------------- the teacher and groups of queries
def teacher_similarity(
    model, dataset, captions, caption_tokenizer, *, batch_size: int = 32, device=None, progress: bool = True
) -> torch.Tensor:
    """S_img [N_video, N_video] of the split's distinct videos (``video_columns`` order): row i = video i's
    pseudo captions (``captions.captions[video_id]``, F per video), column j = video j's frames.

    A second pass over the videos (frame features) and the captions: about the cost of the evaluation.
    """
    from training.losses import pimg_similarity

    device = torch.device(device) if device is not None else next(model.parameters()).device
    rows, _ = video_columns(dataset.items)
    loader = DataLoader(Subset(dataset, rows), batch_size=batch_size, shuffle=False, collate_fn=_collate)
    frames, pseudo = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="teacher (S_img)", unit="batch", disable=not progress):
                video = batch["frames"].to(device)  # [b, F, 3, S, S]
                if video.dtype == torch.uint8:
                    video = dataset.transform.normalize(video)
                z, _ = model.encode_video(video, batch["frame_mask"].to(device))  # [b, F, D]
                texts = [list(captions.captions[dataset.items[i].video_id]) for i in batch["index"]]
                tokens = torch.stack([caption_tokenizer(t) for t in texts]).to(device)  # [b, F, L]
                frames.append(z.float().cpu())
                pseudo.append(model.encode_pseudo_captions(tokens).float().cpu())  # [b, F, D]
    finally:
        model.train(was_training)
    z, p = torch.cat(frames), torch.cat(pseudo)  # [N_video, F, D] each
    scale = float(getattr(model, "logit_scale_value", 100.0))
    return torch.cat([pimg_similarity(p[i : i + 64], z, scale) for i in range(0, len(p), 64)])  # [N, N]


def group_metrics(sim: torch.Tensor, owner: torch.Tensor, texts) -> dict:
    """A group of queries against the whole gallery: t2v ranks the group's texts among all videos, v2t the
    group's videos among all videos' texts. ``sim`` [N_text, N_video], ``owner[i]`` = video of text i."""
    texts = torch.as_tensor(list(texts), dtype=torch.long)
    videos = owner[texts].unique()
    return {
        "t2v": retrieval_metrics(sim[texts], owner[texts]),
        "v2t": retrieval_metrics(group_max(sim, owner)[videos], videos),
        "num_texts": len(texts),
        "num_videos": len(videos),
    }


def teacher_report(sim_img: torch.Tensor, owner: torch.Tensor, groups=None) -> dict:
    """Retrieval by S_img [N_video, N_video] (rows: videos' pseudo captions, columns: videos' frames)."""
    out = {**text_video_metrics(sim_img), "num_videos": int(sim_img.shape[0])}
    if groups:
        out["groups"] = {}
        for name, texts in groups.items():
            videos = owner[torch.as_tensor(list(texts), dtype=torch.long)].unique()
            out["groups"][name] = {
                "t2v": retrieval_metrics(sim_img[videos], videos),
                "v2t": retrieval_metrics(sim_img.t()[videos], videos),
                "num_videos": len(videos),
            }
    return out


# ---------------------------------------------------------------------- metrics
def _metrics(feats: dict, scale: float, dsl: bool, failed_columns: list[int], groups=None) -> dict:
    sim = scale * feats["text_feats"].double() @ feats["video_feats"].double().t()  # S [N_text, N_video]
    if failed_columns:  # undecodable videos score below everything: their texts miss, their rows tie (last)
        sim[:, failed_columns] = sim.min() - 1.0
    owner = feats["text_to_video"]
    one_each = sim.shape[0] == sim.shape[1] and bool((owner == torch.arange(len(owner))).all())
    out = text_video_metrics(sim, None if one_each else owner)
    if dsl:
        out["t2v_dsl"] = retrieval_metrics(dual_softmax(sim), owner)  # softmax over texts
        v2t = dual_softmax(sim.t()).t()  # softmax over videos for each text, back to [N_text, N_video]
        out["v2t_dsl"] = retrieval_metrics(v2t.t() if one_each else group_max(v2t, owner))
    if groups:
        out["groups"] = {name: group_metrics(sim, owner, texts) for name, texts in groups.items()}
    out.update(
        num_texts=int(sim.shape[0]), num_videos=int(sim.shape[1]), decode_failed=feats["decode_failed"]
    )
    return out


def evaluate(
    model,
    data,
    *,
    batch_size: int = 32,
    device=None,
    cache_dir: str | Path | None = None,
    dsl: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
    captions=None,
    caption_tokenizer=None,
    groups=None,
) -> dict:
    """Retrieval metrics of ``model`` on ``data`` (a RetrievalDataset or a DataLoader over one).

    Returns ``{"t2v": {R1, R5, R10, MdR, MnR}, "v2t": {...}, "num_texts", "num_videos", "decode_failed"}``
    plus ``"t2v_dsl"`` / ``"v2t_dsl"`` with ``dsl=True``. ``device`` defaults to the model's; features
    are cached under ``cache_dir`` when given (module docstring). Under a process group every rank calls
    it: the ranks share the encoding (:func:`extract_features`), rank 0 reads/writes the cache and computes
    the metrics, and every rank returns them. ``captions`` (a CaptionSet) and ``caption_tokenizer``: the
    teacher report when the set covers every video of the split; ``groups``: ``{name: [text index]}``.
    """
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if num_workers is None:
        num_workers = data.num_workers if isinstance(data, DataLoader) else 0
    device = torch.device(device) if device is not None else next(model.parameters()).device
    started = time.perf_counter()
    path = None
    if cache_dir is not None:
        key = feature_cache_key(model, dataset, device=device)
        path = Path(cache_dir) / f"features-{key}.safetensors"
    main = get_rank() == 0
    feats = None
    if main and path is not None and path.is_file():
        try:
            feats = _read_cache(path)
            logger.info("features read from %s", path)
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            logger.warning("%s: unreadable feature cache (%s); extracting again", path, err)
    if not broadcast_object(feats is not None):  # rank 0 decides for all: extraction is collective
        feats = extract_features(
            model,
            dataset,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            progress=progress and main,
        )
        if main and path is not None:
            _write_cache(path, feats, key)
            logger.info("features cached in %s", path)
    if not main:
        return broadcast_object(None)
    failed = set(feats["decode_failed"])
    rows, _ = video_columns(dataset.items)
    failed_columns = [c for c, row in enumerate(rows) if dataset.items[row].video_id in failed]
    if failed:
        logger.warning("%d videos failed to decode and count as misses: %s", len(failed), sorted(failed)[:5])
    scale = float(getattr(model, "logit_scale_value", 100.0))
    metrics = _metrics(feats, scale, dsl, failed_columns, groups)
    if captions is not None:
        missing = [v for v in {item.video_id for item in dataset.items} if v not in captions.captions]
        if missing:
            logger.info("no teacher report: %d videos of the split have no pseudo captions", len(missing))
        else:
            sim_img = teacher_similarity(
                model,
                dataset,
                captions,
                caption_tokenizer,
                batch_size=batch_size,
                device=device,
                progress=progress,
            )
            metrics["teacher"] = teacher_report(sim_img, feats["text_to_video"], groups)
    logger.info(
        "evaluated %d texts x %d videos in %.1f s",
        metrics["num_texts"],
        metrics["num_videos"],
        time.perf_counter() - started,
    )
    return broadcast_object(metrics)


# ---------------------------------------------------------------------- a benchmark split, end to end
def build_evaluation(
    dataset: str,
    split: str,
    *,
    adapters: str | Path | None,
    annotations=None,
    video_root=None,
    backbone: str | None = None,
    pretrained=...,
    frames: int | None = None,
    words: int | None = None,
    device="cpu",
    limit: int | None = None,
    decode_short_side: int | None = None,
    frame_store=None,
):
    """(model, RetrievalDataset, setup dict) for ``dataset``/``split`` with an adapter folder or zero-shot.

    ``adapters=None``: the zero-shot baseline, frozen CLIP through the same code (LoRA B = 0 and IVFusion
    off, i.e. h_v = h_l = 0: exactly CLIP with mean-pooled frames). With a folder, its config supplies
    backbone, pretrained and frames; arguments that are not None override them. ``pretrained``: ``...``
    (default) = the adapters' weights, or "openai" zero-shot; None = random weights (offline smoke runs);
    else an open_clip tag or a checkpoint file. ``frames``/``words`` default to the dataset's values.
    ``frame_store``: a frame-store root read instead of decoding (refused unless it holds these frames).
    """
    from shared.datasets import get_dataset
    from training.augment import VideoTransform
    from training.data import RetrievalDataset, clip_tokenizer, open_frame_store
    from training.factory import build_retrieval_model

    source = get_dataset(dataset, split, annotations, video_root)
    words = words or source.words
    model = build_retrieval_model(
        adapters,
        backbone=backbone,
        pretrained=pretrained,
        frames=frames or source.frames,
        words=words,
        device=device,
        frames_override=frames is not None,
    )
    cfg = model.cfg
    items = source.items()[:limit] if limit else source.items()
    store = (
        open_frame_store(frame_store, cfg.num_frames, model.preprocess_cfg, decode_short_side)
        if frame_store
        else None
    )
    data = RetrievalDataset(
        items,
        num_frames=cfg.num_frames,
        transform=VideoTransform.from_model(model.preprocess_cfg),
        tokenizer=clip_tokenizer(cfg.backbone, words),
        on_decode_error="blank",
        normalize=False,
        decode_short_side=decode_short_side,
        frame_store=store,
    )
    setup = {
        "dataset": dataset,
        "split": split,
        "adapters": str(adapters) if adapters else "none (zero-shot CLIP)",
        "backbone": cfg.backbone,
        "pretrained": cfg.pretrained,
        "frames": cfg.num_frames,
        "words": words,
        "items_listed": len(items),
        "items_skipped": data.describe_skipped(),
    }
    return model, data, setup


def run_evaluation(
    out: str | Path,
    *,
    batch_size: int = 32,
    dsl: bool = False,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    **build,
) -> dict:
    """:func:`build_evaluation` (``build`` keywords) + :func:`evaluate`; writes ``metrics.json`` and the
    recall table (``recall_table.md/.html/.png``) into ``out``; returns the metrics with a ``setup`` entry."""
    from training.reporting import save_table

    model, data, setup = build_evaluation(**build)
    metrics = evaluate(
        model,
        data,
        batch_size=batch_size,
        device=build.get("device", "cpu"),
        cache_dir=cache_dir,
        dsl=dsl,
        num_workers=num_workers,
        progress=progress,
    )
    metrics["setup"] = {**setup, "dsl": dsl, "batch_size": batch_size}
    title = f"{setup['dataset']} {setup['split']}: {setup['adapters']} ({setup['backbone']}, {setup['frames']} frames)"
    if get_rank() == 0:  # under torchrun every rank holds the metrics; one writes them
        save_table(metrics, out, title=title)
    return metrics
