"""What the caption-stage tests share: a local Ray for one test module, the tiny-model CPU configuration,
and a run over a folder dataset made the way ``python -m pipelines.caption --dataset folder`` makes it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from captioning.config import CaptionConfig, SamplingConfig
from shared.datasets import get_dataset

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def local_ray(
    num_cpus: int, *, engines_import_tests: bool = False, setup_hook: str | None = None
) -> Iterator[None]:
    """``ray.init`` on this machine for the duration of the ``with``; ``engines_import_tests`` puts the
    checkout on PYTHONPATH so that Ray workers can import ``tests.*`` (e.g. a fault-injecting engine);
    ``setup_hook`` ("module.function") runs in every Ray worker process as it starts."""
    import ray

    saved = os.environ.get("PYTHONPATH")
    if engines_import_tests:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved) if p)
    runtime_env = {"worker_process_setup_hook": setup_hook} if setup_hook else None
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", runtime_env=runtime_env)
    try:
        yield
    finally:
        ray.shutdown()
        if engines_import_tests:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved


def tiny_caption_config(
    model, out, *, frames: int, max_tokens: int, shard_size: int, workers: int = 1, **changes
) -> CaptionConfig:
    """The tiny LLaVA-NeXT on transformers, CPU only, native frame size, a 30 s decode timeout."""
    return CaptionConfig(
        out=str(out),
        model=str(model),
        backend="transformers",
        frames=frames,
        image_size=None,
        sampling=SamplingConfig(max_tokens=max_tokens),
        shard_size=shard_size,
        workers=workers,
        gpus_per_worker=0.0,
        decode_timeout_s=30.0,
        **changes,
    )


def tiny_caption_command(
    annotations, out, model, *, frames: int, max_tokens: int, shard_size: int, options=(), split: str = "test"
) -> list[str]:
    """``python -m pipelines.caption`` over a folder dataset with the settings of :func:`tiny_caption_config`
    (engines, resources and the rest as ``options``)."""
    return [
        sys.executable,
        "-m",
        "pipelines.caption",
        "--dataset",
        "folder",
        "--split",
        split,
        "--annotations",
        str(annotations),
        "--out",
        str(out),
        "--model",
        str(model),
        "--backend",
        "transformers",
        "--frames",
        str(frames),
        "--max-tokens",
        str(max_tokens),
        "--image-size",
        "0",
        "--shard-size",
        str(shard_size),
        "--decode-timeout",
        "30",
        "--no-progress",
        *options,
    ]


def caption_folder(annotations, cfg: CaptionConfig, video_root=None):
    """Caption the folder dataset of ``annotations`` (a JSONL file beside its videos, or the videos under
    ``video_root``: a folder or a URI) with ``cfg``."""
    from captioning.pipeline import run_captioning

    adapter = get_dataset("folder", "test", annotations=annotations, video_root=video_root)
    return run_captioning(
        adapter.items(),
        cfg,
        dataset="folder",
        split="test",
        video_source=adapter.video_source(),
        progress=False,
    )
