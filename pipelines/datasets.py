"""Inspect a dataset before spending GPU-hours on it.

    python -m pipelines.datasets --dataset NAME --split SPLIT [--annotations DIR] [--video-root DIR] [--jsonl]

Prints a summary (items, unique videos, missing video files, a few examples). With ``--jsonl`` standard
output holds only one JSON object per item (``video_id, path, start, end, text, item_id, split,
exists``) and the summary goes to standard error. Exit status 2 with the cause on standard error when
the annotations cannot be read or a video id is unsafe. ``DISCOVLA_DATA`` sets the default roots
(``$DISCOVLA_DATA/<dataset>/annotations`` and ``.../videos``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from shared.datasets import get_dataset, list_datasets, summarize


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.datasets", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=list_datasets())
    parser.add_argument("--split", required=True, help="e.g. train / test (msrvtt), val (activitynet)")
    parser.add_argument("--annotations", help="folder of annotation files (folder dataset: the file itself)")
    parser.add_argument("--video-root", help="folder of videos, searched recursively")
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per item on standard output")
    parser.add_argument("--examples", type=int, default=3, help="examples shown in the summary")
    return parser.parse_args(argv)


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


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        dataset = get_dataset(args.dataset, args.split, args.annotations, args.video_root)
        items = dataset.items()
    except (OSError, ValueError) as err:  # UnsafeVideoIdError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = format_summary(dataset.describe(), summarize(items, args.examples))
    if args.jsonl:
        for item in items:
            sys.stdout.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
        print(text, file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
