"""The encoders of the video search: the evaluator's model, dataset class and transform, nothing of its own.

:class:`Encoder` holds a DiscoVLA model built by :func:`training.factory.build_retrieval_model` (an adapter
folder, or zero-shot CLIP), its tokenizer and frame transform, and the provenance that identifies it:
backbone, pretrained weights (sha256 when a file), adapters' sha256, hyper-parameters, frames, query words,
the frame sampler. Videos go through :class:`training.data.RetrievalDataset` (the evaluation's sampler,
decoder, resize and crop, ``on_decode_error="blank"``) and ``model.encode_video`` (IVFusion, masked mean);
queries through ``model.encode_text``. An index and a query encoder are compatible when their
:func:`model_identity` are equal.
"""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from shared.errors import DiscoVLAError
from shared.frames import SamplerConfig

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 128  # pixels, longest side of the JPEG thumbnails kept in the table
DEFAULT_FRAMES, DEFAULT_WORDS = 12, 32  # zero-shot defaults (the folder dataset's)
IDENTITY_KEYS = (
    "backbone",
    "pretrained_id",
    "adapters_sha256",
    "hyper_parameters",
    "quick_gelu",
    "sampler",
    "words",
)


class EmptyQueryError(DiscoVLAError, ValueError):
    """A query with no words in it."""


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _adapters_location(adapters) -> str | None:
    """An adapter folder as recorded: a local path made absolute, a URI (``s3://...``) as given."""
    if adapters is None:
        return None
    return str(adapters) if "://" in str(adapters) else str(Path(adapters).resolve())


def _adapters_sha256(adapters, weights_name: str) -> str:
    """sha256 of the adapters' weights file (local or at a URI); "none" for zero-shot CLIP."""
    if adapters is None:
        return "none"
    if "://" not in str(adapters):
        return file_sha256(Path(adapters) / weights_name)
    from shared.shards.storage import resolve, sha256_hex

    return sha256_hex(resolve(adapters).join(weights_name).read_bytes())


def model_identity(provenance: dict) -> dict:
    """The part of a provenance that decides the embeddings: equal identities can share an index."""
    return {k: provenance.get(k) for k in IDENTITY_KEYS}


def describe_model(provenance: dict) -> str:
    """'adapters PATH (sha256 abc123…), backbone B, pretrained P' for error messages."""
    sha = provenance.get("adapters_sha256") or "none"
    adapters = (
        "none (zero-shot CLIP)" if sha == "none" else f"{provenance.get('adapters')} (sha256 {sha[:12]}…)"
    )
    return f"adapters {adapters}, backbone {provenance.get('backbone')}, pretrained {provenance.get('pretrained')}"


def _package_version() -> str:
    try:
        return metadata.version("discovla")
    except metadata.PackageNotFoundError:
        return "unknown"


def thumbnail_jpeg(frame: torch.Tensor) -> bytes:
    """A small JPEG of one ``[3, S, S]`` uint8 frame (the frame the model saw, after resize and crop)."""
    image = Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy())
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


class Encoder:
    """A retrieval model for indexing and querying; see the module docstring."""

    def __init__(
        self,
        model,
        *,
        words: int,
        adapters: str | Path | None,
        device="cpu",
        decode_short_side: int | None = None,
        decode_timeout_s: float | None = 60.0,
    ):
        from training.augment import VideoTransform
        from training.data import clip_tokenizer

        self.model = model.eval()
        self.cfg = model.cfg
        self.words = words
        self.device = torch.device(device)
        self.tokenizer = clip_tokenizer(self.cfg.backbone, words)
        self.transform = VideoTransform.from_model(model.preprocess_cfg)
        self.decode_short_side, self.decode_timeout_s = decode_short_side, decode_timeout_s
        self.provenance = self._provenance(adapters)

    @classmethod
    def load(
        cls,
        adapters: str | Path | None,
        *,
        backbone: str | None = None,
        pretrained=...,
        frames: int | None = None,
        words: int | None = None,
        device="cpu",
        **options,
    ) -> Encoder:
        """The model of an adapter folder (``None``: zero-shot CLIP); arguments that are not None override it."""
        from training.adapters import adapter_model_config
        from training.factory import build_retrieval_model

        if words is None:
            words = adapter_model_config(adapters).max_words if adapters is not None else DEFAULT_WORDS
        model = build_retrieval_model(
            adapters,
            backbone=backbone,
            pretrained=pretrained,
            frames=frames or DEFAULT_FRAMES,
            words=words,
            device=device,
            frames_override=frames is not None,
        )
        return cls(model, words=words, adapters=adapters, device=device, **options)

    def _provenance(self, adapters) -> dict:
        from training.adapters import WEIGHTS_NAME

        cfg = self.cfg
        pretrained = cfg.pretrained
        pretrained_id = pretrained
        if pretrained is not None and Path(pretrained).expanduser().is_file():
            pretrained_id = f"sha256:{file_sha256(Path(pretrained).expanduser())}"
        return {
            "backbone": cfg.backbone,
            "pretrained": pretrained,
            "pretrained_id": pretrained_id,
            "adapters": _adapters_location(adapters),
            "adapters_sha256": _adapters_sha256(adapters, WEIGHTS_NAME),
            "hyper_parameters": cfg.hyper_parameters(),
            "max_words": cfg.max_words,
            "quick_gelu": cfg.quick_gelu,
            "frames": cfg.num_frames,
            "words": self.words,
            "sampler": SamplerConfig(num_frames=cfg.num_frames).provenance(),
            "transform": {
                "size": self.transform.size,
                "mean": self.transform.mean.flatten().tolist(),
                "std": self.transform.std.flatten().tolist(),
            },
            "decode_short_side": self.decode_short_side,
            "embed_dim": int(self.model.embed_dim),
            "package_version": _package_version(),
            "torch_version": torch.__version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    # ---------------------------------------------------------------- queries
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """``[n, D]`` float32 L2-normalised text features (the query tower of the same adapters)."""
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise EmptyQueryError(f"empty query {text!r}: type a few words describing the clip you want")
        with torch.no_grad():
            tokens = self.tokenizer([" ".join(t.split()) for t in texts]).to(self.device)  # [n, L]
            return self.model.encode_text(tokens).float().cpu().numpy()  # [n, D]

    # ---------------------------------------------------------------- videos
    def encode_items(
        self, items: list, *, batch_size: int = 16, num_workers: int = 0, progress: bool = False
    ) -> tuple[list, np.ndarray, list[bytes], set[str]]:
        """Encode ``VideoItem`` s: ``(items kept, embeddings [n, D] float32, thumbnails, failed video ids)``.

        Items whose file is missing are dropped (not in the kept list); items that fail to decode are in the
        kept list but their video id is in ``failed`` (their rows are zeros and must not be indexed).
        """
        from torch.utils.data import DataLoader

        from training.data import RetrievalDataset, collate

        data = RetrievalDataset(
            items,
            num_frames=self.cfg.num_frames,
            transform=self.transform,
            tokenizer=self.tokenizer,
            on_decode_error="blank",
            normalize=False,
            decode_short_side=self.decode_short_side,
            decode_timeout_s=self.decode_timeout_s,
        )
        loader = DataLoader(
            data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
        )
        feats, thumbs, failed = [], [], set()
        middle = self.cfg.num_frames // 2
        with torch.no_grad():
            for batch in tqdm(loader, desc="encode", unit="batch", disable=not progress, leave=False):
                frames = batch["frames"]  # [b, F, 3, S, S] uint8
                thumbs += [thumbnail_jpeg(f[middle]) for f in frames]
                normalised = self.transform.normalize(frames.to(self.device))
                _, video = self.model.encode_video(normalised, batch["frame_mask"].to(self.device))  # [b, D]
                feats.append(video.float().cpu().numpy())
                failed.update(batch["decode_failed"])
        return data.items, np.concatenate(feats).astype(np.float32), thumbs, failed
