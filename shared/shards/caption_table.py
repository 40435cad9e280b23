"""The captions of a caption set held in Arrow, looked up by video id: what ``CaptionSet.captions`` is.

::

    table = CaptionTable.from_sorted_rows(video_id, caption, num_frames)   # rows sorted by (video_id, frame_pos)
    table["video7010"]        # -> its F captions (list of str), position f = sampled frame f
    "video7010" in table, len(table), list(table)                         # ids in sorted order

Two Arrow arrays and nothing per video in Python: the sorted unique video ids (``string``), and the
caption column as read (chunked: one chunk per shard, no copy), video ``i``'s F captions at rows
``i*F .. i*F+F-1`` counted over the chunks. A lookup is a binary search over the ids (their UTF-8 byte
order is Python's ``str`` order) and builds the F Python strings of that one video on access. A dict of Python strings costs about 10x the captions' own
bytes (an object per string, a list per video, the dict); this costs the bytes plus 4-8 bytes per row.
It is read-only and behaves as a ``Mapping[str, list[str]]`` in sorted id order, the order of the dict
it replaces.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping

import pyarrow as pa


class _SortedIds:
    """The id array as a sequence of ``str`` for :mod:`bisect` (one scalar built per probe)."""

    def __init__(self, ids: pa.Array):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> str:
        return self.ids[i].as_py()


class CaptionTable(Mapping):
    """``video_id -> [F captions]`` over two Arrow arrays; see the module docstring."""

    def __init__(self, video_ids: pa.Array, captions: pa.ChunkedArray, num_frames: int):
        if len(captions) != len(video_ids) * num_frames:
            raise ValueError(
                f"{len(captions)} captions for {len(video_ids)} videos x {num_frames} frames; "
                "expected F captions per video"
            )
        if isinstance(captions, pa.Array):
            captions = pa.chunked_array([captions])
        if any(len(chunk) % num_frames for chunk in captions.chunks):  # a video across two chunks
            captions = pa.chunked_array([_contiguous(captions, pa.large_string())])
        self.video_ids, self.captions, self.num_frames = video_ids, captions, num_frames
        self._search = _SortedIds(video_ids)
        self._chunk_starts = [0]  # first video of each chunk
        for chunk in captions.chunks:
            self._chunk_starts.append(self._chunk_starts[-1] + len(chunk) // num_frames)

    @classmethod
    def from_sorted_rows(cls, video_id, caption, num_frames: int) -> CaptionTable:
        """From row columns sorted by ``(video_id, frame_pos)`` with exactly F rows per video (Arrow arrays
        or chunked arrays): keeps every F-th id, and the caption column's own chunks (no copy) when no
        video spans two of them (one shard's rows are a chunk when read)."""
        rows = len(caption)
        ids = video_id.take(pa.array(range(0, rows, num_frames), pa.int64()))
        return cls(_contiguous(ids, pa.string()), caption, num_frames)

    def _index(self, video_id) -> int:
        """Position of ``video_id`` among the sorted ids, or -1."""
        if not isinstance(video_id, str):
            return -1
        i = bisect.bisect_left(self._search, video_id)
        return i if i < len(self.video_ids) and self._search[i] == video_id else -1

    def __getitem__(self, video_id: str) -> list[str]:
        i = self._index(video_id)
        if i < 0:
            raise KeyError(video_id)
        c = bisect.bisect_right(self._chunk_starts, i) - 1
        start = (i - self._chunk_starts[c]) * self.num_frames
        return self.captions.chunk(c).slice(start, self.num_frames).to_pylist()

    def __contains__(self, video_id) -> bool:
        return self._index(video_id) >= 0

    def __len__(self) -> int:
        return len(self.video_ids)

    def __iter__(self) -> Iterator[str]:
        step = 65536  # ids turned into Python strings a slice at a time
        for start in range(0, len(self.video_ids), step):
            yield from self.video_ids.slice(start, step).to_pylist()

    @property
    def nbytes(self) -> int:
        """Bytes held by the Arrow arrays."""
        return self.video_ids.nbytes + self.captions.nbytes


def _contiguous(column, kind: pa.DataType) -> pa.Array:
    """``column`` as one Arrow array of type ``kind`` (large_string: no 2 GiB offset limit)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.cast(kind).combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column.cast(kind) if column.type != kind else column
