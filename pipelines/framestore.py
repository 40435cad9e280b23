"""Frame stores: decode the sampled frames of every video once, so training and evaluation read them instead.

    python -m pipelines.framestore build --dataset NAME --split S --out STORE [--captions CAPTION_SET]
                                         [--image-size 224] [--codec jpeg --quality 95] [--num-workers N]
    python -m pipelines.framestore info STORE [--json]
    python -m pipelines.framestore validate STORE [--dataset NAME --split S] [--no-decode] [--json]

build (one at a time per STORE: a second is refused naming the first; videos from a folder or a URI
such as ``s3://bucket/videos?endpoint_override=...``): the frames the trainer samples (same sampler, F, window), resized so the short side is
--image-size (the model's input size: 224 for ViT-B), encoded (JPEG q95 by default; png, webp-lossless
or raw are lossless) into Parquet shards with the caption sets' completion protocol; an interrupted
build resumes. --captions CAPTION_SET gives an existing caption set its frames: the store takes the caption
set's sampler and shards (default --out: CAPTION_SET/frames). Use the store with
``python -m pipelines.train --set frame_store=STORE`` or ``python -m pipelines.evaluate --frame-store STORE``.
Exit status: 0 fine, 1 errors or validation findings, 2 bad arguments.
"""

from __future__ import annotations

from pipelines import cli
from shared.errors import DiscoVLAError, UsageError
from shared.frame_codecs import CODECS, DEFAULT_CODEC, DEFAULT_QUALITY
from shared.uris import join_uri


def _dataset(args):
    from shared.datasets import get_dataset

    return get_dataset(args.dataset, args.split, args.annotations, args.video_root)


def _items(args, adapter):
    items = adapter.items()
    return items[: args.limit] if getattr(args, "limit", None) else items


def cmd_build(args) -> int:
    """Build under the store's lease (``shared.lease``): a second build of the same store is refused."""
    from shared.lease import OutputLease

    if args.out is None and args.captions is None:
        raise UsageError(
            "build needs --out STORE (or --captions CAPTION_SET, which defaults it to CAPTION_SET/frames)"
        )
    with OutputLease(args.out or join_uri(args.captions, "frames"), what="framestore build"):
        return _build(args)


def _build(args) -> int:
    from shared.framestore import Codec, build_frame_store

    if args.out is None and args.captions is None:
        raise DiscoVLAError(
            "build needs --out STORE (or --captions CAPTION_SET, which defaults it to CAPTION_SET/frames)"
        )
    out = args.out or join_uri(args.captions, "frames")
    num_workers = args.num_workers
    adapter = _dataset(args)
    summary = build_frame_store(
        _items(args, adapter),
        out,
        dataset=args.dataset,
        split=args.split,
        num_frames=args.frames,
        short_side=args.image_size,
        codec=Codec(args.codec, args.quality),
        shard_size=args.shard_size,
        caption_set=args.captions,
        num_workers=num_workers,
        timeout_s=args.decode_timeout,
        candidate_fps=args.candidate_fps,
        progress=cli.progress_enabled(args),
        video_source=adapter.video_source(),  # as the caption stage records it
    )
    print(summary.format())
    return 0


def cmd_info(args) -> int:
    from shared.framestore import frame_store_info

    report = frame_store_info(args.store)
    cli.print_report(args, {**report.__dict__, "ok": report.ok}, report.format())
    return 0 if report.ok else 1


def cmd_validate(args) -> int:
    from shared.framestore import validate_frame_store

    items = _items(args, _dataset(args)) if args.dataset else None
    report = validate_frame_store(
        args.store, items=items, decode=not args.no_decode, progress=cli.progress_enabled(args)
    )
    cli.print_report(args, {**report.__dict__, "ok": report.ok}, report.format())
    return 0 if report.ok else 1


REPORT_SHAPE = (
    '{"ok", "root", "provenance", "splits", "videos", "failed_videos", "bytes", "missing_videos", "problems"} '
    "(shared.framestore.FrameStoreReport)"
)


def build_parser():
    parser = cli.parser("framestore", __doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{build,info,validate}")

    build = sub.add_parser("build", help="decode, resize and store the sampled frames of a dataset split")
    cli.add_dataset_arg(build)
    build.add_argument("--split", default="test", help="annotation split (default: test)")
    build.add_argument(
        "--annotations", default=None, help="annotation file/folder or its URI (default: the dataset's)"
    )
    build.add_argument(
        "--video-root", default=None, help="video folder or URI (s3://..., gs://...; default: the dataset's)"
    )
    build.add_argument("--out", default=None, help="store root: a directory or a pyarrow URI (s3://, gs://)")
    build.add_argument(
        "--captions",
        default=None,
        metavar="CAPTION_SET",
        help="give this caption set frames: its sampler and shard layout (default --out: CAPTION_SET/frames)",
    )
    build.add_argument("--frames", type=int, default=12, help="F frames per video (default: 12)")
    build.add_argument(
        "--candidate-fps", type=float, default=1.0, help="sampler candidate rate (default: 1.0)"
    )
    build.add_argument(
        "--image-size",
        type=int,
        default=224,
        help="short side in pixels: the model's input size (default: 224, ViT-B)",
    )
    build.add_argument(
        "--codec",
        default=DEFAULT_CODEC,
        choices=CODECS,
        help="frame encoding (default: jpeg; the others are lossless and 3-7x larger)",
    )
    build.add_argument(
        "--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality 1-100 (default: 95)"
    )
    build.add_argument(
        "--shard-size", type=int, default=100, help="videos per shard without --captions (default: 100)"
    )
    cli.add_num_workers_arg(build, "the store")
    build.add_argument(
        "--decode-timeout", type=float, default=60.0, help="seconds per video before it counts as failed"
    )
    build.add_argument("--limit", type=int, default=None, help="the first N items only (smoke runs)")
    cli.add_common_flags(build, subcommand=True)
    build.set_defaults(run=cmd_build)

    info = sub.add_parser("info", help="provenance, counts and size of a store (no decoding)")
    info.add_argument("store", help="store root (or its manifest.json)")
    cli.add_json_flag(info, REPORT_SHAPE)
    cli.add_common_flags(info, subcommand=True)
    info.set_defaults(run=cmd_info)

    validate = sub.add_parser("validate", help="checksums, schema, positions and every frame decodes")
    validate.add_argument("store", help="store root (or its manifest.json)")
    cli.add_dataset_arg(validate, required=False)
    validate.add_argument(
        "--split", default="test", help="with --dataset: the split whose videos must be stored"
    )
    validate.add_argument("--annotations", default=None, help="with --dataset: annotation file/folder")
    validate.add_argument("--video-root", default=None, help="with --dataset: video folder")
    validate.add_argument("--no-decode", action="store_true", help="skip decoding every frame (faster)")
    cli.add_json_flag(validate, REPORT_SHAPE)
    cli.add_common_flags(validate, subcommand=True)
    validate.set_defaults(run=cmd_validate)
    return parser


def run(args) -> int:
    return args.run(args)


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
