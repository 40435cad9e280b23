"""The trainer's caption lookup: load time and memory of ``load_caption_set`` (captions kept in Arrow,
``shared.shards.caption_table.CaptionTable``) on a generated caption set of N videos x F frames.

    python -m benchmarks.caption_lookup [--videos 20000] [--frames 64] [--shards 100] [--words 30]

The set is written with the real shard writer (captions of ``--words`` random words, about 6 characters
each, as long as LLaVA-NeXT's one-sentence captions). Each measure runs in a fresh process so that its
peak resident memory is its own:

- ``arrow``: the in-memory Arrow size of the set (``read_caption_rows(...).table.nbytes``, all columns);
- ``load``: seconds of ``load_caption_set``, the process's peak RSS minus its RSS before loading (the
  loader's peak), the RSS it keeps afterwards, the bytes of the two Arrow arrays kept, and the mean time
  of one lookup (one video's F captions as Python strings).

Ranks on one node each load their own copy (no shared memory): a node of 8 ranks holds 8 x the kept size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
_VOCAB = np.array(
    "a the person man woman child dog car ball table kitchen street field room wall light hand "
    "walks runs sits stands holds opens cuts throws jumps talks smiles looks turns picks moves "
    "red blue green small large wooden bright dark slowly quickly near behind under front while "
    "camera shows scene frame background foreground close wide view".split()
)


def write_set(root: Path, videos: int, frames: int, shards: int, words: int) -> None:
    """``videos`` ids over ``shards`` shards with the real writer; captions of ``words`` random words."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from shared.shards import write_manifest, write_shard
    from shared.shards.example import example_provenance, example_rows

    ids = [f"vid{i:07d}" for i in range(videos)]
    rng = np.random.default_rng(0)
    provenance = example_provenance(frames, dataset="bench")
    per = -(-videos // shards)
    for index in range(shards):
        rows = example_rows(ids[index * per : (index + 1) * per], frames, dataset="bench", split="train")
        parts = [pa.array(_VOCAB[rng.integers(0, len(_VOCAB), len(rows))]) for _ in range(words)]
        caption = pc.binary_join_element_wise(*parts, " ")
        rows = rows.set_column(rows.schema.get_field_index("caption"), "caption", caption)
        write_shard(root, "train", index, shards, rows, provenance)
    write_manifest(root)


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure(root: str, what: str) -> dict:
    """One measure in this process (run by :func:`in_fresh_process`)."""
    import pyarrow as pa

    from shared.shards import load_caption_set
    from shared.shards.example import write_example_set
    from shared.shards.reader import read_caption_rows

    with tempfile.TemporaryDirectory() as warm:  # the modules a load imports (pandas, ...) count before
        write_example_set(warm, ["a", "b"], 2)
        load_caption_set(warm)
    pa.default_memory_pool().release_unused()
    before = rss()
    if what == "arrow":
        table = read_caption_rows(root).table
        return {"arrow_bytes": table.nbytes, "rows": len(table)}
    started = time.perf_counter()
    cs = load_caption_set(root)
    seconds = time.perf_counter() - started
    peak = peak_rss()
    ids = list(cs.captions)
    rng = np.random.default_rng(1)
    probe = [ids[i] for i in rng.integers(0, len(ids), 2000)]
    started = time.perf_counter()
    for vid in probe:
        cs.captions[vid]
    lookup = (time.perf_counter() - started) / len(probe)
    del ids, probe
    pa.default_memory_pool().release_unused()
    return {
        "seconds": seconds,
        "peak_bytes": peak - before,
        "kept_rss_bytes": rss() - before,
        "kept_arrow_bytes": cs.captions.nbytes,
        "videos": len(cs.captions),
        "lookup_us": lookup * 1e6,
    }


def in_fresh_process(root: Path, what: str) -> dict:
    code = f"import json; from benchmarks.caption_lookup import measure; print(json.dumps(measure({str(root)!r}, {what!r})))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False, timeout=3600
    )
    if out.returncode:
        raise RuntimeError(f"measure {what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=20_000)
    p.add_argument("--frames", type=int, default=64, help="captions per video F")
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--words", type=int, default=30, help="words per caption")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="discovla-lookup-bench-") as tmp:
        root = Path(tmp) / "set"
        started = time.perf_counter()
        write_set(root, args.videos, args.frames, args.shards, args.words)
        written = time.perf_counter() - started
        parquet = sum(f.stat().st_size for f in (root / "data").iterdir())
        arrow = in_fresh_process(root, "arrow")
        load = in_fresh_process(root, "load")
    print(
        f"{args.videos} videos x {args.frames} captions ({arrow['rows']:,} rows, {args.words} words each), "
        f"{args.shards} shards, {parquet / MIB:.0f} MiB of Parquet (written in {written:.0f} s)"
    )
    print(f"in-memory Arrow size of the set (all columns): {arrow['arrow_bytes'] / MIB:.0f} MiB")
    print(
        f"load_caption_set: {load['seconds']:.1f} s, peak {load['peak_bytes'] / MIB:.0f} MiB above the "
        f"process before loading ({load['peak_bytes'] / arrow['arrow_bytes']:.2f}x the Arrow size); keeps "
        f"{load['kept_rss_bytes'] / MIB:.0f} MiB RSS, {load['kept_arrow_bytes'] / MIB:.0f} MiB in Arrow, for "
        f"{load['videos']} videos; one lookup (F captions as str) {load['lookup_us']:.0f} us"
    )
    print(
        f"ranks on one node: each loads its own copy, 8 ranks keep {8 * load['kept_rss_bytes'] / MIB:.0f} MiB "
        f"and peak at {8 * load['peak_bytes'] / MIB:.0f} MiB if they load at once"
    )
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
