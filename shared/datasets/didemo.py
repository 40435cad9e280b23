"""DiDeMo: paragraph-to-video retrieval (CLIP4Clip convention).

``{split}_data.json`` (``train`` / ``val`` / ``test``) is a list of ``{video, description, times, ...}``;
a video has several descriptions. One item per video, in order of first appearance; its text is all of
the video's descriptions joined by :func:`shared.datasets.base.join_paragraph` (order of appearance,
whitespace collapsed and stripped, single spaces). The window is 0-31 s for every video (annotators saw
the first 30 s; CLIP4Clip's rule), so longer videos are cut.

Video ids keep the annotation's file name (``26292851@N04_4253489686_265c3c8051.m4v``, some with a bare
trailing ``.``); files are found by name whatever the extension on disk (``...c8051.mp4`` too). 12 frames,
64 words.
"""

from __future__ import annotations

import json

from shared.datasets.base import DatasetAdapter, join_paragraph, require_file

WINDOW = (0.0, 31.0)  # seconds


class DiDeMo(DatasetAdapter):
    name = "didemo"
    splits = ("train", "val", "test")
    window_rule = "0-31s"
    frames = 12
    words = 64

    def _records(self):
        path = require_file(self.annotations / f"{self.split}_data.json", f"DiDeMo {self.split} annotations")
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of {{video, description, ...}} objects")
        descriptions: dict[str, list[str]] = {}
        for i, entry in enumerate(data):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("video"), str)
                or not isinstance(entry.get("description"), str)
            ):
                raise ValueError(
                    f"{path}: entry [{i}] = {entry!r}; expected {{'video': str, 'description': str}}"
                )
            descriptions.setdefault(entry["video"], []).append(entry["description"])
        for video_id, texts in descriptions.items():
            yield video_id, join_paragraph(texts), *WINDOW
