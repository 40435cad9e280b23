"""ActivityNet Captions: paragraph-to-video retrieval over whole videos (CLIP4Clip convention).

``train.json`` (split ``train``) and ``val_1.json`` (split ``val``, the conventional retrieval test set,
4,917 videos) map ``video_id -> {duration, timestamps, sentences}``. One item per video, in file order;
its text is the video's sentences joined by :func:`shared.datasets.base.join_paragraph`. Ids are kept
as the annotation has them (``v_uqiMw7tQ1Cc``); the file may be named with or without the ``v_``
prefix (``v_uqiMw7tQ1Cc.mp4`` is preferred over ``uqiMw7tQ1Cc.mp4``). 12 frames, 64 words.
"""

from __future__ import annotations

import json

from shared.datasets.base import DatasetAdapter, join_paragraph, require_file

SPLIT_FILES = {"train": "train.json", "val": "val_1.json"}


class ActivityNet(DatasetAdapter):
    name = "activitynet"
    splits = tuple(SPLIT_FILES)
    window_rule = "whole"
    frames = 12
    words = 64

    def _records(self):
        path = require_file(
            self.annotations / SPLIT_FILES[self.split], f"ActivityNet {self.split} annotations"
        )
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object {{video_id: {{sentences: [...]}}}}")
        for video_id, entry in data.items():
            sentences = entry.get("sentences") if isinstance(entry, dict) else None
            if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
                raise ValueError(f"{path}: video {video_id!r} has no 'sentences' list of strings")
            yield video_id, join_paragraph(sentences), None, None

    def _place(self, video_id, start, end):
        found = self.index.find(video_id)
        if found is None and video_id.startswith("v_") and len(video_id) > 2:
            found = self.index.find(video_id[2:])
        if found is None:
            return self.index.expected(video_id), False, start, end
        return found, True, start, end
