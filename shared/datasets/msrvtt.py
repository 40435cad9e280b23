"""MSRVTT: training on the 9k split × all 20 sentences per video, test on 1k-A (CLIP4Clip convention).

Annotation files (in the ``annotations`` folder, as the CLIP4Clip/DRL/DGL releases name them):

- ``train`` (= ``train9k``): ``MSRVTT_train.9k.csv`` (one column ``video_id``) × every sentence of those
  videos in ``MSRVTT_data.json`` (``{"sentences": [{"video_id", "caption", "sen_id"}, ...], ...}``), one
  item per sentence, in the JSON's order (CLIP4Clip's order);
- ``train7k``: the same with ``MSRVTT_train.7k.csv``;
- ``test``: 1k-A, ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``), 1,000 items.

Videos: ``<video_root>/**/video<N>.<ext>``. Whole videos; 12 frames, 32 words.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

from shared.datasets.base import DatasetAdapter, clean_sentence, require_file

logger = logging.getLogger(__name__)

SPLIT_FILES = {
    "train": "MSRVTT_train.9k.csv",
    "train9k": "MSRVTT_train.9k.csv",
    "train7k": "MSRVTT_train.7k.csv",
    "test": "MSRVTT_JSFUSION_test.csv",
}
SENTENCES_FILE = "MSRVTT_data.json"


def read_csv_columns(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a headed csv, checking that ``columns`` are present and filled."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in columns if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{path}: missing column(s) {absent}; expected a header with {list(columns)}")
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if any(not (row.get(c) or "").strip() for c in columns):
            raise ValueError(f"{path}:{line}: empty value in one of {list(columns)}: {row}")
    return rows


class MSRVTT(DatasetAdapter):
    name = "msrvtt"
    splits = tuple(SPLIT_FILES)
    window_rule = "whole"
    frames = 12
    words = 32

    def _records(self):
        split_file = require_file(self.annotations / SPLIT_FILES[self.split], f"MSRVTT {self.split} split")
        if self.split == "test":
            for row in read_csv_columns(split_file, ("video_id", "sentence")):
                yield row["video_id"].strip(), clean_sentence(row["sentence"]), None, None
            return
        video_ids = {row["video_id"].strip() for row in read_csv_columns(split_file, ("video_id",))}
        counts: Counter[str] = Counter()
        for video_id, caption in self._sentences():
            if video_id in video_ids:
                counts[video_id] += 1
                yield video_id, caption, None, None
        if len(counts) < len(video_ids):
            logger.warning(
                "%d of the %d videos of %s have no sentence in %s",
                len(video_ids) - len(counts), len(video_ids), split_file.name, SENTENCES_FILE,
            )  # fmt: skip

    def _sentences(self):
        path = require_file(
            self.annotations / SENTENCES_FILE,
            "MSRVTT sentences (MSRVTT_data.json, shipped with the CLIP4Clip MSRVTT annotations)",
        )
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
        sentences = data.get("sentences") if isinstance(data, dict) else None
        if not isinstance(sentences, list):
            raise ValueError(f"{path}: expected an object with a 'sentences' list of {{video_id, caption}}")
        for i, entry in enumerate(sentences):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("video_id"), str)
                or not isinstance(entry.get("caption"), str)
            ):
                raise ValueError(
                    f"{path}: sentences[{i}] = {entry!r}; expected {{'video_id': str, 'caption': str}}"
                )
            yield entry["video_id"], clean_sentence(entry["caption"])
