"""(video_id, sentence) pairs spelled exactly as the annotation files spell them: the authors' JSON keys.

The released DiscoVLA code looks captions up under ``video_id + "_" + sentence``, with the sentence as
its data loader reads it from the annotation file: no whitespace cleaning. Our dataset adapters clean
texts for the trainer (``shared.datasets.base.clean_sentence`` / ``join_paragraph``), so keys built from
``VideoItem.text`` would miss every sentence with a double, leading or trailing space. This module
reads the same files as the adapters (same names, same splits) and keeps the text as it stands:

- ``msrvtt``: ``test``: the CSV's ``sentence`` column; ``train`` / ``train9k`` / ``train7k``: every
  ``caption`` of ``MSRVTT_data.json`` whose video is in the split's CSV, in the JSON's order;
- ``didemo``: per video (order of first appearance), its descriptions joined with ``" "``;
- ``activitynet``: per video (file order), its sentences joined with ``" "``;
- any other dataset: ``(item.video_id, item.text)`` of its adapter.

For the paragraph datasets the join is CLIP4Clip's (``" ".join``), which the authors' loaders follow.

Public API::

    annotation_pairs(dataset, split, annotations=None) -> list[(video_id, sentence)]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from shared.shards.schema import CaptionSetError


def annotation_pairs(dataset: str, split: str, annotations=None, video_root=None) -> list[tuple[str, str]]:
    """The (video_id, sentence-as-in-the-file) pairs of a dataset split; see the module docstring."""
    from shared.datasets import get_dataset

    adapter = get_dataset(dataset, split, annotations=annotations, video_root=video_root)
    readers = {"msrvtt": _msrvtt, "didemo": _didemo, "activitynet": _activitynet}
    if dataset not in readers:
        return [(item.video_id, item.text) for item in adapter.items()]
    return readers[dataset](Path(adapter.annotations), split)


def _load_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file not found: {path} (pass the folder holding it as --annotations)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise CaptionSetError(str(path), f"not JSON: {err}") from err


def _csv_rows(path: Path, column: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file not found: {path} (pass the folder holding it as --annotations)"
        )
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and column not in rows[0]:
        raise CaptionSetError(str(path), f"expected a CSV column {column!r}, got {sorted(rows[0])}")
    return rows


def _msrvtt(root: Path, split: str) -> list[tuple[str, str]]:
    from shared.datasets.msrvtt import SENTENCES_FILE, SPLIT_FILES

    split_file = root / SPLIT_FILES[split]
    if split == "test":
        return [(row["video_id"].strip(), row["sentence"]) for row in _csv_rows(split_file, "sentence")]
    videos = {row["video_id"].strip() for row in _csv_rows(split_file, "video_id")}
    data = _load_json(root / SENTENCES_FILE)
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise CaptionSetError(
            str(root / SENTENCES_FILE), 'expected {"sentences": [{video_id, caption}, ...]}'
        )
    return [(s["video_id"], s["caption"]) for s in sentences if s.get("video_id") in videos]


def _didemo(root: Path, split: str) -> list[tuple[str, str]]:
    path = root / f"{split}_data.json"
    texts: dict[str, list[str]] = {}
    for entry in _load_json(path):
        texts.setdefault(entry["video"], []).append(entry["description"])
    return [(video, " ".join(parts)) for video, parts in texts.items()]


def _activitynet(root: Path, split: str) -> list[tuple[str, str]]:
    from shared.datasets.activitynet import SPLIT_FILES

    data = _load_json(root / SPLIT_FILES[split])
    return [(video, " ".join(entry["sentences"])) for video, entry in data.items()]
