"""The caption driver's ceiling: the real ``run_captioning`` (planning, feeding, collection, shard and
manifest writing, progress bar) over many videos, with an engine that answers at once and a decoder that
returns fixed frames (``benchmarks.standins``), so that only the driver costs.

    python -m benchmarks.caption_driver [--videos 100000] [--frames 12] [--shard-size 100]
        [--engines 2] [--videos-per-call 8] [--num-cpus 4] [--profile N]

Prints: frames/s on the wall clock and per second of the driver process's own CPU time (user + system,
Ray's threads in the driver included: the rate the driver would reach with one core to itself), the
driver's resident memory sampled every 0.2 s (at each quarter of the run and its peak: flat means
nothing is held per finished video), the shard count, the manifest's size, and the machine's load
average before and after. ``--profile N`` runs the driver under cProfile and prints its N costliest
functions (cumulative), to say where the time goes.

Then, on the finished output (``--videos`` videos in ``videos / shard-size`` shards), the planning that
``python -m pipelines.caption`` does before Ray starts (``captioning.plan.prepare_run``), in seconds:
the "nothing to do" answer of a re-run, the refusal of a re-run with another prompt, and a resume after
a crash that left 1% of the shards without their stats file (the other shards' checksums verified).
``--plan-only`` writes that finished output directly (the writer, the driver's own provenance; no Ray)
and times only the planning.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from captioning.config import CaptionConfig, SamplingConfig
from shared.datasets import VideoItem

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


class RssSampler(threading.Thread):
    """Samples :func:`rss_bytes` every ``interval`` seconds until stopped."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.samples, self.halt = interval, [], threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append(rss_bytes())
            self.halt.wait(self.interval)

    def stop(self) -> list[int]:
        self.halt.set()
        self.join()
        return self.samples


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stand_in_items(videos: int, root: Path) -> list[VideoItem]:
    """``videos`` items whose files are never opened (the stand-in decoder ignores the path)."""
    return [
        VideoItem(f"v{i:07d}", root / f"v{i:07d}.mp4", None, None, "", "test", f"v{i:07d}_0", True)
        for i in range(videos)
    ]


def planning_seconds(items: list[VideoItem], cfg: CaptionConfig) -> dict[str, float]:
    """Seconds of ``prepare_run`` on a finished output: nothing to do, refused, resume (see the docstring)."""
    from dataclasses import replace

    from captioning.plan import RunRefusedError, prepare_run
    from shared.shards.layout import STATS_DIR

    timings = {}
    started = time.perf_counter()
    plan = prepare_run(items, cfg, dataset="bench", split="test")
    timings["nothing to do"] = time.perf_counter() - started
    if not plan.nothing_to_do:
        sys.exit(f"the finished run has work left: {plan.format()}")
    started = time.perf_counter()
    try:
        prepare_run(
            items, replace(cfg, prompt="Describe this frame in three words."), dataset="bench", split="test"
        )
        sys.exit("a run with another prompt was not refused")
    except RunRefusedError:
        timings["refused (another prompt)"] = time.perf_counter() - started
    stats = sorted((Path(cfg.out) / STATS_DIR).iterdir())
    count = max(len(stats) // 100, 1)  # 1% of the shards, spread over the split
    lost = stats[:: len(stats) // count][:count]
    for path in lost:
        path.unlink()
    started = time.perf_counter()
    plan = prepare_run(items, cfg, dataset="bench", split="test")
    timings[f"resume ({len(plan.work)} shards to redo, {plan.shards_done} verified)"] = (
        time.perf_counter() - started
    )
    if len(plan.work) != len(lost):
        sys.exit(f"resume planned {len(plan.work)} shards, {len(lost)} lost their stats file")
    return timings


def write_finished_output(items: list[VideoItem], cfg: CaptionConfig) -> None:
    """The output a finished run of ``cfg`` leaves (same provenance as ``run_captioning`` records with these
    settings on a cluster without GPUs), written without Ray: the rows of ``shared.shards.example``."""
    from captioning.models import resolve_model
    from captioning.pipeline import engine_spec, shards_provenance
    from captioning.plan import shard_videos
    from captioning.prompts import resolve_prompt
    from shared.shards import write_manifest, write_shard
    from shared.shards.example import example_rows

    resolved, prompt = resolve_model(cfg.model, cfg.revision), resolve_prompt(cfg.prompt)
    spec = engine_spec(cfg, cfg.backend, resolved, prompt.text, 0.0)
    shards = shard_videos(items, cfg.shard_size)
    provenance = shards_provenance(
        cfg, spec, resolved, prompt, shards, dataset="bench", split="test", video_source={}
    )
    for index, videos in enumerate(shards):
        rows = example_rows([v.video_id for v in videos], cfg.frames, dataset="bench", split="test")
        write_shard(cfg.out, "test", index, len(shards), rows, provenance)
    write_manifest(cfg.out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=100_000)
    p.add_argument("--frames", type=int, default=12, help="frames per video F")
    p.add_argument("--shard-size", type=int, default=100, help="videos per shard (100k / 100 = 1,000 shards)")
    p.add_argument("--engines", type=int, default=2, help="stand-in engine actors")
    p.add_argument(
        "--videos-per-call", type=int, default=8, help="videos per engine call (vLLM's default: 8)"
    )
    p.add_argument("--num-cpus", type=int, default=4, help="local Ray CPUs (engines take one each)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the driver's N costliest calls")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is part of the driver)")
    p.add_argument(
        "--plan-only", action="store_true", help="only the planning figures (output written directly)"
    )
    args = p.parse_args(argv)

    import ray

    from captioning.pipeline import run_captioning
    from captioning.tiny_model import save_tiny_llava_next

    with tempfile.TemporaryDirectory(prefix="discovla-driver-bench-") as tmp:
        root = Path(tmp)
        model = save_tiny_llava_next(root / "tiny-llava")
        items = stand_in_items(args.videos, root / "videos")
        cfg = CaptionConfig(
            out=str(root / "captions"),
            model=str(model),
            backend="benchmarks.standins:InstantEngine",
            frames=args.frames,
            image_size=None,
            sampling=SamplingConfig(max_tokens=8),
            shard_size=args.shard_size,
            workers=args.engines,
            gpus_per_worker=0.0,
            videos_per_call=args.videos_per_call,
        )
        if args.plan_only:
            started = time.perf_counter()
            write_finished_output(items, cfg)
            written = time.perf_counter() - started
            planning = planning_seconds(items, cfg)
            print(
                f"planning before Ray ({args.videos} videos, {-(-args.videos // args.shard_size)} shards, "
                f"written in {written:.0f} s): "
                + "; ".join(f"{what} {seconds:.2f} s" for what, seconds in planning.items())
                + f" (load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])})"
            )
            return
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
        ray.init(
            num_cpus=args.num_cpus,
            include_dashboard=False,
            logging_level="ERROR",
            runtime_env={"worker_process_setup_hook": "benchmarks.standins.fixed_frames"},
        )
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        profiler = cProfile.Profile() if args.profile else None
        sampler = RssSampler()
        rss_start = rss_bytes()
        sampler.start()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        if profiler:
            profiler.enable()
        summary = run_captioning(items, cfg, dataset="bench", split="test", progress=not args.no_progress)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        samples = sampler.stop()
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        ray.shutdown()
        planning = planning_seconds(items, cfg)
        manifest = Path(cfg.out) / "manifest.json"
        frames = summary.frames
        if frames != args.videos * args.frames or summary.videos_failed:
            sys.exit(f"the driver lost work: {frames} frames, {summary.videos_failed} failed videos")
        mib = 1 << 20
        quarters = [samples[min(len(samples) - 1, len(samples) * q // 4)] / mib for q in (1, 2, 3, 4)]
        print(
            f"{args.videos} videos x {args.frames} frames = {frames} frames, {summary.shards_written} shards "
            f"of {args.shard_size}, {args.engines} instant engines, {args.videos_per_call} videos per call, "
            f"{args.num_cpus} Ray CPUs"
        )
        print(
            f"driver: {frames / wall:,.0f} frames/s on the wall clock ({wall:.1f} s, engines' start-up "
            f"included), {frames / summary.caption_seconds:,.0f} once the engines were up; "
            f"{frames / cpu:,.0f} frames per driver CPU-second ({cpu:.1f} s CPU)"
        )
        print(
            f"driver RSS: {rss_start / mib:.0f} MiB before; at each quarter of the run "
            f"{', '.join(f'{q:.0f}' for q in quarters)} MiB; peak {max(samples) / mib:.0f} MiB "
            f"({len(samples)} samples)"
        )
        print(f"manifest: {manifest.stat().st_size / 1024:.0f} KiB for {summary.shards_written} shards")
        print(f"load average before: {' '.join(load_before)}; after: {' '.join(load_after)}")
        print(
            f"planning before Ray ({args.videos} videos, {summary.shards_total} shards): "
            + "; ".join(f"{what} {seconds:.2f} s" for what, seconds in planning.items())
            + f" (load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])})"
        )
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
