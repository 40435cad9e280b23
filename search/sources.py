"""What an index covers: the video files under some folders, or the videos of a dataset split.

Each file becomes a :class:`VideoFile` with its identity (root, relative path, size, modification time and,
for datasets, the windows the annotations ask for). A re-run keeps the rows of files whose identity is
unchanged and encodes the others. Files are listed recursively; symlinked folders are not followed and a
symlinked file whose target leaves its root is skipped (and reported). A root may also be an object-store
URI (``s3://bucket/videos?endpoint_override=...``, ``shared.video_source``): it is listed once, and its
objects' sizes and modification times are their identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from shared.datasets import VideoItem
from shared.errors import DiscoVLAError
from shared.frames import VideoDecodeError
from shared.paths import VIDEO_EXTENSIONS
from shared.storage_errors import display_uri
from shared.video_source import is_uri, join_uri, list_objects, relative_key

logger = logging.getLogger(__name__)

MIN_TAIL_S = 0.5  # a last window shorter than this is dropped (it is covered by the previous one's frames)


class NoVideosError(DiscoVLAError, ValueError):
    """Nothing to index: no video files under the given folders, or no videos in the split."""


@dataclass(frozen=True)
class VideoFile:
    """One video file to index; ``windows`` are fixed ``(video_id, start, end)`` (datasets) or None."""

    root: str  # the indexed root folder, absolute, or a URI
    rel_path: str  # POSIX path relative to the root
    size: int
    mtime_ns: int
    windows: tuple[tuple[str, float | None, float | None], ...] | None = None

    @property
    def path(self) -> str:
        return join_uri(self.root, self.rel_path)  # a local path, or inside the URI before its query

    @property
    def key(self) -> str:
        """The identity a re-run compares: root, relative path, size, mtime and the dataset's windows."""
        spec = [self.root, self.rel_path, self.size, self.mtime_ns, self.windows]
        return hashlib.sha1(json.dumps(spec).encode()).hexdigest()

    def record(self, reason: str) -> dict:
        """A skipped-file record (kept in the manifest; the file is retried once it changes)."""
        return {
            "path": self.path,
            "rel_path": self.rel_path,
            "root": self.root,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "key": self.key,
            "reason": reason,
        }


def _stat(root: str, rel: str) -> tuple[int, int]:
    st = os.stat(os.path.join(root, rel))
    return st.st_size, st.st_mtime_ns


def _inside(root: str, path: str) -> bool:
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def list_folders(
    roots: list[str | Path], extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> tuple[list[VideoFile], list[str]]:
    """Every video file under ``roots`` (sorted), and the roots as absolute paths.

    Raises ``FileNotFoundError`` for a root that is not a folder and :class:`NoVideosError` when no root
    holds a file with one of ``extensions``.
    """
    files, absolute = [], []
    wanted = {e.lower() for e in extensions}
    for root in roots:
        if is_uri(root):
            absolute.append(display_uri(root))
            files += _list_objects(absolute[-1], wanted)
            continue
        root = os.path.abspath(os.path.expanduser(str(root)))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{root}: not a folder; --videos takes folders of video files")
        absolute.append(root)
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith(".") or os.path.splitext(name)[1].lower() not in wanted:
                    continue
                path = os.path.join(folder, name)
                rel = Path(os.path.relpath(path, root)).as_posix()
                if not _inside(root, path):
                    logger.warning("%s: a symlink whose target leaves %s; skipped", path, root)
                    continue
                try:
                    size, mtime = _stat(root, rel)
                except OSError as err:
                    logger.warning("%s: cannot stat (%s); skipped", path, err)
                    continue
                files.append(VideoFile(root, rel, size, mtime))
    if not files:
        raise NoVideosError(
            f"no video files ({', '.join(sorted(wanted))}) under {', '.join(absolute)}: nothing to index"
        )
    return files, absolute


def _list_objects(root: str, wanted: set[str]) -> list[VideoFile]:
    """The video objects under a URI root (hidden names skipped, as in folders), sorted."""
    return [
        VideoFile(root, rel, size, mtime)
        for rel, (size, mtime) in sorted(list_objects(root).items())
        if not any(part.startswith(".") for part in rel.split("/"))
        and os.path.splitext(rel)[1].lower() in wanted
    ]


def list_dataset(
    name: str, split: str, annotations=None, video_root=None
) -> tuple[list[VideoFile], list[str], list[dict]]:
    """The distinct videos (windows) of a dataset split, grouped by file, in the evaluator's column order.

    Returns ``(files, [video root], skipped records of missing files)``.
    """
    from shared.datasets import get_dataset
    from training.evaluate import video_columns

    source = get_dataset(name, split, annotations, video_root)
    items = source.items()
    uri_root = is_uri(source.video_root)
    root = display_uri(source.video_root) if uri_root else os.path.abspath(str(source.video_root))
    objects = list_objects(root) if uri_root else {}
    columns, _ = video_columns(items)
    windows: dict[str, list] = {}
    for row in columns:
        item = items[row]
        windows.setdefault(str(item.path), []).append((item.video_id, item.start, item.end))
    files, skipped = [], []
    for path, wins in windows.items():
        rel = relative_key(root, path) if uri_root else Path(os.path.relpath(path, root)).as_posix()
        if not (rel in objects if uri_root else os.path.isfile(path)):
            skipped.append(VideoFile(root, rel, -1, -1, tuple(wins)).record("file not found"))
            continue
        size, mtime = objects[rel] if uri_root else _stat(root, rel)
        files.append(VideoFile(root, rel, size, mtime, tuple(wins)))
    if not files:
        raise NoVideosError(f"dataset {name}/{split}: none of its {len(windows)} videos exist under {root}")
    return files, [root], skipped


def plan_items(
    file: VideoFile, window_s: float | None, timeout_s: float | None = 60.0
) -> tuple[list[VideoItem], list[float | None]]:
    """The ``VideoItem`` s of one file and their video durations (None when not probed).

    A folder file is one whole-video item (id = its relative path); a dataset file has the items of its
    annotations. With ``window_s``, every whole-video item longer than that becomes one item per window
    ``[k·w, min((k+1)·w, duration)]`` (the duration comes from the container index, no pixels); annotated
    windows stay as they are. Raises ``VideoDecodeError`` when the file cannot be probed.
    """

    def item(video_id, start, end):
        path = file.path if is_uri(file.path) else Path(file.path)
        return VideoItem(video_id, path, start, end, "", "index", video_id, True)

    wanted = file.windows if file.windows is not None else ((file.rel_path, None, None),)
    if not window_s or all(start is not None for _, start, _ in wanted):
        return [item(*w) for w in wanted], [None] * len(wanted)
    from shared.frames import plan_frames

    plan = plan_frames(file.path, 1, timeout_s=timeout_s)
    duration = plan.n_video_frames / plan.fps
    if not math.isfinite(duration) or duration <= 0:
        raise VideoDecodeError(file.path, f"duration {duration} s")
    items = []
    for video_id, start, end in wanted:
        if start is not None or duration <= window_s:
            items.append(item(video_id, start, end))
            continue
        starts = [k * window_s for k in range(math.ceil(duration / window_s))]
        starts = [s for s in starts if s == 0 or duration - s >= MIN_TAIL_S]
        items += [item(video_id, float(s), float(min(s + window_s, duration))) for s in starts]
    return items, [duration] * len(items)
