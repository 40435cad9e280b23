"""The caption pipeline's efficiency: end-to-end frames/s against the backend's frames/s alone.

    python -m benchmarks.caption [--videos 8] [--seconds 6] [--size 320x240] [--frames 12]
        [--workers 1,2] [--model DIR] [--backend transformers|vllm] [--max-tokens 16] [--image-size 336]

For each worker count k, with the same engine actors' settings:

- ``backend``: k engine actors (Ray), warmed up on one video, then given the pre-decoded, pre-resized
  frames of every video (already in Ray's object store); frames/s = frames / wall time of the calls.
  This is what the engines alone can do: no decoding, no shard writing.
- ``end-to-end``: ``run_captioning`` on the same videos into a fresh output directory; frames/s =
  frames / time from the first call to the last shard written (engine start-up excluded, as it is
  for ``backend``), after a warm-up run on 4 videos that lets Ray start its decode worker processes.

efficiency = end-to-end / backend; close to 1 means decoding and writing keep up with the engines.
The decoder's own frames/s on one core is printed too: end-to-end cannot beat it times the CPUs left
for decoding (Ray CPUs minus one per CPU engine), whatever the engine's speed.
Without ``--model`` a tiny random LLaVA-NeXT (``captioning.tiny_model``) is built, so the numbers
measure the pipeline's overhead against a very fast engine: the hardest case for it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray

from benchmarks.decode import make_videos
from captioning.config import CaptionConfig, EngineSpec, SamplingConfig
from captioning.pipeline import engine_layout, run_captioning
from captioning.prompts import resolve_prompt
from captioning.workers import DecodeOptions, decode_video, engine_actor
from shared.datasets import VideoItem


def _items(videos) -> list[VideoItem]:
    return [VideoItem(p.stem, p, None, None, "", "test", f"{p.stem}_0", True) for p, _ in videos]


def predecode(cfg: CaptionConfig, items: list[VideoItem]) -> tuple[list, float]:
    """Every video's frames put in Ray's object store, and the decoder's frames/s on one core."""
    options = DecodeOptions(cfg.frames, cfg.image_size, cfg.decode_timeout_s)
    start = time.perf_counter()
    decoded = [decode_video(v.video_id, str(v.path), None, options) for v in items]
    seconds = time.perf_counter() - start
    return [ray.put(d) for d in decoded], len(items) * cfg.frames / seconds


def backend_frames_per_s(cfg: CaptionConfig, decoded: list, workers: int) -> float:
    """k actors captioning pre-decoded frames (see the module docstring)."""
    _, gpus, cpus = engine_layout(cfg, cfg.backend)
    spec = EngineSpec(
        backend=cfg.backend,
        model=cfg.model,
        prompt_text=resolve_prompt(cfg.prompt).text,
        sampling=cfg.sampling,
        dtype="bfloat16" if gpus else "float32",
        batch_size=cfg.batch_size,
        threads=0 if gpus else cfg.cpus_per_worker,
    )
    actors = [engine_actor(spec, cfg.frames, num_cpus=cpus, num_gpus=gpus) for _ in range(workers)]
    try:
        ray.get([a.caption_videos.remote("bench", "test", decoded[0]) for a in actors])  # load + warm up
        start = time.perf_counter()
        calls = [
            actors[i % workers].caption_videos.remote("bench", "test", ref) for i, ref in enumerate(decoded)
        ]
        ray.get(calls)
        return len(decoded) * cfg.frames / (time.perf_counter() - start)
    finally:
        for actor in actors:
            ray.kill(actor)


def end_to_end_frames_per_s(cfg: CaptionConfig, items: list[VideoItem]) -> float:
    # warm-up run on a few videos: Ray starts its decode worker processes (imports) once per session
    run_captioning(
        items[:4], replace(cfg, out=cfg.out + "-warmup"), dataset="bench", split="test", progress=False
    )
    summary = run_captioning(items, cfg, dataset="bench", split="test", progress=False)
    if summary.videos_failed:
        raise RuntimeError(f"benchmark videos failed: {summary.failures}")
    return summary.frames / summary.caption_seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--size", default="320x240")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--model", help="model directory or id (default: a tiny random LLaVA-NeXT)")
    p.add_argument("--backend", default="transformers", choices=("transformers", "vllm"))
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--image-size", type=int, default=336)
    p.add_argument("--num-cpus", type=int, help="local Ray CPUs (default: max(cores, workers + 1))")
    args = p.parse_args(argv)
    counts = [int(k) for k in args.workers.split(",")]
    size = tuple(int(x) for x in args.size.split("x"))
    ray.init(
        num_cpus=args.num_cpus or max(os.cpu_count() or 1, max(counts) + 1),
        include_dashboard=False,
        logging_level="ERROR",
    )
    with tempfile.TemporaryDirectory(prefix="discovla-caption-bench-") as tmp:
        root = Path(tmp)
        if args.model is None:
            from captioning.tiny_model import save_tiny_llava_next

            args.model = str(save_tiny_llava_next(root / "tiny-llava"))
        (root / "videos").mkdir()
        items = _items(make_videos(root / "videos", args.videos, args.seconds, size))
        print(
            f"{args.videos} videos x {args.frames} frames, {args.size}, image size {args.image_size}, "
            f"{args.backend} {args.model}, max_tokens {args.max_tokens}, {ray.cluster_resources().get('CPU')} "
            "Ray CPUs"
        )
        decoded, decode_rate = None, 0.0
        rows = []
        for k in counts:
            cfg = CaptionConfig(
                out=str(root / f"out-{k}"),
                model=args.model,
                backend=args.backend,
                frames=args.frames,
                image_size=args.image_size or None,
                sampling=SamplingConfig(max_tokens=args.max_tokens),
                shard_size=4,
                workers=k,
            )
            if decoded is None:
                decoded, decode_rate = predecode(cfg, items)
            backend = backend_frames_per_s(cfg, decoded, k)
            rows.append((k, backend, end_to_end_frames_per_s(cfg, items)))
        print(f"decoding alone: {decode_rate:.1f} frames/s on one core (sample_frames + resize)")
        print(f"{'workers':>7} {'backend f/s':>12} {'end-to-end f/s':>15} {'efficiency':>10}")
        for k, backend, e2e in rows:
            print(f"{k:>7} {backend:>12.2f} {e2e:>15.2f} {e2e / backend:>10.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
