"""Index your videos for text search: every video (or fixed window) encoded with trained adapters.

    python -m pipelines.index --videos ~/footage --adapters runs/msrvtt/adapters/best --out my-index --window 10
    python -m pipelines.index --dataset demo --split test --adapters outputs/demo/train-1/adapters/last --out idx

Encodes each video, or each --window seconds of longer videos, with the evaluator's video encoder (IVFusion,
masked mean of the sampled frames) and writes INDEX/: manifest.json (provenance: backbone, pretrained
weights, the adapters' sha256, frame sampler, dates; skipped files), entries-<n>.parquet (video id, path,
window, thumbnail, embedding; readable by pandas/DuckDB/pyarrow) and, from --exact-below entries on, an
ANN index. Re-running on a grown or edited folder encodes only new or changed files (size + mtime);
deleted files leave the index; a killed run resumes from its finished chunks. Unreadable videos are
listed, counted and skipped (retried once they change). --ray-workers N encodes chunks on N Ray actors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines import cli


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("index", __doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--videos", nargs="+", type=Path, metavar="DIR", help="folders of video files (recursive)"
    )
    cli.add_dataset_arg(what, required=False)
    cli.add_source_args(p, split_help="dataset split (with --dataset; default: test)")
    cli.add_model_args(
        p,
        frames_help="frames per video/window (default: the adapters', else the dataset's)",
        words_help="query tokens (default: the adapters' max_words, else the dataset's)",
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="INDEX", help="index folder (created or updated)"
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="SECONDS",
        help="index windows of this many seconds of videos longer than that (default: whole videos)",
    )
    p.add_argument(
        "--batch-size", type=cli.positive_int, default=16, help="videos per model forward (default: 16)"
    )
    cli.add_num_workers_arg(p, "the video encoder (DataLoader workers)")
    p.add_argument(
        "--image-size",
        type=cli.positive_int,
        default=None,
        metavar="PIXELS",
        help="resize frames to this short side while decoding (faster on large videos)",
    )
    p.add_argument("--decode-timeout", type=float, default=60.0, help="seconds allowed to decode one video")
    cli.add_device_arg(p, "the video encoder")
    p.add_argument(
        "--chunk-videos",
        type=cli.positive_int,
        default=64,
        help="videos per chunk: the unit of progress saved for resuming and sent to a Ray worker",
    )
    p.add_argument(
        "--ray-workers",
        type=int,
        default=0,
        help="Ray actors encoding chunks in parallel (default 0: in this process)",
    )
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved for each Ray worker")
    p.add_argument(
        "--ray-address", default=None, help="Ray cluster to join (default: start one on this machine)"
    )
    p.add_argument(
        "--ann", choices=("faiss", "usearch"), default="faiss", help="ANN library (default: faiss)"
    )
    p.add_argument(
        "--exact-below",
        type=int,
        default=None,
        metavar="N",
        help="exact search below N entries, an ANN index from N on (default: 50000)",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="replace an index built with other adapters or settings instead of refusing",
    )
    cli.add_json_flag(
        p,
        '{"index", "files_listed", "files_kept", "files_resumed", "files_encoded", "files_removed", '
        '"files_skipped", "entries", "ann", "seconds", "encode_seconds", "videos_per_s", "skipped": [...]}',
    )
    return p


def run(args: argparse.Namespace) -> int:
    from search import build_index
    from search.ann import EXACT_BELOW

    summary = build_index(
        args.out,
        videos=args.videos,
        **cli.source_options(args),
        **cli.model_options(args),
        window=args.window,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=cli.resolve_device(args.device),
        ray_workers=args.ray_workers,
        cpus_per_worker=args.cpus_per_worker,
        ray_address=args.ray_address,
        chunk_files=args.chunk_videos,
        ann_backend=args.ann,
        exact_below=EXACT_BELOW if args.exact_below is None else args.exact_below,
        rebuild=args.rebuild,
        decode_short_side=args.image_size,
        decode_timeout_s=args.decode_timeout,
        progress=cli.progress_enabled(args),
    )
    if args.json:
        from dataclasses import asdict

        print(json.dumps({**asdict(summary), "videos_per_s": summary.videos_per_s}, indent=2))
    else:
        print(summary.format())
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
