"""Inspect a dataset before spending GPU-hours on it.

    python -m pipelines.datasets --dataset NAME --split SPLIT [--annotations DIR] [--video-root DIR] [--jsonl]

Prints a summary (items, unique videos, missing video files, a few examples). With ``--jsonl`` standard
output holds only one JSON object per item (``video_id, path, start, end, text, item_id, split,
exists``) and the summary goes to standard error. When the annotations cannot be read or a video id
is unsafe it prints ``error: <cause>`` (naming the file) on standard error and exits 1; a bad argument
exits 2. ``DISCOVLA_DATA`` sets the default roots (``$DISCOVLA_DATA/<dataset>/annotations`` and
``.../videos``).
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines import cli
from shared.datasets import get_dataset, summarize
from shared.errors import DiscoVLAError


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("datasets", __doc__, progress=False)
    cli.add_dataset_arg(parser)
    parser.add_argument("--split", required=True, help="e.g. train / test (msrvtt), val (activitynet)")
    parser.add_argument(
        "--annotations",
        metavar="PATH",
        help="folder of annotation files (folder dataset: the file itself); default: the dataset's",
    )
    parser.add_argument("--video-root", metavar="DIR", help="folder of videos, searched recursively")
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per item on standard output")
    parser.add_argument("--examples", type=int, default=3, help="examples shown in the summary (default: 3)")
    return parser


def format_summary(describe: dict, summary: dict) -> str:
    lines = [
        f"dataset {describe['dataset']}, split {describe['split']}: window {describe['window_rule']}, "
        f"{describe['frames']} frames, {describe['words']} words",
        f"annotations: {describe['annotations']}",
        f"video root:  {describe['video_root']}",
        f"items: {summary['items']}",
        f"videos: {summary['videos']}",
        f"missing videos: {summary['missing_videos']}",
    ]
    lines += [f"  missing: {path}" for path in summary["missing_examples"]]
    lines.append(f"windowed items: {summary['windowed_items']}")
    for example in summary["examples"]:
        window = "whole" if example["start"] is None else f"{example['start']:g}-{example['end']:g}s"
        lines.append(f"  {example['item_id']}  {example['path']}  [{window}]  {example['text'][:100]!r}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        dataset = get_dataset(args.dataset, args.split, args.annotations, args.video_root)
        items = dataset.items()
    except ValueError as err:  # a malformed annotation file: the message names the file and the line
        if isinstance(err, DiscoVLAError):  # e.g. UnsafeVideoIdError
            raise
        raise DiscoVLAError(str(err)) from err
    text = format_summary(dataset.describe(), summarize(items, args.examples))
    if args.jsonl:
        for item in items:
            sys.stdout.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
        print(text, file=sys.stderr)
    else:
        print(text)
    return 0


def main(argv=None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
