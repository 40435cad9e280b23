"""Videos from an object store against local files, and what the storage check costs at start-up.

    python -m benchmarks.object_store [--videos 4] [--seconds 15] [--size 640x360] [--frames 12]
        [--repeats 3] [--skip-decode] [--skip-check]

1. **Decode**: generates ``--videos`` clips (``benchmarks.decode.make_videos``), uploads them to an S3 server
   on 127.0.0.1 (moto's server mode, the project's test server) and times ``shared.frames.sample_frames`` on
   each video from the local file and from its ``s3://`` URI, alternating the order on every repeat.
   Prints frames/s of both and their ratio. What the ratio measures: the cost of reading the object through
   pyarrow's S3 client from a server on the same machine (moto is a Python server, far slower than S3 or
   MinIO, and it shares these cores with the decoder), so it is an upper bound on the overhead of the object
   path itself, not a prediction of S3 throughput, which depends on the network.
2. **Storage check**: a 3-node Ray cluster on 127.0.0.1 (a head and two worker nodes with private disks,
   ``tests.ray_cluster``), and :class:`shared.storage_check.StorageCheck` with one S3 output and one S3 input:
   ``on_driver`` and ``on_cluster`` seconds for the first check of a new driver (cold: Ray starts a worker
   process for the new job on each node) and the median of the next five (warm), beside the anchor: a no-op
   Ray task on every node, first of its own new driver (what any Ray job pays before its first task runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def bench_decode(s3, videos: int, seconds: float, size: tuple[int, int], frames: int, repeats: int) -> None:
    import numpy as np

    from benchmarks.decode import make_videos
    from shared.frames import sample_frames

    with tempfile.TemporaryDirectory() as tmp:
        clips = make_videos(Path(tmp), videos, seconds, size)
        s3.make_bucket("bench")
        s3.upload_dir(tmp, "bench", "videos")
        pairs = [(str(path), s3.uri("bench", f"videos/{path.name}")) for path, _ in clips]
        for local, remote in pairs:  # same frames both ways, once, before timing
            a, b = sample_frames(local, frames).frames, sample_frames(remote, frames).frames
            assert np.array_equal(a, b), f"{remote}: frames differ from the local file"
        times: dict[str, list[float]] = {"local": [], "s3": []}
        for r in range(repeats):
            for local, remote in pairs:
                order = [("local", local), ("s3", remote)]
                for kind, source in order if r % 2 == 0 else order[::-1]:
                    started = time.perf_counter()
                    sample_frames(source, frames)
                    times[kind].append(time.perf_counter() - started)
        size_mb = sum(Path(p).stat().st_size for p, _ in pairs) / len(pairs) / 1e6
    rate = {k: frames / statistics.median(v) for k, v in times.items()}
    print(
        f"decode, {videos} videos of {seconds:.0f} s at {size[0]}x{size[1]} ({size_mb:.1f} MB each), "
        f"{frames} frames, median of {len(times['local'])} decodes each (load {_load()}):"
    )
    print(f"  local files  {rate['local']:7.1f} frames/s")
    print(f"  s3 (moto)    {rate['s3']:7.1f} frames/s   ratio s3/local {rate['s3'] / rate['local']:.2f}")


def bench_check(s3) -> None:
    sys.path.insert(0, str(REPO))
    from shared.storage_check import StorageCheck
    from tests.ray_cluster import LocalRayCluster, private_disks_supported

    why_not = private_disks_supported()
    s3.make_bucket("check")
    s3.client().put_object(Bucket="check", Key="videos/v.mp4", Body=b"\0" * 4096)
    with LocalRayCluster(head_cpus=0) as cluster:
        for _ in range(2):
            cluster.add_node(num_cpus=1, private_disk=why_not is None)
        with cluster.connect() as ray:  # the anchor: a no-op task on every node, first of a new driver
            nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
            started = time.perf_counter()
            ray.get([_noop_on(ray, node) for node in nodes])
            bare = time.perf_counter() - started
        with cluster.connect():
            runs = []
            for _ in range(6):
                check = StorageCheck(
                    outputs=[s3.uri("check", "out")], inputs=[s3.uri("check", "videos/v.mp4")]
                )
                started = time.perf_counter()
                check.on_driver().on_cluster()
                runs.append((time.perf_counter() - started, check.seconds))
    cold, warm = runs[0], runs[1:]
    print(
        f"storage check, 3-node cluster ({'private disks' if why_not is None else why_not}), load {_load()}:"
    )
    print(
        f"  first check  {cold[0]:.2f} s (driver {cold[1]['driver']:.2f} s, nodes {cold[1]['cluster']:.2f} s)"
    )
    print(f"  anchor: a no-op Ray task on every node, first of a new driver: {bare:.2f} s")
    print(
        f"  next five    median {statistics.median(t for t, _ in warm):.2f} s "
        f"(max {max(t for t, _ in warm):.2f} s)"
    )


def _noop_on(ray, node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return ray.remote(num_cpus=0)(_noop).options(scheduling_strategy=strategy).remote()


def _noop() -> None:
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--size", default="640x360")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--skip-check", action="store_true")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    sys.path.insert(0, str(REPO))
    from tests.s3_server import S3Server

    with S3Server() as s3:
        os.environ.update(s3.env({}))
        if not args.skip_decode:
            bench_decode(s3, args.videos, args.seconds, (width, height), args.frames, args.repeats)
        if not args.skip_check:
            bench_check(s3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
