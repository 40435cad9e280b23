"""Caption-shard tools: inspect, check, merge, convert and view caption sets.

    python -m pipelines.shards info ROOT [--split S] [--json]
    python -m pipelines.shards validate ROOT [--split S] [--frames F --candidate-fps R] [--json]
                                        [--video-ids FILE | --dataset NAME [--dataset-split S] ...]
    python -m pipelines.shards merge OUT IN [IN ...] [--num-shards N] [--allow-mismatch KEY ... | --force]
    python -m pipelines.shards export-json ROOT OUT.json [--split S] [--pairs FILE | --dataset NAME ...]
    python -m pipelines.shards import-json IN.json OUT --dataset-name NAME --split S [--video-ids FILE | ...]
    python -m pipelines.shards view ROOT OUT_DIR [--videos N] [--video-root DIR | --dataset NAME ...]
    python -m pipelines.shards write-manifest ROOT

ROOT / IN / OUT: a caption-set directory (or its manifest.json, or one shard .parquet for reading),
local or a pyarrow URI such as ``s3://bucket/set?endpoint_override=host:9000&scheme=http`` (credentials
from the usual environment variables). ``--dataset NAME [--dataset-split S] [--annotations P]
[--video-root D]`` uses ``shared.datasets.get_dataset`` for video ids, texts and video files; the
authors' keys (export-json, import-json) use the sentences exactly as the annotation file spells them
(``shared.shards.annotations``). Reports are text; ``--json`` (info, validate, merge, import-json,
write-manifest) prints one JSON object, whose shape each subcommand's help gives. Exit status: 0 fine,
1 errors or validation findings (printed on standard error), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from pipelines import cli
from shared.errors import DiscoVLAError, UsageError
from shared.frames import SAMPLER_NAME, SAMPLER_VERSION
from shared.shards import write_manifest
from shared.shards.annotations import annotation_pairs
from shared.shards.info import caption_set_info, format_info
from shared.shards.interop import UNKNOWN_MODEL, export_json, import_json, read_pairs
from shared.shards.merge import merge_caption_sets
from shared.shards.validate import validate_caption_set
from shared.shards.viewer import render_view

logger = logging.getLogger(__name__)


class ArgumentsError(UsageError):
    """Arguments that cannot work together (printed as ``error: ...``, exit 2)."""


@contextlib.contextmanager
def _without_video_root_warnings(video_root):
    """Ids and texts need no videos: no warning about a default video root the user never named."""
    paths_logger = logging.getLogger("shared.paths")
    level = paths_logger.level
    if video_root is None:
        paths_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        paths_logger.setLevel(level)


def _dataset_split(args, split: str | None) -> str:
    return args.dataset_split or split or "test"


def _dataset_items(args, split: str | None) -> list | None:
    """Items of ``--dataset`` (imported lazily: the dataset adapters are optional here)."""
    if not getattr(args, "dataset", None):
        return None
    from shared.datasets import get_dataset

    return get_dataset(
        args.dataset, _dataset_split(args, split), annotations=args.annotations, video_root=args.video_root
    ).items()


def _annotation_pairs(args, split: str | None) -> list[tuple[str, str]] | None:
    """(video_id, sentence as in the annotation file) of ``--dataset``; no video files needed."""
    if not getattr(args, "dataset", None):
        return None
    with _without_video_root_warnings(args.video_root):
        return annotation_pairs(args.dataset, _dataset_split(args, split), args.annotations, args.video_root)


def _id_file(path) -> list[str] | None:
    """The video ids of a ``--video-ids`` file (one a line), or None without one."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()] if path else None


def _video_ids(args, split: str | None):
    if getattr(args, "video_ids", None):
        return _id_file(args.video_ids)
    pairs = _annotation_pairs(args, split)
    return None if pairs is None else list(dict.fromkeys(v for v, _ in pairs))


def cmd_info(args) -> int:
    info = caption_set_info(args.root, split=args.split)
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_info(info))
    return 0


def cmd_validate(args) -> int:
    expect = {"name": SAMPLER_NAME, "version": SAMPLER_VERSION}  # the frame rule of this code
    if args.candidate_fps is not None:
        expect["candidate_fps"] = args.candidate_fps
    report = validate_caption_set(
        args.root,
        split=args.split,
        expect_video_ids=_video_ids(args, args.split),
        expect_sampler=expect,
        num_frames=args.frames,
    )
    for finding in report.findings:
        print(finding, file=sys.stderr)
    summary = [f"{k}: {v}" for k, v in sorted(report.summary.items())]
    text = "\n".join([f"{args.root}: {'OK' if report.ok else 'NOT OK'}", *summary])
    record = {"ok": report.ok, **report.summary, "findings": [str(f) for f in report.findings]}
    cli.print_report(args, record, text)
    return 0 if report.ok else 1


def cmd_merge(args) -> int:
    from shared.lease import OutputLease

    allow = True if args.force else tuple(args.allow_mismatch or ())
    with OutputLease(args.out, what="shards merge"):  # one writer at a time, as for caption runs
        manifest = merge_caption_sets(args.inputs, args.out, num_shards=args.num_shards, allow_mismatch=allow)
    _print_written(args, args.out, manifest)
    return 0


WRITTEN_SHAPE = (
    '{"out", "splits": {SPLIT: {num_shards, complete, missing_shards, rows, videos, failed_rows, ...}}}'
)


def _print_written(args, out, manifest: dict) -> None:
    """What a command that wrote a caption set reports: its splits (text, or JSON with --json)."""
    lines = [f"wrote {out}:"] + [
        f"  split {split}: {i['num_shards']} shards, {i['rows']} rows, {i['videos']} videos, "
        f"{i['failed_rows']} failed rows, "
        + ("complete" if i["complete"] else f"missing {i['missing_shards'][:10]}")
        for split, i in sorted(manifest["splits"].items())
    ]
    cli.print_report(args, {"out": str(out), "splits": manifest["splits"]}, "\n".join(lines))


def cmd_export(args) -> int:
    pairs = read_pairs(args.pairs) if args.pairs else _annotation_pairs(args, args.split)
    if pairs is None and not args.by_video:
        raise ArgumentsError(
            "export-json needs the sentences for the authors' keys: --pairs FILE or --dataset "
            "NAME (or --by-video for keys that are plain video ids)"
        )
    count = export_json(args.root, args.out, pairs=pairs, split=args.split)
    print(json.dumps({"keys": count, "out": args.out}))
    return 0


def cmd_import(args) -> int:
    manifest = import_json(
        args.input,
        args.out,
        dataset=args.dataset_name,
        split=args.split,
        video_ids=_id_file(args.video_ids),
        pairs=_annotation_pairs(args, args.split),
        candidate_fps=args.candidate_fps,
        num_shards=args.num_shards,
        model=args.model or UNKNOWN_MODEL,
    )
    _print_written(args, args.out, manifest)
    return 0


def cmd_write_manifest(args) -> int:
    manifest = write_manifest(args.root)
    _print_written(args, args.root, manifest)
    return 0


def cmd_view(args) -> int:
    path = render_view(
        args.root,
        args.out,
        n_videos=args.videos,
        split=args.split,
        seed=args.seed,
        items=_dataset_items(args, args.split),
        video_root=args.video_root,
    )
    print(path)
    return 0


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    cli.add_dataset_arg(p, required=False)
    p.add_argument("--dataset-split", help="the adapter's split (default: --split, else test)")
    p.add_argument("--annotations", help="annotation file or folder for the adapter")
    p.add_argument("--video-root", help="folder of the video files")


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="caption set: its directory or URI, its manifest.json, or one shard .parquet")
    p.add_argument("--split", help="only this split (default: all)")
    cli.add_json_flag(
        p, "the caption set's provenance, splits, counts and top errors (shared.shards.caption_set_info)"
    )


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="caption set: its directory or URI, or its manifest.json")
    p.add_argument("--split", help="only this split (default: all)")
    p.add_argument("--frames", type=int, help="F that the trainer samples")
    p.add_argument("--candidate-fps", type=float, help="the trainer's candidate frame rate")
    p.add_argument("--video-ids", help="file with the video ids that must have captions, one per line")
    _add_dataset_args(p)
    cli.add_json_flag(p, '{"ok", <the summary counts>, "findings": ["error: ...", "warning: ..."]}')


def _merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="new caption-set directory")
    p.add_argument("inputs", nargs="+", help="caption sets, first = preferred")
    p.add_argument("--num-shards", type=int, default=1, help="shards per split in the output (default: 1)")
    p.add_argument("--allow-mismatch", nargs="*", metavar="KEY", help="provenance keys allowed to differ")
    p.add_argument("--force", action="store_true", help="allow any provenance difference except F")
    cli.add_json_flag(p, WRITTEN_SHAPE)


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="caption set: its directory or URI, or its manifest.json")
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--split", help="only the videos of this split (default: all)")
    p.add_argument("--pairs", help="CSV with video_id,sentence columns or MSRVTT_data.json")
    p.add_argument("--by-video", action="store_true", help="keys are plain video ids")
    _add_dataset_args(p)


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.json", help="the authors' JSON file")
    p.add_argument("out", help="new caption-set directory")
    p.add_argument("--dataset-name", required=True, help="value of the dataset column, e.g. msrvtt")
    p.add_argument("--split", required=True, help="split name the rows get (e.g. train)")
    p.add_argument("--num-shards", type=int, default=1, help="shards to write (default: 1)")
    p.add_argument(
        "--candidate-fps", type=float, default=1.0, help="the sampler's candidate rate (default: 1)"
    )
    p.add_argument("--model", help="model id, if known")
    p.add_argument(
        "--video-ids",
        help="known video ids, one per line (needed when ids contain '_'; --dataset "
        "also gives the sentences that settle keys two ids could claim)",
    )
    _add_dataset_args(p)
    cli.add_json_flag(p, WRITTEN_SHAPE)


def _view_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="caption set: its directory or URI, or its manifest.json")
    p.add_argument("out", help="folder for index.html")
    p.add_argument("--split", help="only videos of this split (default: all)")
    p.add_argument("--videos", type=int, default=8, help="how many videos to show")
    p.add_argument("--seed", type=int, default=0, help="which videos (seeded sample)")
    _add_dataset_args(p)


def _write_manifest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="caption-set directory or URI whose _stats files describe its shards")
    cli.add_json_flag(p, WRITTEN_SHAPE)


COMMANDS = {  # name: (help, arguments, function)
    "info": ("provenance, counts and failures", _info_args, cmd_info),
    "validate": (
        "manifest consistency, checksums and counts, unlisted files in data/, schema, duplicates, coverage; "
        "exit 1 on findings",
        _validate_args,
        cmd_validate,
    ),
    "merge": ("combine caption sets into a new one", _merge_args, cmd_merge),
    "export-json": ("write the authors' {video_id_sentence: [captions]} JSON", _export_args, cmd_export),
    "import-json": ("make a caption set from the authors' JSON", _import_args, cmd_import),
    "view": ("static HTML page: frames next to captions", _view_args, cmd_view),
    "write-manifest": (
        "(re)write manifest.json from the shards' stats files (checksums verified)",
        _write_manifest_args,
        cmd_write_manifest,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("shards", __doc__, progress=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, func) in COMMANDS.items():
        p = cli.add_subcommand(sub, name, help_text, progress=False)
        add_args(p)
        p.set_defaults(func=func)
    return parser


def run(args) -> int:
    try:
        return args.func(args)
    except ValueError as err:  # bad paths, URIs or dataset splits named on the command line
        if isinstance(err, DiscoVLAError):
            raise
        raise ArgumentsError(str(err)) from err


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
