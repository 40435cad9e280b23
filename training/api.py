"""The Python API: the common tasks of the toolkit, each in one call.

::

    from training import api

    run = api.train("msrvtt", captions="captions/msrvtt", output_dir="runs/msrvtt")  # a preset + overrides
    model = api.load_model(run / "adapters" / "best")      # or api.load_model(None): zero-shot CLIP
    texts = api.encode_texts(model, ["a man is cooking", "a dog runs on the beach"])   # [2, D]
    videos = api.encode_videos(model, ["a.mp4", "b.mp4"])                               # [2, D]
    scores = texts @ videos.T                              # cosine similarities (features are unit vectors)
    metrics = api.evaluate(model, "msrvtt", "test")        # {"t2v": {"R1": ...}, "v2t": {...}, ...}
    captions = api.read_captions("captions/msrvtt")        # .captions["video7010"] -> F pseudo captions

Every function here is a thin, documented entry to the library (``training.*``, ``shared.*``); the
command-line tools (``python -m pipelines.<name>``) call the same code. Expected failures (a missing file,
an adapter folder for another model, a video that cannot be decoded, a refused caption set) raise
:class:`DiscoVLAError` subclasses whose message names the file and the problem. Features are
L2-normalised float32 tensors on the CPU, D = the backbone's embedding width (512 for ViT-B).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from shared.datasets import VideoItem
from shared.errors import DiscoVLAError
from training.adapters import AdapterLoadError, save_adapters
from training.lora import merge_lora
from training.model import DiscoVLA, DiscoVLAConfig

__all__ = [
    "AdapterLoadError",
    "DiscoVLA",
    "DiscoVLAConfig",
    "DiscoVLAError",
    "encode_texts",
    "encode_videos",
    "evaluate",
    "load_model",
    "merge_lora",
    "read_captions",
    "save_adapters",
    "train",
]


def train(preset: str | Path | None = None, *, resume: bool = False, **fields) -> Path | str:
    """Train DiscoVLA in this process; returns the run folder (the URI as given when ``output_dir`` is on
    object storage, ``s3://...``: training.run_dir).

    ``preset``: a name of ``training/presets`` (``msrvtt``, ``didemo``, ``activitynet``, ``lsmdc``, ``demo``)
    or a YAML file (a run's ``config.yaml`` too); ``fields`` override any :class:`training.config.TrainConfig`
    field (``captions=``, ``output_dir=``, ``epochs=``, ...). The run folder holds ``adapters/best`` and
    ``adapters/last`` (for :func:`load_model`), ``metrics.jsonl``, ``summary.json`` and the curves.
    ``resume=True`` continues from the folder's checkpoint. Multi-GPU runs: ``torchrun`` or Ray through
    ``python -m pipelines.train``.
    """
    from training.config import resolve_config
    from training.launch import run_local
    from training.run_dir import is_remote

    cfg = resolve_config(preset, **fields)
    run_local(cfg, resume=resume)
    return cfg.output_dir if is_remote(cfg.output_dir) else Path(cfg.output_dir)


def load_model(
    adapters: str | Path | None,
    *,
    backbone: str | None = None,
    pretrained=...,
    frames: int | None = None,
    words: int = 32,
    device: str | torch.device = "cpu",
    merge: bool = False,
) -> DiscoVLA:
    """A DiscoVLA model in eval mode: an adapter folder on its frozen CLIP, or zero-shot CLIP.

    ``adapters``: a folder written by training (``<run>/adapters/best``), a local path or an object-store
    URI (``s3://bucket/run/adapters/best?endpoint_override=...``: read with the same checks); its
    ``adapter_config.json`` supplies the backbone, the CLIP weights and every hyper-parameter. ``None``:
    zero-shot CLIP through the same code (``backbone`` default ViT-B-32, frames mean-pooled, ``words``
    tokens per text).
    ``pretrained``: leave out to use the adapters' CLIP weights (zero-shot: "openai"); pass a local
    checkpoint file when they are elsewhere on this machine, or None for random weights. ``frames``:
    frames per video (default: the adapters' F, zero-shot 12). ``merge=True`` folds LoRA into the frozen
    weights (:func:`merge_lora`): same features, faster, but the adapters can no longer be saved.
    """
    from training.factory import build_retrieval_model

    model = build_retrieval_model(
        adapters,
        backbone=backbone,
        pretrained=pretrained,
        frames=frames or 12,
        words=words,
        device=device,
        frames_override=frames is not None,
    )
    model.eval()
    return merge_lora(model) if merge else model


def _device(model: DiscoVLA, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def encode_texts(
    model: DiscoVLA,
    texts: str | Sequence[str],
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Query features [N, D] of ``texts`` (a string or a list), tokenised to the model's ``max_words``."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"encode_texts takes a string or a non-empty list of strings, got {texts!r:.80}")
    device = _device(model, device)
    was_training = model.training
    model.eval()
    feats = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                tokens = model.tokenizer(texts[start : start + batch_size]).to(device)  # [b, max_words]
                feats.append(model.encode_text(tokens).float().cpu())  # [b, D]
    finally:
        model.train(was_training)
    return torch.cat(feats)


def _video_items(videos) -> list[VideoItem]:
    """Paths (the whole video) or :class:`shared.datasets.VideoItem` (with a window) -> VideoItems."""
    if isinstance(videos, (str, Path, VideoItem)):
        videos = [videos]
    items = []
    for v in videos:
        if isinstance(v, VideoItem):
            items.append(v)
        elif isinstance(v, (str, Path)):
            items.append(
                VideoItem(Path(v).stem, Path(v), None, None, "", "api", Path(v).stem, Path(v).is_file())
            )
        else:
            raise TypeError(f"encode_videos takes video paths or VideoItems, got {type(v).__name__}")
    if not items:
        raise TypeError("encode_videos takes at least one video")
    return items


def _retrieval_dataset(
    model: DiscoVLA, items: list[VideoItem], *, words: int, on_decode_error: str, **options
):
    from training.augment import VideoTransform
    from training.data import RetrievalDataset, clip_tokenizer

    return RetrievalDataset(
        items,
        num_frames=model.cfg.num_frames,
        transform=VideoTransform.from_model(model.preprocess_cfg),
        tokenizer=clip_tokenizer(model.cfg.backbone, words),
        on_decode_error=on_decode_error,
        normalize=False,
        **options,
    )


def encode_videos(
    model: DiscoVLA,
    videos,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    decode_short_side: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Video features [N, D], one row per entry of ``videos`` (paths, or VideoItems for a window).

    Each video is sampled with the project's frame sampler (``model.cfg.num_frames`` frames, the same
    frames the captioning stage saw), preprocessed as in evaluation and encoded with IVFusion. A video
    that cannot be decoded raises :class:`shared.frames.VideoDecodeError` naming the file.
    """
    from training.evaluate import extract_features

    items = _video_items(videos)
    data = _retrieval_dataset(
        model,
        items,
        words=model.cfg.max_words,
        on_decode_error="raise",
        skip_missing_files=False,
        decode_short_side=decode_short_side,
    )
    feats = extract_features(
        model,
        data,
        batch_size=batch_size,
        device=_device(model, device),
        num_workers=num_workers,
        progress=progress,
    )
    return feats["video_feats"][feats["text_to_video"]]  # repeated paths share one encoding


def evaluate(
    model: DiscoVLA,
    dataset: str,
    split: str,
    *,
    annotations: str | Path | None = None,
    video_root: str | Path | None = None,
    words: int | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    dsl: bool = False,
    decode_short_side: int | None = None,
    progress: bool = True,
) -> dict:
    """Text-video retrieval metrics of ``model`` on a benchmark split (``shared.datasets`` names).

    Returns ``{"t2v": {"R1", "R5", "R10", "MdR", "MnR"}, "v2t": {...}, "num_texts", "num_videos",
    "decode_failed"}`` (R@K in percent; ``t2v_dsl`` / ``v2t_dsl`` with ``dsl=True``). Videos that cannot
    be decoded count as misses and are listed. ``words``: query tokens (default: the dataset's, 32 or
    64); ``limit``: the first N items only; ``cache_dir``: reuse features of an identical evaluation.
    """
    from shared.datasets import get_dataset
    from training.evaluate import evaluate as run

    source = get_dataset(dataset, split, annotations, video_root)
    items = source.items()[:limit] if limit else source.items()
    data = _retrieval_dataset(
        model,
        items,
        words=words or source.words,
        on_decode_error="blank",
        decode_short_side=decode_short_side,
    )
    return run(
        model,
        data,
        batch_size=batch_size,
        device=_device(model, device),
        cache_dir=cache_dir,
        dsl=dsl,
        num_workers=num_workers,
        progress=progress,
    )


def read_captions(path: str | Path, *, split: str | None = None, num_frames: int | None = None):
    """A caption set (``pipelines.caption`` output, local or ``s3://``/``gs://``), every file checked.

    Returns a ``shared.shards.CaptionSet``: ``.captions[video_id]`` = the F pseudo captions in frame
    order, ``.failed`` = videos with a failed frame, ``.provenance``, ``.num_frames``. ``num_frames``
    refuses a set with another F; a bad set raises ``CaptionSetError`` naming the file.
    """
    from shared.shards import load_caption_set

    return load_caption_set(path, split=split, num_frames=num_frames)
