"""Text-video retrieval evaluation of DiscoVLA adapters, or of zero-shot CLIP, on a benchmark split.

    python -m pipelines.evaluate --dataset msrvtt --split test --adapters runs/msrvtt/adapters/best --out eval/
    python -m pipelines.evaluate --dataset msrvtt --adapters none --out eval/zero-shot      # CLIP baseline
    torchrun --nproc-per-node 4 -m pipelines.evaluate --dataset activitynet --adapters A --out eval/

Prints the recall table (text-to-video and video-to-text R@1/5/10, MdR, MnR; CLIP4Clip definitions) and
writes ``metrics.json``, ``recall_table.md``, ``recall_table.html`` and ``recall_table.png`` into --out.
With --adapters DIR the folder's adapter_config.json supplies backbone, pretrained and frames (the options
override it); DIR may be an object-store URI (``s3://bucket/runs/x/adapters/best?endpoint_override=...``).
--adapters none evaluates frozen CLIP through the same code. --dsl adds dual-softmax re-scored numbers,
labelled separately (they use test-set statistics). Features are cached in <out>/feature_cache
(--cache-dir none to turn off): a second run with the same adapters is instant.
Under torchrun every process encodes its share of the videos (each with --num-workers decoders) and
process 0 computes and writes the metrics, identical to a one-process run.
--pretrained none builds random weights (offline smoke runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines import cli


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("evaluate", __doc__)
    cli.add_dataset_arg(p)
    cli.add_source_args(p, split_help="annotation split (default: test)")
    cli.add_model_args(
        p,
        frames_help="frames per video (default: the adapters', else the dataset's)",
        words_help="query text tokens (default: the dataset's)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="videos (and texts) per model forward")
    cli.add_num_workers_arg(p, "the video encoder (DataLoader workers; per process under torchrun)")
    p.add_argument(
        "--device",
        default=None,
        help="cuda, cpu, cuda:1, ... (default: cuda when available; under torchrun cuda:LOCAL_RANK)",
    )
    p.add_argument("--dsl", action="store_true", help="also report dual-softmax re-scored metrics")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N items only (smoke runs)")
    p.add_argument(
        "--image-size",
        "--decode-short-side",
        dest="decode_short_side",
        type=int,
        default=None,
        metavar="PIXELS",
        help="resize the short side while decoding (faster on big videos)",
    )
    p.add_argument(
        "--frame-store",
        default=None,
        metavar="DIR",
        help="read frames from this frame store (python -m pipelines.framestore) instead of decoding; "
        "refused unless it holds these frames at this resolution",
    )
    p.add_argument(
        "--cache-dir", default=None, metavar="DIR|none", help="feature cache (default: OUT/feature_cache)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    return p


def run(args: argparse.Namespace) -> int:
    from training.distributed import barrier, init_distributed
    from training.evaluate import run_evaluation
    from training.reporting import format_table

    if args.device is not None:
        cli.resolve_device(args.device)  # an unknown name is a usage error, before any work
    rank, world, device = init_distributed(args.device)  # joins torchrun's process group, if any
    cache = args.out / "feature_cache" if args.cache_dir is None else cli.none_or(args.cache_dir)
    metrics = run_evaluation(
        args.out,
        batch_size=args.batch_size,
        dsl=args.dsl,
        num_workers=args.num_workers,
        cache_dir=cache,
        progress=cli.progress_enabled(args),
        **cli.source_options(args),
        **cli.model_options(args),
        device=device,
        limit=args.limit,
        decode_short_side=args.decode_short_side,
        frame_store=args.frame_store,
    )
    barrier()
    if rank == 0:
        print(format_table(metrics))
        print(
            f"written: {args.out / 'metrics.json'}, {args.out / 'recall_table.html'}, "
            f"{args.out / 'recall_table.png'}" + (f" ({world} processes)" if world > 1 else "")
        )
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
