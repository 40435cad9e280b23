"""Text-video retrieval evaluation of DiscoVLA adapters, or of zero-shot CLIP, on a benchmark split.

    python -m pipelines.evaluate --dataset msrvtt --split test --adapters runs/msrvtt/adapters/best --out eval/
    python -m pipelines.evaluate --dataset msrvtt --adapters none --out eval/zero-shot      # CLIP baseline

Prints the recall table (text-to-video and video-to-text R@1/5/10, MdR, MnR; CLIP4Clip definitions) and
writes ``metrics.json``, ``recall_table.md``, ``recall_table.html`` and ``recall_table.png`` into --out.
With --adapters DIR the folder's adapter_config.json supplies backbone, pretrained and frames (the options
override it); --adapters none evaluates frozen CLIP through the same code. --dsl adds dual-softmax
re-scored numbers, labelled separately (they use test-set statistics). Features are cached in
<out>/feature_cache (--cache-dir none to turn off): a second run with the same adapters is instant.
--pretrained none builds random weights (offline smoke runs). Exit status 2 on a bad argument or file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _none(value: str) -> str | None:
    return None if value.lower() in ("none", "null", "") else value


def parse_args(argv=None) -> argparse.Namespace:
    from shared.datasets import list_datasets

    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=list_datasets())
    parser.add_argument("--split", default="test", help="annotation split (default: test)")
    parser.add_argument("--annotations", default=None, help="annotation file/folder (default: the dataset's)")
    parser.add_argument("--video-root", default=None, help="video folder (default: the dataset's)")
    parser.add_argument("--adapters", required=True, type=_none, metavar="DIR|none",
                        help="adapter folder (adapters.safetensors + adapter_config.json), or none for zero-shot CLIP")
    parser.add_argument("--backbone", default=None, help="open_clip model name (default: adapters' or ViT-B-32)")
    parser.add_argument("--pretrained", default=None, metavar="TAG|PATH|none",
                        help="open_clip tag or checkpoint file (default: adapters' or openai); none = random")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: adapters'/dataset's)")
    parser.add_argument("--words", type=int, default=None, help="query text tokens (default: the dataset's)")
    parser.add_argument("--batch-size", type=int, default=32, help="videos (and texts) per forward pass")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader processes decoding videos")
    parser.add_argument("--device", default=None, help="cuda, cpu, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--dsl", action="store_true", help="also report dual-softmax re-scored metrics")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N items only (smoke runs)")
    parser.add_argument("--decode-short-side", type=int, default=None, help="resize while decoding (faster)")
    parser.add_argument("--frame-store", default=None, metavar="DIR",
                        help="read frames from this frame store (python -m pipelines.framestore build) instead of "
                             "decoding; refused unless it holds these frames at this resolution")
    parser.add_argument("--cache-dir", default=None, metavar="DIR|none", help="feature cache (default: OUT/feature_cache)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from training.adapters import AdapterLoadError
    from training.evaluate import run_evaluation
    from training.metrics import format_table

    pretrained = ... if args.pretrained is None else _none(args.pretrained)  # ...: adapters' or openai
    cache = args.out / "feature_cache" if args.cache_dir is None else _none(args.cache_dir)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        metrics = run_evaluation(
            args.out, batch_size=args.batch_size, dsl=args.dsl, num_workers=args.num_workers, cache_dir=cache,
            dataset=args.dataset, split=args.split, annotations=args.annotations, video_root=args.video_root,
            adapters=args.adapters, backbone=args.backbone, pretrained=pretrained, frames=args.frames,
            words=args.words, device=device, limit=args.limit, decode_short_side=args.decode_short_side,
            frame_store=args.frame_store,
        )
    except (AdapterLoadError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    print(f"written: {args.out / 'metrics.json'}, {args.out / 'recall_table.html'}, {args.out / 'recall_table.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
