"""Caption-shard tools: inspect, check, merge, convert and view caption sets.

    python -m pipelines.shards info ROOT [--split S] [--json]
    python -m pipelines.shards validate ROOT [--split S] [--frames F --candidate-fps R]
                                        [--video-ids FILE | --dataset NAME [--dataset-split S] ...]
    python -m pipelines.shards merge OUT IN [IN ...] [--num-shards N] [--allow-mismatch KEY ... | --force]
    python -m pipelines.shards export-json ROOT OUT.json [--split S] [--pairs FILE | --dataset NAME ...]
    python -m pipelines.shards import-json IN.json OUT --dataset-name NAME --split S [--video-ids FILE | ...]
    python -m pipelines.shards view ROOT OUT_DIR [--videos N] [--video-root DIR | --dataset NAME ...]

ROOT / IN / OUT: a caption-set directory (or its manifest.json, or one shard .parquet for reading),
local or a pyarrow URI such as ``s3://bucket/set?endpoint_override=host:9000&scheme=http`` (credentials
from the usual environment variables). ``--dataset NAME [--dataset-split S] [--annotations P]
[--video-root D]`` uses ``shared.datasets.get_dataset`` for video ids, texts and video files.
Exit status: 0 fine, 1 errors or validation findings (printed on standard error), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from shared.frames import SAMPLER_NAME, SAMPLER_VERSION
from shared.shards import CaptionSetError
from shared.shards.info import caption_set_info, format_info
from shared.shards.interop import UNKNOWN_MODEL, export_json, import_json, read_pairs
from shared.shards.merge import merge_caption_sets
from shared.shards.validate import validate_caption_set
from shared.shards.viewer import render_view

logger = logging.getLogger(__name__)


def _dataset_items(args, split: str | None) -> list | None:
    """Items of ``--dataset`` (imported lazily: the dataset adapters are optional here)."""
    if not getattr(args, "dataset", None):
        return None
    from shared.datasets import get_dataset

    return get_dataset(args.dataset, args.dataset_split or split or "test", annotations=args.annotations,
                       video_root=args.video_root).items()


def _video_ids(args, split: str | None):
    if getattr(args, "video_ids", None):
        return [line.strip() for line in Path(args.video_ids).read_text().splitlines() if line.strip()]
    items = _dataset_items(args, split)
    return None if items is None else [i.video_id for i in items]


def cmd_info(args) -> int:
    info = caption_set_info(args.root, split=args.split)
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_info(info))
    return 0


def cmd_validate(args) -> int:
    expect = {"name": SAMPLER_NAME, "version": SAMPLER_VERSION}  # the frame rule of this code
    if args.candidate_fps is not None:
        expect["candidate_fps"] = args.candidate_fps
    report = validate_caption_set(args.root, split=args.split, expect_video_ids=_video_ids(args, args.split),
                                  expect_sampler=expect, num_frames=args.frames)
    for finding in report.findings:
        print(finding, file=sys.stderr)
    print(json.dumps({"ok": report.ok, **report.summary}, indent=2, sort_keys=True))
    return 0 if report.ok else 1


def cmd_merge(args) -> int:
    allow = True if args.force else tuple(args.allow_mismatch or ())
    manifest = merge_caption_sets(args.inputs, args.out, num_shards=args.num_shards, allow_mismatch=allow)
    print(json.dumps(manifest["splits"], indent=2, sort_keys=True))
    return 0


def cmd_export(args) -> int:
    pairs = read_pairs(args.pairs) if args.pairs else None
    items = _dataset_items(args, args.split)
    if pairs is None and items is not None:
        pairs = [(i.video_id, i.text) for i in items]
    if pairs is None and not args.by_video:
        raise ValueError("export-json needs the sentences for the authors' keys: --pairs FILE or --dataset NAME "
                         "(or --by-video for keys that are plain video ids)")
    count = export_json(args.root, args.out, pairs=pairs, split=args.split)
    print(json.dumps({"keys": count, "out": args.out}))
    return 0


def cmd_import(args) -> int:
    manifest = import_json(args.json, args.out, dataset=args.dataset_name, split=args.split,
                           video_ids=_video_ids(args, args.split), candidate_fps=args.candidate_fps,
                           num_shards=args.num_shards, model=args.model or UNKNOWN_MODEL)
    print(json.dumps(manifest["splits"], indent=2, sort_keys=True))
    return 0


def cmd_view(args) -> int:
    path = render_view(args.root, args.out, n_videos=args.videos, split=args.split, seed=args.seed,
                       items=_dataset_items(args, args.split), video_root=args.video_root)
    print(path)
    return 0


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset adapter name (shared.datasets), for ids, texts and videos")
    p.add_argument("--dataset-split", help="the adapter's split (default: --split, else test)")
    p.add_argument("--annotations", help="annotation file or folder for the adapter")
    p.add_argument("--video-root", help="folder of the video files")


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root")
    p.add_argument("--split")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root")
    p.add_argument("--split")
    p.add_argument("--frames", type=int, help="F that the trainer samples")
    p.add_argument("--candidate-fps", type=float, help="the trainer's candidate frame rate")
    p.add_argument("--video-ids", help="file with the video ids that must have captions, one per line")
    _add_dataset_args(p)


def _merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="new caption-set directory")
    p.add_argument("inputs", nargs="+", help="caption sets, first = preferred")
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--allow-mismatch", nargs="*", metavar="KEY", help="provenance keys allowed to differ")
    p.add_argument("--force", action="store_true", help="allow any provenance difference except F")


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root")
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--split")
    p.add_argument("--pairs", help="CSV with video_id,sentence columns or MSRVTT_data.json")
    p.add_argument("--by-video", action="store_true", help="keys are plain video ids")
    _add_dataset_args(p)


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("json", help="the authors' JSON file")
    p.add_argument("out", help="new caption-set directory")
    p.add_argument("--dataset-name", required=True, help="value of the dataset column, e.g. msrvtt")
    p.add_argument("--split", required=True)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--candidate-fps", type=float, default=1.0)
    p.add_argument("--model", help="model id, if known")
    p.add_argument("--video-ids", help="known video ids, one per line (needed when ids contain '_')")
    _add_dataset_args(p)


def _view_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root")
    p.add_argument("out", help="folder for index.html")
    p.add_argument("--split")
    p.add_argument("--videos", type=int, default=8, help="how many videos to show")
    p.add_argument("--seed", type=int, default=0, help="which videos (seeded sample)")
    _add_dataset_args(p)


COMMANDS = {  # name: (help, arguments, function)
    "info": ("provenance, counts and failures", _info_args, cmd_info),
    "validate": ("schema, checksums, duplicates, coverage; exit 1 on findings", _validate_args, cmd_validate),
    "merge": ("combine caption sets into a new one", _merge_args, cmd_merge),
    "export-json": ("write the authors' {video_id_sentence: [captions]} JSON", _export_args, cmd_export),
    "import-json": ("make a caption set from the authors' JSON", _import_args, cmd_import),
    "view": ("static HTML page: frames next to captions", _view_args, cmd_view),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.shards", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (CaptionSetError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
