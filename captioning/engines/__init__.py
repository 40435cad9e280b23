"""Captioning engines behind one interface (``base.CaptionEngine``), chosen by name.

    ENGINES                           name -> "module:Class" (imported only when built)
    make_engine(spec) -> CaptionEngine
    choose_backend(requested, gpus) -> (backend, reason)

To add an engine: write a ``CaptionEngine`` subclass in a new module and add it to ``ENGINES``, or pass
its import path as the backend (``"package.module:Class"``; every Ray node must be able to import it).
"""

from __future__ import annotations

import importlib
import importlib.util

from captioning.config import EngineSpec, is_engine_path
from captioning.engines.base import CaptionEngine, CaptionResult

ENGINES = {
    "transformers": "captioning.engines.transformers_engine:TransformersEngine",
    "vllm": "captioning.engines.vllm_engine:VLLMEngine",
}


def make_engine(spec: EngineSpec) -> CaptionEngine:
    path = ENGINES.get(spec.backend, spec.backend)
    if not is_engine_path(path):
        raise ValueError(
            f"unknown backend {spec.backend!r}; expected one of {sorted(ENGINES)} or 'module:Class'"
        )
    module, cls = path.split(":")
    engine_cls = getattr(importlib.import_module(module), cls)
    if not (isinstance(engine_cls, type) and issubclass(engine_cls, CaptionEngine)):
        raise ValueError(f"backend {spec.backend!r} is not a CaptionEngine subclass")
    return engine_cls(spec)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(requested: str, gpus: float) -> tuple[str, str]:
    """The backend to use and why: ``auto`` picks vllm with a GPU and vLLM importable, else transformers."""
    if requested != "auto":
        return requested, "requested with --backend"
    if gpus <= 0:
        return "transformers", "no GPU in the Ray cluster (vLLM's CPU build is only used when asked for)"
    if not vllm_available():
        return "transformers", f"{gpus:g} GPU(s) but vllm is not importable (pip install '.[vllm]')"
    return "vllm", f"{gpus:g} GPU(s) and vllm importable"


__all__ = ["ENGINES", "CaptionEngine", "CaptionResult", "choose_backend", "make_engine", "vllm_available"]
