"""Safe resolution of video ids to files inside a video root.

Video ids come from annotation files that someone else wrote, so every id is checked before it
touches the file system, and every resolved path stays inside the video root:

- ids that are empty, absolute (``/x``, ``\\x``, ``C:x``), URIs (``s3://...``: the root is the URI,
  ids are relative to it), contain ``..`` components or NUL bytes raise :class:`UnsafeVideoIdError`
  naming the id;
- a file found for an id that is a symlink whose target lies outside the root also raises it.

Lookup goes through one recursive listing of the root (:class:`VideoIndex`, cached per root and
extension set): benchmarks have 10^4-10^5 videos, so nothing is stat-ed per id or per candidate
extension. Sub-folders are searched (symlinked sub-folders are not followed). For an id, in order:

1. a file whose name (or path relative to the root, for ids with ``/``) is exactly the id;
2. a file named ``<id><ext>`` for a video extension ``ext`` (case-insensitive, in ``extensions``
   order): ``video7010`` finds ``video7010.mp4``;
3. when the id itself ends in a video extension (or a bare ``.``), a file named ``<stem><ext>``:
   DiDeMo's ``x.m4v`` finds a re-encoded ``x.mp4``. Other dots are part of the id
   (LSMDC's ``..._00.23.23.000-00.23.28.886``).

Ties go to the earlier extension, then the shallower path, then the smaller name. A missing file is
not an error: :meth:`VideoIndex.resolve` returns the expected location (``<root>/<id>`` when the id
has a video extension, else ``<root>/<id><extensions[0]>``) with ``exists=False``.

A root may also be an object-store URI (``s3://bucket/videos?endpoint_override=...``, any pyarrow
filesystem, see ``shared.video_source``): it is listed once, recursively, through pyarrow (one LIST
request per 1,000 keys on S3, never one request per video), and a video found or expected there is a URI
string (the root's URI, the relative path, the root's query) instead of a ``Path``. The id rules are the
same, so no id leaves the root's prefix; object stores have no symlinks. A listing that fails (missing
bucket, denied access, unreachable endpoint) raises ``shared.storage_errors.StorageError`` in one line
naming the URI; an empty prefix is listed as no files, like a local root that is not a directory.

Listings are cached for the life of the process; call :func:`clear_index_cache` after adding files.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from shared.errors import DiscoVLAError
from shared.storage_errors import display_uri
from shared.video_source import is_uri, join_uri, list_objects

logger = logging.getLogger(__name__)

# The containers seen in the four benchmarks (DiDeMo alone has .mov .avi .mp4 .mpg .m4v .wmv .3gp .mts
# .3g2 .m2ts) plus the common modern ones; the first is the expected extension of a missing file.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi",
    ".mpg", ".mpeg", ".wmv", ".3gp", ".3g2", ".mts", ".m2ts", ".flv", ".ogv",
)  # fmt: skip
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeVideoIdError(DiscoVLAError, ValueError):
    """A video id that would leave the video root. ``video_id`` is the id, ``reason`` says why."""

    def __init__(self, video_id: str, reason: str):
        self.video_id = video_id
        self.reason = reason
        super().__init__(f"unsafe video id {video_id!r}: {reason}")


def check_video_id(video_id: str) -> str:
    """The id as a normalised relative POSIX path, or :class:`UnsafeVideoIdError`."""
    if not isinstance(video_id, str) or not video_id.strip():
        raise UnsafeVideoIdError(str(video_id), "expected a non-empty string")
    if "\x00" in video_id:
        raise UnsafeVideoIdError(video_id, "contains a NUL byte")
    if video_id.startswith(("/", "\\")) or _DRIVE.match(video_id):
        raise UnsafeVideoIdError(video_id, "absolute paths are not allowed; expected a name inside the root")
    if "://" in video_id:
        raise UnsafeVideoIdError(
            video_id,
            "a URI; ids are paths relative to the video root: pass the URI's folder as the video root "
            "(--video-root s3://bucket/prefix) and ids relative to it",
        )
    if ".." in re.split(r"[\\/]", video_id):
        raise UnsafeVideoIdError(video_id, "'..' components are not allowed; expected a name inside the root")
    return posixpath.normpath(video_id)


def split_video_extension(name: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> tuple[str, str]:
    """``(stem, ext)`` when ``name`` ends in a video extension (or a bare ``.``), else ``(name, "")``."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or "/" in ext:
        return name, ""
    if ext == "" or f".{ext.lower()}" in extensions:
        return stem, f".{ext}"
    return name, ""


@dataclass(frozen=True)
class Resolved:
    """Where a video id points: the file found, or the expected location with ``exists=False``."""

    path: Path | str  # a URI string when the root is a URI
    exists: bool


class VideoIndex:
    """One recursive listing of ``root``: names and stems of its files → paths relative to it."""

    def __init__(self, root: str | Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS):
        if not extensions:
            raise ValueError("extensions must name at least one video extension, e.g. ('.mp4',)")
        self.is_uri = is_uri(root)
        self.root: Path | str = root if self.is_uri else Path(os.path.abspath(root))
        self.extensions = tuple(e.lower() for e in extensions)
        self._real_root = None if self.is_uri else os.path.realpath(self.root)
        self._symlinks: set[str] = set()
        self._by_name: dict[str, list[str]] = defaultdict(list)  # name or relpath → relpaths
        self._by_stem: dict[str, list[str]] = defaultdict(list)  # stem or rel stem → video relpaths
        self.n_files = self._list()

    def _list(self) -> int:
        if self.is_uri:
            rels = self._list_uri()
            for rel in rels:
                self._add(rel, False)
            self._sort()
            logger.debug("listed %d objects under %s", len(rels), display_uri(self.root))
            return len(rels)
        if not self.root.is_dir():
            logger.warning(
                "video root %s is not a directory: every video will be reported missing", self.root
            )
            return 0
        n_files, pending, skipped = 0, [""], []
        while pending:
            rel_dir = pending.pop()
            try:
                entries = list(os.scandir(os.path.join(self.root, rel_dir)))
            except OSError as err:
                logger.warning("cannot list %s (%s): its videos will be reported missing", err.filename, err)
                continue
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append(rel)
                elif entry.is_symlink() and entry.is_dir():
                    skipped.append(rel)
                else:
                    self._add(rel, entry.is_symlink())
                    n_files += 1
        self._sort()
        if skipped:
            logger.warning(
                "%s: not following %d symlinked folder(s), e.g. %s (links could leave the root; "
                "link the whole video root instead)", self.root, len(skipped), skipped[0],
            )  # fmt: skip
        logger.debug("listed %d files under %s", n_files, self.root)
        return n_files

    def _list_uri(self) -> list[str]:
        """Paths relative to the URI root of every object below it (one recursive listing)."""
        rels = list(list_objects(self.root))
        if not rels:
            logger.warning(
                "video root %s holds no objects: every video will be reported missing", display_uri(self.root)
            )
        return rels

    def _sort(self) -> None:
        for table in (self._by_name, self._by_stem):
            for rels in table.values():
                rels.sort(key=self._rank)

    def _add(self, rel: str, is_symlink: bool) -> None:
        if is_symlink:
            self._symlinks.add(rel)
        name = rel.rpartition("/")[2]
        stem, ext = split_video_extension(name, self.extensions)
        for key in {name, rel}:
            self._by_name[key].append(rel)
        if ext and ext.lower() in self.extensions:
            for key in {stem, rel[: len(rel) - len(ext)]}:
                self._by_stem[key].append(rel)

    def _rank(self, rel: str) -> tuple[int, int, str]:
        """Earlier extension first, then shallower, then by name."""
        ext = split_video_extension(rel.rpartition("/")[2], self.extensions)[1].lower()
        order = self.extensions.index(ext) if ext in self.extensions else len(self.extensions)
        return order, rel.count("/"), rel

    def find(self, video_id: str) -> Path | None:
        """The file for ``video_id`` (rules in the module docstring), or ``None`` when absent."""
        key = check_video_id(video_id)
        stem, ext = split_video_extension(key, self.extensions)
        candidates = self._by_name.get(key) or self._by_stem.get(key)
        if not candidates and ext:
            candidates = self._by_stem.get(stem)
        if not candidates:
            return None
        return self._inside(video_id, candidates[0])

    def _inside(self, video_id: str, rel: str) -> Path | str:
        if self.is_uri:  # ids are checked: no '..', not absolute, so the key stays under the root's prefix
            return join_uri(self.root, rel)
        path = self.root / rel
        if rel in self._symlinks:  # only symlinks can leave the root: sub-folder links are not walked
            target = os.path.realpath(path)
            if os.path.commonpath([target, self._real_root]) != self._real_root:
                raise UnsafeVideoIdError(
                    video_id, f"{path} is a symlink to {target}, outside the video root {self.root}"
                )
        return path

    def expected(self, video_id: str) -> Path | str:
        """Where the file for ``video_id`` would be: ``<root>/<id>`` or ``<root>/<id><extensions[0]>``."""
        key = check_video_id(video_id)
        stem, ext = split_video_extension(key, self.extensions)
        rel = key if ext and ext.lower() in self.extensions else f"{stem}{self.extensions[0]}"
        return join_uri(self.root, rel) if self.is_uri else self.root / rel

    def resolve(self, video_id: str) -> Resolved:
        """The file found for ``video_id``, or its expected location with ``exists=False``."""
        found = self.find(video_id)
        return Resolved(found, True) if found is not None else Resolved(self.expected(video_id), False)


@lru_cache(maxsize=64)
def _cached_index(root: str, extensions: tuple[str, ...]) -> VideoIndex:
    return VideoIndex(root, extensions)


def video_index(root: str | Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> VideoIndex:
    """The cached :class:`VideoIndex` of ``root`` (listed once per process, root and extension set)."""
    key = root if is_uri(root) else os.path.abspath(root)
    return _cached_index(key, tuple(e.lower() for e in extensions))


def clear_index_cache() -> None:
    """Forget every cached listing (call after adding or removing video files)."""
    _cached_index.cache_clear()


def resolve_video(
    root: str | Path, video_id: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> Path | str:
    """The path of ``video_id`` inside ``root`` (a folder or a URI): the file found, else its expected
    location; a URI string for a URI root. Either is what ``shared.frames.sample_frames`` takes.

    Raises :class:`UnsafeVideoIdError` for ids that would leave ``root``.
    ``video_index(root).resolve(id).exists`` (no request, no stat) tells whether the file is there.
    """
    return video_index(root, extensions).resolve(video_id).path
