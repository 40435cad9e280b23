"""Any folder of videos plus a JSONL or CSV annotation file: how users bring their own data.

Annotation rows hold ``video_id``, ``text`` and optionally ``start`` and ``end`` (seconds, both or
neither; empty / null = the whole video). JSONL: one object per line (blank lines skipped). CSV: a
header naming the columns (other columns are ignored). Several rows for the same video stay separate
items (``item_id`` = ``<video_id>_<k>``). A malformed row raises ValueError naming the file and line;
an id that would leave the video root raises ``UnsafeVideoIdError`` naming the id, file and line.

``annotations`` is the annotation file itself, or a folder holding ``<split>.jsonl`` or
``<split>.csv`` (default folder: ``<data>/folder/annotations``). ``video_root`` defaults to the folder
holding the annotation file (for annotations on an object store, the URI of that folder). The split is
a free label. 12 frames, 32 words.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from shared.datasets.base import DatasetAdapter, clean_sentence, require_file
from shared.paths import UnsafeVideoIdError, check_video_id
from shared.video_source import join_uri, parent_uri

FORMATS = (".jsonl", ".csv")


def _seconds(value, field: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: {field}={value!r}; expected seconds (a number >= 0) or empty")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {field}={value!r}; expected seconds (a number >= 0) or empty") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{where}: {field}={value!r}; expected seconds (a finite number >= 0)")
    return seconds


def parse_row(row: dict, where: str) -> tuple[str, str, float | None, float | None]:
    """``(video_id, text, start, end)`` from one annotation row; ``where`` is ``file:line`` for errors."""
    video_id, text = row.get("video_id"), row.get("text")
    if not isinstance(video_id, str) or not video_id.strip():
        raise ValueError(f"{where}: missing or empty 'video_id' (got {video_id!r}); expected a file name")
    if not isinstance(text, str) or not clean_sentence(text):
        raise ValueError(f"{where}: missing or empty 'text' (got {text!r}); expected a sentence")
    try:
        check_video_id(video_id.strip())
    except UnsafeVideoIdError as err:
        raise UnsafeVideoIdError(err.video_id, f"{err.reason} ({where})") from None
    start, end = _seconds(row.get("start"), "start", where), _seconds(row.get("end"), "end", where)
    if (start is None) != (end is None):
        raise ValueError(
            f"{where}: start={start!r}, end={end!r}; give both (seconds) or neither (whole video)"
        )
    if start is not None and end <= start:
        raise ValueError(f"{where}: start={start} >= end={end}; expected start < end (seconds)")
    return video_id.strip(), clean_sentence(text), start, end


def read_jsonl(path: Path):
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{where}: not valid JSON ({err.msg}); expected one object per line"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: got {type(row).__name__}; expected a JSON object per line")
            yield parse_row(row, where)


def read_csv(path: Path):
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        absent = [c for c in ("video_id", "text") if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{path}:1: header lacks {absent}; expected columns video_id,text[,start,end]")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise ValueError(f"{where}: more fields than the header's {len(reader.fieldnames)}")
            yield parse_row(row, where)


class Folder(DatasetAdapter):
    name = "folder"
    splits = ()  # any label
    window_rule = "annotation-window|whole"
    frames = 12
    words = 32

    def __init__(self, split, annotations=None, video_root=None, **options):
        super().__init__(split, annotations, video_root, **options)
        self.annotation_file = self._find_annotation_file()
        if video_root is None:
            self.video_root = self._annotation_folder()

    def _find_annotation_file(self) -> Path:
        if self.annotations.is_file():
            if self.annotations.suffix.lower() not in FORMATS:
                raise ValueError(f"{self.annotations}: expected a .jsonl or .csv annotation file")
            return self.annotations
        for suffix in FORMATS:
            candidate = self.annotations / f"{self.split}{suffix}"
            if candidate.is_file():
                return candidate
        return require_file(self.annotations / f"{self.split}.jsonl", "folder annotations (.jsonl or .csv)")

    def _annotation_folder(self):
        """The folder (or, for annotations given as a URI, the URI) that holds the annotation file."""
        if self.annotations_uri is None:
            return self.annotation_file.parent
        return parent_uri(self._annotation_uri())

    def _annotation_uri(self) -> str:
        """The annotation file's URI, when the annotations were given as a URI (file or folder)."""
        if self.annotations.is_file():  # the URI named the file itself
            return self.annotations_uri
        return join_uri(self.annotations_uri, self.annotation_file.relative_to(self.annotations).as_posix())

    def describe(self) -> dict:
        shown = self._annotation_uri() if self.annotations_uri else str(self.annotation_file)
        return {**super().describe(), "annotations": shown}

    def _records(self):
        path = self.annotation_file
        return read_jsonl(path) if path.suffix.lower() == ".jsonl" else read_csv(path)
