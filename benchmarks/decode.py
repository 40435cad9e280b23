"""Frames per second of ``shared.frames.sample_frames`` against bare decord on the same indices.

    python -m benchmarks.decode [--videos 3] [--seconds 30] [--size 640x360] [--frames 12] [--repeats 5]

Generates the videos (``shared.synthetic``, plus a seeded moving texture so the encoder has real work
to do), then times, per video and alternating the order on every repeat:

- ``decord``: ``VideoReader(path, ctx=cpu(0), num_threads=k)``, ``sample_indices(len, avg fps)``,
  ``get_batch(indices).asnumpy()``: the least any decord user does for these frames;
- ``sampler``: ``sample_frames(path, F, num_threads=k)``: the same, plus file checks, the deadline
  thread and the output checks.

Both include opening the file (decord reads the whole packet index on open), as every video in a
dataset is opened once. Frames/s = F / median seconds per video; overhead = sampler / decord − 1
(target: under 10 %). On a busy machine the per-video ratios scatter by several per cent either way,
so the last line also times the wrapper's own fixed work alone, which does not depend on the video.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.frames import sample_frames, sample_indices
from shared.synthetic import pattern_frame, write_video


def make_videos(root: Path, count: int, seconds: float, size: tuple[int, int]) -> list[tuple[Path, float]]:
    """``count`` clips at 30, 25 and 29.97 fps in turn, with a moving seeded texture."""
    rates = [30.0, 25.0, 30000 / 1001]
    videos = []
    for seed in range(count):
        fps = rates[seed % len(rates)]
        coarse = np.random.default_rng(seed).integers(-40, 41, size=(size[1] // 8 + 1, size[0] // 8 + 1, 1))
        texture = coarse.repeat(8, axis=0).repeat(8, axis=1)[: size[1], : size[0]]  # 8x8-pixel blotches

        def frames(n=int(round(seconds * fps)), seed=seed, texture=texture):
            for i in range(n):
                moved = np.roll(texture, shift=(i, 2 * i), axis=(0, 1))
                yield (pattern_frame(i, size, seed).astype(np.int16) + moved).clip(0, 255).astype(np.uint8)

        path = write_video(root / f"bench_{seed}.mp4", frames(), fps=fps)
        videos.append((path, fps))
    return videos


def bare_decord(path: Path, num_frames: int, num_threads: int) -> np.ndarray:
    from decord import VideoReader, cpu

    reader = VideoReader(str(path), ctx=cpu(0), num_threads=num_threads)
    indices = sample_indices(len(reader), reader.get_avg_fps(), num_frames)
    return reader.get_batch(indices).asnumpy()


def time_one(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(videos, num_frames: int, repeats: int, num_threads: int) -> list[dict]:
    """Median seconds per video for both ways, after one warm-up call each (page cache, imports)."""
    rows = []
    for path, fps in videos:
        ways = {
            "decord": lambda p=path: bare_decord(p, num_frames, num_threads),
            "sampler": lambda p=path: sample_frames(p, num_frames, num_threads=num_threads),
        }
        assert np.array_equal(ways["decord"](), ways["sampler"]().frames), f"{path}: different frames"
        seconds = {name: [] for name in ways}
        for r in range(repeats):
            for name in sorted(ways, reverse=r % 2 == 1):  # alternate who goes first
                seconds[name].append(time_one(ways[name]))
        median = {name: statistics.median(s) for name, s in seconds.items()}
        rows.append({"video": path.name, "fps": fps, **median})
    return rows


def fixed_cost_ms(path: Path, calls: int = 2000) -> float:
    """The wrapper's own per-video work without decoding: deadline thread + file checks (ms)."""
    from shared.decoder import _check_file, run_with_deadline

    start = time.perf_counter()
    for _ in range(calls):
        run_with_deadline(lambda: _check_file(str(path)), 60.0, path)
    return 1000 * (time.perf_counter() - start) / calls


def print_table(rows: list[dict], num_frames: int) -> None:
    print(f"{'video':<14} {'fps':>6} {'decord f/s':>11} {'sampler f/s':>12} {'ratio':>7} {'overhead':>9}")
    for row in rows:
        ratio = row["sampler"] / row["decord"]
        print(
            f"{row['video']:<14} {row['fps']:>6.2f} {num_frames / row['decord']:>11.1f} "
            f"{num_frames / row['sampler']:>12.1f} {ratio:>7.3f} {100 * (ratio - 1):>8.1f}%"
        )
    total_decord = sum(r["decord"] for r in rows)
    total_sampler = sum(r["sampler"] for r in rows)
    n = num_frames * len(rows)
    print(
        f"{'all':<14} {'':>6} {n / total_decord:>11.1f} {n / total_sampler:>12.1f} "
        f"{total_sampler / total_decord:>7.3f} {100 * (total_sampler / total_decord - 1):>8.1f}%"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT, both even")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="decord num_threads for both ways")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="discovla-bench-") as tmp:
        start = time.perf_counter()
        videos = make_videos(Path(tmp), args.videos, args.seconds, size)
        print(
            f"generated {len(videos)} videos of {args.seconds:g} s at {args.size} in {time.perf_counter() - start:.1f} s"
        )
        print(
            f"F = {args.frames}, decord num_threads = {args.threads}, median of {args.repeats} runs per video"
        )
        rows = run(videos, args.frames, args.repeats, args.threads)
        print_table(rows, args.frames)
        fixed = fixed_cost_ms(videos[0][0])
        decord_ms = 1000 * statistics.median(r["decord"] for r in rows)
        print(
            f"wrapper's fixed cost (deadline thread + file checks): {fixed:.3f} ms per video "
            f"= {100 * fixed / decord_ms:.2f} % of bare decord's median {decord_ms:.0f} ms"
        )


if __name__ == "__main__":
    main()
