"""How fast caption sets are written, checked and loaded: rows per second for ~1-2 million rows.

    python -m benchmarks.shards [--videos 100000] [--frames 12] [--shards 16] [--repeats 3] [--root DIR]

Writes a generated caption set (``shared.shards.example``: captions of realistic length), then times
``load_caption_set`` (read + sha256 + schema/value checks + duplicate/position group-by + the
video_id -> F captions dict) with and without checksum verification, ``completed_shards`` and
``validate_caption_set``. Prints one line per step and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from shared.frames import SamplerConfig
from shared.shards import completed_shards, load_caption_set, write_manifest, write_shard
from shared.shards.example import example_provenance, example_rows
from shared.shards.validate import validate_caption_set


def _best(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(root: Path, videos: int, frames: int, shards: int, repeats: int) -> dict:
    ids = [f"video{i:07d}" for i in range(videos)]
    rows = videos * frames
    prov = example_provenance(frames)
    start = time.perf_counter()
    for index in range(shards):
        table = example_rows(
            ids[index::shards], frames, split="train", failed=ids[index::shards][:2], seed=index
        )
        write_shard(root, "train", index, shards, table, prov)
    write_manifest(root, verify=False)
    write_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (root / "data").iterdir())
    expect = SamplerConfig(frames).provenance()
    results = {
        "rows": rows,
        "videos": videos,
        "frames": frames,
        "shards": shards,
        "bytes": size,
        "generate_and_write_s": write_s,
    }
    steps = {
        "load_caption_set": lambda: load_caption_set(root, expect_sampler=expect, num_frames=frames),
        "load_caption_set_no_verify": lambda: load_caption_set(root, num_frames=frames, verify=False),
        "completed_shards": lambda: completed_shards(root, "train"),
        "validate_caption_set": lambda: validate_caption_set(root, expect_video_ids=ids),
    }
    for name, fn in steps.items():
        seconds, result = _best(fn, repeats)
        results[f"{name}_s"] = seconds
        results[f"{name}_rows_per_s"] = rows / seconds
        print(f"{name:28s} {seconds:7.2f} s  {rows / seconds:12,.0f} rows/s")
        if name == "load_caption_set":
            assert len(result.captions) == videos - 2 * shards, "unexpected number of loaded videos"
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, help="where to write the set (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.root is not None:
        results = run(args.root, args.videos, args.frames, args.shards, args.repeats)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = run(Path(tmp), args.videos, args.frames, args.shards, args.repeats)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
