"""What every dataset adapter shares: the item record, default roots, paragraph joining, the base class.

A video root may be a folder or an object-store URI (``s3://bucket/videos?endpoint_override=...``,
``shared.video_source``); items of a URI root carry URI strings as ``path``. Annotations may be a URI
too (a file or a folder): they are copied once per process and read from the copy; provenance names
the URI.

Default roots (each overridable by the ``annotations`` / ``video_root`` arguments or the CLI's
``--annotations`` / ``--video-root``)::

    <data>/<name>/annotations     annotation files, named as the public releases name them
    <data>/<name>/videos          video files, searched recursively (see shared.paths)

where ``<data>`` is ``$DISCOVLA_DATA`` when set, else ``data`` under the current directory.

``item_id`` rule (all adapters): ``f"{video_id}_{k}"`` with ``k`` the 0-based position of the text
among the texts of the same video in the split, in order of appearance in the annotation file, so
MSRVTT's 4th training sentence of video7010 is ``video7010_3`` and a one-text-per-video test item is
``<video_id>_0``. Unique within a split and stable while the annotation file is unchanged.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from shared.paths import VIDEO_EXTENSIONS, VideoIndex, video_index
from shared.storage_errors import display_uri
from shared.video_source import as_video_root, is_uri, local_copy

logger = logging.getLogger(__name__)

DATA_ENV = "DISCOVLA_DATA"
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class VideoItem:
    """One retrieval item: a text and the video (or window of a video) it describes."""

    video_id: str  # the id as the annotation file has it; caption shards are keyed by it
    path: Path | str  # the file found under the video root (a URI for a URI root), or where it would be
    start: float | None  # window start in seconds; None (with end None) = the whole video
    end: float | None  # window end in seconds
    text: str  # the sentence, or the paragraph for paragraph-to-video datasets
    split: str
    item_id: str = ""  # f"{video_id}_{k}", see the module docstring
    exists: bool = False  # whether the file was found when the dataset was listed

    @property
    def window(self) -> tuple[float, float] | None:
        """``(start, end)`` for ``shared.frames.sample_frames(window=...)``, or ``None``."""
        return None if self.start is None or self.end is None else (self.start, self.end)

    def to_json(self) -> dict:
        """The record as JSON-ready values (``path`` as a string)."""
        return {
            "video_id": self.video_id,
            "path": display_uri(str(self.path)),  # a URI without secrets
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "item_id": self.item_id,
            "split": self.split,
            "exists": self.exists,
        }


def data_root() -> Path:
    """``$DISCOVLA_DATA`` when set, else ``./data``."""
    return Path(os.environ.get(DATA_ENV) or "data")


def join_paragraph(texts: Iterable[str]) -> str:
    """One paragraph from several descriptions (DiDeMo, ActivityNet).

    Order of appearance is kept; each text has its whitespace runs collapsed to one space and its
    ends stripped; empty texts are dropped; texts are joined with a single space. No punctuation is
    added or removed (CLIP4Clip joins with ``" "`` too; its tokenizer cleans whitespace the same way).
    """
    parts = (_WHITESPACE.sub(" ", t).strip() for t in texts)
    return " ".join(p for p in parts if p)


def clean_sentence(text: str) -> str:
    """A single sentence with its whitespace runs collapsed and its ends stripped."""
    return _WHITESPACE.sub(" ", text).strip()


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a FileNotFoundError that says what was expected and how to fix it."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found: expected the file {path}. Pass the folder that holds it as "
            f"annotations=... (CLI: --annotations DIR) or set ${DATA_ENV} (default roots: "
            f"<data>/<dataset>/annotations)."
        )
    return path


class DatasetAdapter:
    """Base of the adapters: argument checking, default roots, item building, caching.

    Subclasses set the class attributes and implement :meth:`_records`, which yields
    ``(video_id, text, start, end)`` in annotation order; :meth:`_place` decides the file.
    """

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]  # accepted split names (an empty tuple accepts any)
    window_rule: ClassVar[str]  # provenance: "whole", "0-31s", ...
    frames: int = 12  # F frames per video (preset default; overridable per instance)
    words: int = 32  # text tokens kept by the trainer

    def __init__(
        self,
        split: str,
        annotations: str | Path | None = None,
        video_root: str | Path | None = None,
        *,
        frames: int | None = None,
        words: int | None = None,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    ):
        if self.splits and split not in self.splits:
            raise ValueError(
                f"dataset {self.name!r} has no split {split!r}; expected one of {list(self.splits)}"
            )
        self.split = split
        # annotations on an object store: a local copy (small files that the adapters open by path)
        given = os.fspath(annotations) if annotations is not None else None
        self.annotations_uri = display_uri(given) if given and is_uri(given) else None
        if self.annotations_uri:
            self.annotations = local_copy(given)
        else:
            self.annotations = Path(given) if given else data_root() / self.name / "annotations"
        # a folder, or an object-store URI kept as given (shared.video_source)
        self.video_root = (
            as_video_root(video_root) if video_root is not None else data_root() / self.name / "videos"
        )
        for field, value in (("frames", frames), ("words", words)):
            if value is not None:
                if int(value) < 1:
                    raise ValueError(f"{field} must be >= 1, got {value}")
                setattr(self, field, int(value))
        self.extensions = tuple(extensions)
        self._items: list[VideoItem] | None = None

    @property
    def index(self) -> VideoIndex:
        """The cached listing of :attr:`video_root`."""
        return video_index(self.video_root, self.extensions)

    def items(self) -> list[VideoItem]:
        """Every retrieval item of the split, in annotation order (computed once, then cached)."""
        if self._items is None:
            self._items = self._build(self._records())
            logger.info(
                "%s/%s: %d items from %s, videos under %s",
                self.name, self.split, len(self._items), self.annotations, self.video_root,
            )  # fmt: skip
        return list(self._items)

    def video_source(self) -> dict:
        """Where the videos are and how their windows were chosen: what caption sets and frame stores
        record as ``video_source`` (shards of one set must share it)."""
        return {"video_root": display_uri(str(self.video_root)), "window_rule": self.window_rule}

    def describe(self) -> dict:
        """Provenance of the item list: dataset, split, roots, window rule, frames, words."""
        return {
            "dataset": self.name,
            "split": self.split,
            "annotations": self.annotations_uri or str(self.annotations),
            "video_root": display_uri(str(self.video_root)),
            "window_rule": self.window_rule,
            "frames": self.frames,
            "words": self.words,
        }

    def _records(self) -> Iterable[tuple[str, str, float | None, float | None]]:
        raise NotImplementedError

    def _place(self, video_id: str, start: float | None, end: float | None):
        """``(path, exists, start, end)`` for one record; the default looks the id up in the index."""
        found = self.index.resolve(video_id)
        return found.path, found.exists, start, end

    def _build(self, records: Iterable[tuple[str, str, float | None, float | None]]) -> list[VideoItem]:
        seen: Counter[str] = Counter()
        items = []
        for video_id, text, start, end in records:
            path, exists, start, end = self._place(video_id, start, end)
            items.append(
                VideoItem(
                    video_id, path, start, end, text, self.split, f"{video_id}_{seen[video_id]}", exists
                )
            )
            seen[video_id] += 1
        return items


def video_present(item: VideoItem) -> bool:
    """Whether the item's video is there now: a local file is looked at (a listing made earlier in this
    process does not see files added or removed since); a video under a URI root is judged by the
    root's listing (``exists``), so that no request is made per video."""
    return item.exists if is_uri(item.path) else Path(item.path).is_file()


def unique_videos(items: Iterable[VideoItem]) -> list[VideoItem]:
    """The first item of each video id, in order: what the caption stage decodes once per video."""
    first: dict[str, VideoItem] = {}
    for item in items:
        first.setdefault(item.video_id, item)
    return list(first.values())


def summarize(items: list[VideoItem], n_examples: int = 3) -> dict:
    """Counts a user checks before spending GPU-hours: items, videos, missing files, a few examples."""
    videos = unique_videos(items)
    missing = [v for v in videos if not v.exists]
    return {
        "items": len(items),
        "videos": len(videos),
        "missing_videos": len(missing),
        "missing_examples": [display_uri(str(v.path)) for v in missing[:n_examples]],
        "windowed_items": sum(item.window is not None for item in items),
        "examples": [item.to_json() for item in items[:n_examples]],
    }
