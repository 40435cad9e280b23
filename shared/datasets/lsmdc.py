"""LSMDC: one sentence per movie clip (CLIP4Clip convention).

Annotation files are tab-separated, one clip per line: clip id, four timestamps (aligned start/end,
extracted start/end) and the sentence:
``train``: ``LSMDC16_annos_training.csv``, ``val``: ``LSMDC16_annos_val.csv``, ``test``: the 1,000-clip
public test ``LSMDC16_challenge_1000_publictect.csv``.

A clip id is ``<movie>_<HH.MM.SS.mmm>-<HH.MM.SS.mmm>`` (``3086_UGLY_TRUTH_00.23.23.000-00.23.28.886``).
Where the video is:

1. the clip's own file, ``<clip_id>.<ext>`` anywhere under the root (usually ``<movie>/<clip_id>.avi``):
   the whole file, ``start = end = None``;
2. else the movie's file, ``<movie>.<ext>`` anywhere under the root: the window parsed from the clip id's
   suffix (``1403.0``-``1408.886`` s above);
3. else missing, expected at ``<root>/<movie>/<clip_id>.avi``.

``window_rule`` is ``"clip|movie-window"``. 12 frames, 32 words.
"""

from __future__ import annotations

import re

from shared.datasets.base import DatasetAdapter, clean_sentence, require_file

SPLIT_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
_STAMP = r"(\d+)\.(\d{2})\.(\d{2})\.(\d{3})"
_CLIP_ID = re.compile(rf"^(?P<movie>.+)_{_STAMP}-{_STAMP}$")


def parse_clip_id(clip_id: str) -> tuple[str, float, float]:
    """``(movie, start_s, end_s)`` from ``<movie>_<HH.MM.SS.mmm>-<HH.MM.SS.mmm>``; ValueError otherwise."""
    match = _CLIP_ID.match(clip_id)
    if match is None:
        raise ValueError(f"LSMDC clip id {clip_id!r} does not end in _HH.MM.SS.mmm-HH.MM.SS.mmm")
    h0, m0, s0, ms0, h1, m1, s1, ms1 = (int(g) for g in match.groups()[1:])
    start = h0 * 3600 + m0 * 60 + s0 + ms0 / 1000  # seconds = 3600·HH + 60·MM + SS + mmm/1000
    end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
    return match["movie"], start, end


class LSMDC(DatasetAdapter):
    name = "lsmdc"
    splits = tuple(SPLIT_FILES)
    window_rule = "clip|movie-window"
    frames = 12
    words = 32

    def _records(self):
        path = require_file(self.annotations / SPLIT_FILES[self.split], f"LSMDC {self.split} annotations")
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 6 or not fields[0].strip():
                    raise ValueError(
                        f"{path}:{line_no}: expected 6 tab-separated fields (clip id, 4 timestamps, "
                        f"sentence), got {len(fields)}: {line[:120]!r}"
                    )
                yield fields[0].strip(), clean_sentence(fields[5]), None, None

    def _place(self, clip_id, start, end):
        clip = self.index.find(clip_id)
        if clip is not None:
            return clip, True, None, None
        try:
            movie, clip_start, clip_end = parse_clip_id(clip_id)
        except ValueError:  # no time suffix: only a clip file of its own can hold it
            return self.index.expected(f"{clip_id}.avi"), False, None, None
        movie_file = self.index.find(movie)
        if movie_file is not None:
            return movie_file, True, clip_start, clip_end
        expected = self.index.expected(f"{movie}/{clip_id}.avi")
        return expected, False, None, None
