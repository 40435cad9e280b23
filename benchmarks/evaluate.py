"""Seconds one evaluation takes per 1,000 test videos, for several numbers of DataLoader workers.

    python -m benchmarks.evaluate [--videos 24] [--seconds 10] [--size 320x240] [--workers 0 1 2 4]
                                  [--backbone ViT-B-32] [--frames 12] [--batch-size 8] [--image-size 224]

Generates ``--videos`` clips (``benchmarks.decode.make_videos``: a moving seeded texture, 30/25/29.97 fps),
one caption each, and runs the whole :func:`training.evaluate.evaluate` (decode F frames per video in the
DataLoader workers, encode texts and videos, similarities, metrics; no feature cache) once per worker
count, on the CPU with random weights of ``--backbone`` (the speed does not depend on the weights). Prints
seconds per evaluation and per 1,000 videos; the decode share shows how much more workers can win. Under
torchrun the same evaluation is split over the ranks (``training.evaluate``), so divide by the ranks.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.decode import make_videos


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=24, help="test videos generated (default: 24)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each video in seconds")
    p.add_argument("--size", type=_size, default=(320, 240), help="video frame size WxH (default: 320x240)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4], help="DataLoader worker counts")
    p.add_argument(
        "--backbone", default="ViT-B-32", help="open_clip model (random weights); DiscoVLA-Tiny: fast"
    )
    p.add_argument("--frames", type=int, default=12, help="frames per video")
    p.add_argument("--batch-size", type=int, default=8, help="videos per model forward")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PIXELS",
        help="short side while decoding (default: as stored)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)

    from shared.datasets import VideoItem
    from training.augment import VideoTransform
    from training.data import RetrievalDataset, clip_tokenizer
    from training.evaluate import evaluate
    from training.model import DiscoVLAConfig, build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        videos = make_videos(Path(tmp), args.videos, args.seconds, args.size)
        print(
            f"{args.videos} videos of {args.seconds:g} s at {args.size[0]}x{args.size[1]} generated in "
            f"{time.perf_counter() - started:.1f} s"
        )
        items = [
            VideoItem(path.name, path, None, None, f"video number {i}", "test", path.name, True)
            for i, (path, _) in enumerate(videos)
        ]
        model = build_model(
            DiscoVLAConfig(backbone=args.backbone, pretrained=None, num_frames=args.frames), "cpu"
        )
        data = RetrievalDataset(
            items,
            num_frames=args.frames,
            tokenizer=clip_tokenizer(args.backbone, 32),
            transform=VideoTransform.from_model(model.preprocess_cfg),
            on_decode_error="blank",
            normalize=False,
            decode_short_side=args.image_size,
        )
        print(
            f"{args.backbone}, {args.frames} frames, batch {args.batch_size}, {torch.get_num_threads()} torch "
            f"threads\n{'workers':>8} {'s/eval':>8} {'s/1000 videos':>14}"
        )
        for workers in args.workers:
            started = time.perf_counter()
            with torch.no_grad():
                evaluate(model, data, batch_size=args.batch_size, num_workers=workers, progress=False)
            seconds = time.perf_counter() - started
            print(f"{workers:>8} {seconds:>8.2f} {1000 * seconds / args.videos:>14.1f}")


if __name__ == "__main__":
    main()
