"""The factory of retrieval models: an adapter folder (or zero-shot CLIP) -> a DiscoVLA model ready to encode.

Public API::

    build_retrieval_model(adapters, *, backbone=None, pretrained=..., frames=12, words=32, device="cpu")

The one place that turns "these adapters" or "zero-shot CLIP" into a model: the evaluator
(:func:`training.evaluate.build_evaluation`), the Python API (:func:`training.api.load`) and the video
search's encoder (:mod:`search.encode`) all build their models here, so an index and an evaluation of the
same adapters encode identically.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["build_retrieval_model"]


def build_retrieval_model(
    adapters: str | Path | None,
    *,
    backbone: str | None = None,
    pretrained=...,
    frames: int = 12,
    words: int = 32,
    device="cpu",
    frames_override: bool = True,
):
    """The retrieval model of an adapter folder, or zero-shot CLIP (``adapters=None``).

    Zero-shot: frozen CLIP through the same code (LoRA B = 0 and IVFusion off, h_v = h_l = 0: exactly CLIP
    with mean-pooled frames), ``backbone`` default ViT-B-32, ``frames``/``words`` as given. With a folder,
    its config supplies backbone, pretrained, frames and words; a ``backbone`` that is not None and
    ``frames`` (when ``frames_override``) override it. ``pretrained``: ``...`` = the adapters' weights, or
    "openai" zero-shot; None = random weights (seed 0, the same on every run); else a tag or a file.
    """
    from training.adapters import adapter_model_config, load_adapters
    from training.model import DiscoVLAConfig, build_model

    if adapters is None:
        cfg = DiscoVLAConfig(
            backbone=backbone or "ViT-B-32",
            pretrained="openai" if pretrained is ... else pretrained,
            num_frames=frames,
            max_words=words,
            h_v=0,
            h_l=0,
        )
    else:
        given = {"backbone": backbone, "num_frames": frames if frames_override else None}
        given = {k: v for k, v in given.items() if v is not None}
        cfg = adapter_model_config(
            adapters, **given, **({} if pretrained is ... else {"pretrained": pretrained})
        )
    with torch.random.fork_rng():  # random weights (pretrained=None) are the same on every run: seed 0
        torch.manual_seed(0)
        model = build_model(cfg, device)
    if adapters is not None:
        load_adapters(model, adapters)
    return model
