"""Videos/s that the training data pipeline delivers from video files versus from a frame store.

    python -m benchmarks.data [--shapes msrvtt activitynet] [--workers 1 2 all] [--batch-size 4]
                              [--items 24 8] [--distinct 4 2] [--cache DIR]

Generates videos shaped like the benchmarks (``benchmarks.decode.make_videos``: the synthetic pattern
plus a moving texture, 30/25/29.97 fps, H.264 CRF 18; cached under --cache):

- ``msrvtt``: 320x240, 15 s; the msrvtt preset decodes at full size, so its store is at short side 224;
- ``activitynet``: 1280x720, 2 min; the activitynet preset decodes at short side 256, its store too.

``--demo`` instead compares retrieval metrics on the embedded demo (60 test videos): zero-shot CLIP and
the full method trained ``--demo-seeds`` times (6 epochs each), once decoding the videos and once
reading a JPEG frame store, everything else equal.

``--items`` training items (distinct video ids) cycle over ``--distinct`` files per shape. The pipeline is
the trainer's own: ``training.data.RetrievalDataset`` (RandAugment, 224x224 crop, ViT-B/32 tokenizer, F=12)
in a DataLoader with ``EpochBatchSampler``, one epoch per configuration, video and store runs alternating.
videos/s = items / seconds for the epoch, worker start-up included. Also printed: the time to build
the store and its size per 1,000 videos. On a machine shared with other work the figures are noisy;
the ratio of the two paths measured side by side is the number to read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

SHAPES = {  # name -> (size, seconds, decode short side of the preset, store short side)
    "msrvtt": ((320, 240), 15.0, None, 224),
    "activitynet": ((1280, 720), 120.0, 256, 256),
}


def cached_videos(cache: Path, shape: str, distinct: int) -> list[Path]:
    """``distinct`` videos of ``shape`` under ``cache/shape`` (generated once)."""
    from benchmarks.decode import make_videos

    size, seconds, _, _ = SHAPES[shape]
    root = cache / f"{shape}-{size[0]}x{size[1]}-{seconds:g}s"
    paths = [root / f"bench_{seed}.mp4" for seed in range(distinct)]
    if not all(p.is_file() for p in paths):
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(
            f"generating {distinct} {shape}-like videos ({size[0]}x{size[1]}, {seconds:g} s) in {root} ...",
            flush=True,
        )
        make_videos(root, distinct, seconds, size)
        print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    return paths


def epoch_seconds(dataset, batch_size: int, workers: int) -> float:
    from training.data import EpochBatchSampler, make_loader

    sampler = EpochBatchSampler(len(dataset), batch_size, seed=0, epoch=0)
    started = time.perf_counter()
    for batch in make_loader(dataset, sampler, num_workers=workers):
        assert batch["frames"].shape[1:] == (12, 3, 224, 224)
    return time.perf_counter() - started


def run_shape(shape: str, args, workers: list[int]) -> list[str]:
    from shared.datasets import VideoItem
    from shared.framestore import Codec, FrameStore, build_frame_store
    from training.augment import TRAIN_RANDAUGMENT, VideoTransform
    from training.data import RetrievalDataset, clip_tokenizer

    _, _, decode_short, store_short = SHAPES[shape]
    n_items, distinct = args.items[list(SHAPES).index(shape)], args.distinct[list(SHAPES).index(shape)]
    files = cached_videos(Path(args.cache), shape, distinct)
    items = [
        VideoItem(
            f"{shape}{k:05d}", files[k % distinct], None, None, "a video", "train", f"{shape}{k:05d}_0", True
        )
        for k in range(n_items)
    ]
    store_dir = Path(tempfile.mkdtemp(prefix=f"framestore-{shape}-"))
    try:
        started = time.perf_counter()
        summary = build_frame_store(
            items,
            store_dir,
            dataset="folder",
            split="train",
            num_frames=12,
            short_side=store_short,
            codec=Codec(args.codec, args.quality),
            shard_size=100,
            num_workers=max(workers),
            progress=False,
        )
        build_s = time.perf_counter() - started
        store = FrameStore(store_dir, short_side=store_short)
        transform = VideoTransform(224, randaugment=TRAIN_RANDAUGMENT)
        tokenizer = clip_tokenizer("ViT-B-32", 32)
        sources = {
            "video": RetrievalDataset(
                items,
                num_frames=12,
                transform=transform,
                tokenizer=tokenizer,
                normalize=False,
                decode_short_side=decode_short,
            ),
            "store": RetrievalDataset(
                items,
                num_frames=12,
                transform=transform,
                tokenizer=tokenizer,
                normalize=False,
                frame_store=store,
            ),
        }
        per_1k_gb = summary.bytes_written / n_items * 1000 / 1e9
        lines = [
            f"{shape}: {n_items} items over {distinct} files, store short side {store_short} "
            f"({args.codec}), built at {n_items / build_s:.2f} videos/s with {max(workers)} processes, "
            f"{per_1k_gb:.2f} GB per 1,000 videos"
        ]
        for w in workers:
            rates = {}
            order = ("video", "store") if w % 2 else ("store", "video")  # alternate which goes first
            for name in order:
                rates[name] = n_items / epoch_seconds(sources[name], args.batch_size, w)
            lines.append(
                f"| {shape} | {w} | {rates['video']:.2f} | {rates['store']:.2f} | "
                f"{rates['store'] / rates['video']:.1f}x |"
            )
            print(lines[-1], flush=True)
        return lines
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


def demo_comparison(args) -> None:
    """Demo retrieval metrics from decoded videos vs from a frame store (same data, model and seed)."""
    import json

    from demo.steps import ABLATIONS, import_reference_captions, run_command, train_args
    from shared import demo_videos
    from shared.datasets import get_dataset
    from shared.framestore import Codec, build_frame_store
    from training.evaluate import run_evaluation
    from training.pretrain_demo_clip import BACKBONE, ensure_demo_clip

    data, clip = demo_videos.ensure_demo_data(), ensure_demo_clip(progress=False)
    out = Path(tempfile.mkdtemp(prefix="framestore-demo-"))
    store = out / "frames"
    for split in ("train", "test"):
        items = get_dataset("demo", split, annotations=str(data)).items()
        build_frame_store(
            items,
            store,
            dataset="demo",
            split=split,
            num_frames=demo_videos.NUM_FRAMES,
            short_side=demo_videos.SIZE,
            codec=Codec(args.codec, args.quality),
            progress=False,
        )
    captions = import_reference_captions(data, out, quiet=True)
    keys = [("t2v", "R1"), ("t2v", "R5"), ("t2v", "MnR"), ("v2t", "R1"), ("v2t", "MnR")]
    rows = []
    for source, frame_store in (("video files", None), ("frame store", store)):
        metrics = run_evaluation(
            out / f"zero-shot-{source[0]}",
            dataset="demo",
            split="test",
            annotations=str(data),
            adapters=None,
            backbone=BACKBONE,
            pretrained=str(clip),
            frames=4,
            words=16,
            frame_store=frame_store,
            progress=False,
            cache_dir=None,
        )
        rows.append(("zero-shot CLIP", source, [metrics[d][k] for d, k in keys]))
        for seed in range(args.demo_seeds):
            run_dir = out / f"train-{source[0]}-{seed}"
            extra = ["--set", f"frame_store={store}"] if frame_store else []
            run_command(
                *train_args(
                    data, clip, captions, run_dir, list(ABLATIONS.values())[-1], True, seed, eval_split="test"
                ),
                *extra,
                quiet=True,
            )
            metrics = json.loads((run_dir / "adapters" / "last.json").read_text())["metrics"]
            rows.append((f"DiscoVLA, seed {seed}", source, [metrics[d][k] for d, k in keys]))
    print(f"\ndemo test split (60 videos), frames from video files vs a {args.codec} frame store:")
    print(
        "| model | frames from | t2v R@1 | t2v R@5 | t2v MnR | v2t R@1 | v2t MnR |\n|---|---|---:|---:|---:|---:|---:|"
    )
    for name, source, values in rows:
        print(f"| {name} | {source} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES), help="video shapes"
    )
    parser.add_argument(
        "--workers",
        nargs="+",
        default=["1", "2", "all"],
        help="DataLoader worker counts; 'all' = every CPU (default: 1 2 all)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="videos per batch (default: 4)")
    parser.add_argument(
        "--items",
        type=int,
        nargs=2,
        default=[24, 8],
        metavar=("MSRVTT", "ACTIVITYNET"),
        help="training items per shape (default: 24 8)",
    )
    parser.add_argument(
        "--distinct",
        type=int,
        nargs=2,
        default=[4, 2],
        metavar=("MSRVTT", "ACTIVITYNET"),
        help="distinct generated files per shape (default: 4 2)",
    )
    parser.add_argument("--codec", default="jpeg", help="store codec (default: jpeg)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    parser.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "discovla-bench-videos"),
        help="where generated videos are kept between runs",
    )
    parser.add_argument("--demo", action="store_true", help="compare demo retrieval metrics instead of speed")
    parser.add_argument(
        "--demo-seeds", type=int, default=1, help="--demo: trainings per frame source (default: 1)"
    )
    args = parser.parse_args(argv)
    if args.demo:
        demo_comparison(args)
        return
    cpus = os.cpu_count() or 1
    workers = sorted({cpus if w == "all" else int(w) for w in args.workers})
    import torch

    torch.set_num_threads(1)  # the DataLoader workers do the work; keep the main process from competing
    table = []
    for shape in args.shapes:
        table += run_shape(shape, args, workers)
    print(f"\nvideos/s delivered to the model ({cpus} CPUs, batch {args.batch_size}, F=12, RandAugment on):")
    print(
        "| shape | workers | from video files | from the frame store | speed-up |\n|---|---:|---:|---:|---:|"
    )
    print("\n".join(line for line in table if line.startswith("|")))
    print("\n".join(line for line in table if not line.startswith("|")))


if __name__ == "__main__":
    main()
