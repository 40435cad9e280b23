"""The one small interface every captioning engine implements.

::

    engine = make_engine(EngineSpec(backend="transformers", model=DIR, prompt_text="..."))
    results = engine.caption(frames)     # list of [H, W, 3] uint8 arrays or PIL images
    results[0].text, results[0].finish_reason, results[0].n_tokens
    engine.provenance()                  # model, revision, engine, versions, template hash, sampling, dtype

An engine owns its model for its whole life (built in ``__init__``), asks the same rendered prompt
about every image (one image per request), and returns one :class:`CaptionResult` per image in input
order. A third engine is one new module registered in ``captioning.engines.ENGINES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from captioning.config import EngineSpec
from shared.versions import library_versions  # re-exported: engines record these versions in provenance

FINISH_STOP, FINISH_LENGTH = "stop", "length"  # vLLM's names; the transformers engine uses the same


@dataclass(frozen=True)
class CaptionResult:
    text: str  # the caption, stripped of special tokens and surrounding whitespace
    finish_reason: str  # "stop" (end-of-sequence) or "length" (max_tokens reached)
    n_tokens: int  # generated tokens, the end-of-sequence token included
    token_ids: tuple[int, ...] = ()  # the generated ids (tests compare engines on them)


def to_pil(image) -> Image.Image:
    """An RGB PIL image from a PIL image or an [H, W, 3] uint8 array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 frame, got shape {array.shape} dtype {array.dtype}")
    return Image.fromarray(array)


class CaptionEngine(ABC):
    """Captions images with one multimodal model; see the module docstring."""

    name: str = ""
    busy_seconds: float = 0.0  # time spent computing captions (set per instance by engines that measure it)

    def __init__(self, spec: EngineSpec):
        self.spec = spec

    @abstractmethod
    def caption(self, images: Sequence) -> list[CaptionResult]:
        """One result per image, in order. Raises on engine failure (the caller marks the video failed)."""

    @abstractmethod
    def provenance(self) -> dict:
        """What decides the captions: see :meth:`base_provenance` for the shared keys."""

    def base_provenance(self, *, model_revision, dtype: str, chat_template_sha256, packages) -> dict:
        return {
            "model": self.spec.model,
            "model_revision": model_revision,
            "engine": self.name,
            "dtype": dtype,
            "chat_template_sha256": chat_template_sha256,
            "sampling": self.spec.sampling.provenance(),
            "library_versions": library_versions(*packages),
        }
