"""Video search speed: ANN recall and latency against exact search, and index build throughput.

    python benchmarks/search.py                       # 100k vectors (faiss IVF vs usearch HNSW) + 1M (faiss)
    python benchmarks/search.py --n 100000 --large 0 --backends faiss
    python benchmarks/search.py --build-videos 32     # index build videos/s next to decode videos/s only

1. ANN: ``--n`` synthetic L2-normalised ``--dim``-dimensional embeddings shaped like window embeddings of a
   video collection: ``--topics`` topic centres, each video a centre plus noise of relative norm
   ``--video-noise``, each of its ``--windows`` windows the video plus ``--window-noise``; ``--queries``
   queries, each a random video plus ``--query-noise``. For each of ``--backends`` (usearch needs the
   ``search-usearch`` extra): build time (``--build-threads``), recall@10 against exact search (the
   fraction of the exact top 10 found) and single-query latency (median and p95, one thread per query as
   a search server answers); ``--nprobe`` overrides faiss's cells per query. ``--large N`` repeats faiss
   at N vectors (the 50 ms budget is for 1M windows).
2. Build throughput: ``--build-videos`` generated videos (``--seconds`` long, ``--size`` pixels wide,
   ``--frames`` frames each) indexed by ``search.build_index`` with ``--backbone`` (the tiny test backbone by
   default, random weights) in batches of ``--batch-size``, next to decoding the same frames with
   ``shared.frames.sample_frames`` alone.
Figures depend on the machine and on what else runs on it; the script prints them, nothing more.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.ann import ANN_CLASSES, exact_search, top_k  # noqa: E402


def synthetic(n: int, dim: int, args, seed: int, queries: int = 0) -> np.ndarray:
    """Unit vectors shaped like window embeddings of a video collection (module docstring).

    ``args.topics`` topic centres; videos = topic + noise ``args.video_noise``; each video's
    ``args.windows`` windows = video + noise ``args.window_noise`` (neighbouring windows look alike).
    With ``queries`` > 0: that many queries, each a random video + noise ``args.query_noise``.
    """
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((args.topics, dim), dtype=np.float32)
    n_videos = max(1, n // args.windows)

    def jitter(base: np.ndarray, scale: float) -> np.ndarray:
        out = base + rng.standard_normal(base.shape, dtype=np.float32) * (scale / np.sqrt(dim))
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    videos = jitter(topics[rng.integers(0, args.topics, n_videos)], args.video_noise)
    if queries:
        return jitter(videos[rng.integers(0, n_videos, queries)], args.query_noise)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # in blocks: 1M x 512 floats is 2 GB already
        stop = min(start + 100_000, n)
        out[start:stop] = jitter(videos[np.arange(start, stop) // args.windows % n_videos], args.window_noise)
    return out


def exact_top(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The exact top ``k`` of every query (one matrix product for all of them)."""
    scores = queries @ data.T  # [Q, N]
    return np.stack([top_k(row, k) for row in scores])


def latency_ms(fn, queries: np.ndarray) -> tuple[float, float, float]:
    """Median and p95 wall milliseconds per query, and CPU milliseconds per query (less sensitive to load)."""
    times = []
    cpu = time.process_time()
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1e3)
    cpu_ms = (time.process_time() - cpu) * 1e3 / len(queries)
    return float(np.median(times)), float(np.percentile(times, 95)), cpu_ms


def bench_ann(n: int, dim: int, backends: list[str], args) -> None:
    import faiss

    data = synthetic(n, dim, args, seed=0)
    queries = synthetic(n, dim, args, seed=0, queries=args.queries)  # the same topics and videos
    truth = exact_top(data, queries, 10)
    print(
        f"\n{n:,} vectors x {dim} ({args.topics} topics, {args.windows} windows per video, noise video "
        f"{args.video_noise} / window {args.window_noise} / query {args.query_noise}); {len(queries)} queries, "
        "one thread per query"
    )
    print(f"  {'search':<18}{'build s':>9}{'recall@10':>11}{'median ms':>11}{'p95 ms':>9}{'CPU ms':>8}")
    median, p95, cpu = latency_ms(lambda q: exact_search(data, q, 10), queries[: max(10, len(queries) // 10)])
    print(f"  {'exact (numpy)':<18}{0.0:9.1f}{1.0:11.4f}{median:11.2f}{p95:9.2f}{cpu:8.2f}", flush=True)
    for name in backends:
        faiss.omp_set_num_threads(args.build_threads)
        t = time.perf_counter()
        ann = ANN_CLASSES[name].build(data)
        build_s = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        found = [ann.search(q, 10)[0] for q in queries]
        recall = np.mean(
            [len(set(f.tolist()) & set(g.tolist())) / 10 for f, g in zip(found, truth, strict=True)]
        )
        median, p95, cpu = latency_ms(lambda q, ann=ann: ann.search(q, 10), queries)
        label = {"faiss": "faiss IVF-Flat", "usearch": "usearch HNSW"}[name]
        print(f"  {label:<18}{build_s:9.1f}{recall:11.4f}{median:11.2f}{p95:9.2f}{cpu:8.2f}", flush=True)
        del ann


def bench_build(args) -> None:
    import torch

    from search import build_index
    from shared.frames import sample_frames
    from shared.synthetic import make_test_video
    from training.adapters import save_adapters
    from training.model import DiscoVLAConfig, build_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = tmp / "videos"
        videos.mkdir()
        for i in range(args.build_videos):
            make_test_video(
                videos / f"v{i:04d}.mp4", args.seconds, 25.0, size=(args.size, args.size * 3 // 4), seed=i
            )
        torch.manual_seed(0)
        model = build_model(DiscoVLAConfig(backbone=args.backbone, pretrained=None, num_frames=args.frames))
        adapters = save_adapters(model, tmp / "adapters")
        files = sorted(videos.glob("*.mp4"))
        t = time.perf_counter()
        for f in files:
            sample_frames(f, args.frames)
        decode_s = time.perf_counter() - t
        summary = build_index(
            tmp / "index",
            videos=[videos],
            adapters=adapters,
            pretrained=None,
            batch_size=args.batch_size,
            progress=False,
        )
        print(
            f"\nindex build: {len(files)} videos of {args.seconds:g} s at {args.size}x{args.size * 3 // 4}, "
            f"{args.frames} frames, backbone {args.backbone} (random weights), torch threads {torch.get_num_threads()}"
        )
        print(f"  decode only (sample_frames):  {len(files) / decode_s:7.2f} videos/s")
        print(
            f"  index build (decode + encode + write): {summary.videos_per_s:7.2f} videos/s "
            f"(whole run incl. model load {len(files) / summary.seconds:.2f} videos/s)"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="vectors of the ANN comparison (0: skip)")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (ViT-B: 512)")
    p.add_argument("--queries", type=int, default=200, help="queries per measurement")
    p.add_argument("--topics", type=int, default=1000, help="topic centres of the synthetic embeddings")
    p.add_argument("--windows", type=int, default=20, help="windows per synthetic video")
    p.add_argument(
        "--video-noise", type=float, default=1.0, help="video around its topic (relative noise norm)"
    )
    p.add_argument("--window-noise", type=float, default=0.5, help="window around its video")
    p.add_argument("--query-noise", type=float, default=1.0, help="query around its video")
    p.add_argument("--build-threads", type=int, default=2, help="threads building the ANN indexes")
    p.add_argument(
        "--nprobe", type=int, default=None, help="faiss cells scanned per query (default: search.ann's)"
    )
    p.add_argument(
        "--backends",
        nargs="+",
        default=["faiss", "usearch"],
        choices=sorted(ANN_CLASSES),
        help="ANN libraries to compare (usearch: the search-usearch extra)",
    )
    p.add_argument("--large", type=int, default=1_000_000, help="vectors of the faiss latency run (0: skip)")
    p.add_argument(
        "--build-videos", type=int, default=32, help="videos of the build-throughput run (0: skip)"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="length of those videos")
    p.add_argument("--size", type=int, default=320, help="their width in pixels (4:3)")
    p.add_argument("--frames", type=int, default=12, help="frames per video")
    p.add_argument("--batch-size", type=int, default=16, help="videos per model forward")
    p.add_argument(
        "--backbone", default="DiscoVLA-Tiny", help="open_clip model for the build run (random weights)"
    )
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.nprobe:
        import search.ann

        search.ann.FAISS_NPROBE = args.nprobe
    print(f"CPU cores: {os.cpu_count()}")
    if args.n:
        bench_ann(args.n, args.dim, args.backends, args)
    if args.large:
        bench_ann(args.large, args.dim, ["faiss"], args)
    if args.build_videos:
        bench_build(args)


if __name__ == "__main__":
    main()
