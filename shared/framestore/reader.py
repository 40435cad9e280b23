"""Reading a frame store: video_id -> its F stored frames, one Parquet row-group read per video.

Public API::

    store = FrameStore(root, expect_sampler=SamplerConfig(12).provenance(), short_side=224)
    store.frames(video_id, window) -> np.ndarray [F, H, W, 3] uint8, or None (not stored / other window)
    video_id in store; len(store); store.failed; store.provenance; store.short_side; store.num_frames

Opening reads the manifest and the small index columns of every shard (no pixels) and checks each
data file's size against the manifest (``verify=True`` hashes every file instead: what ``validate``
does). ``expect_sampler`` / ``short_side`` refuse a store made with another frame sampler or
resolution (:class:`FrameStoreError`). Open files are per process, so a store can be handed to
DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared.framestore.codec import Codec
from shared.framestore.provenance import check_for_trainer, check_frame_provenance, check_same_store
from shared.framestore.schema import FOOTER_KEY, INDEX_COLUMNS, FrameStoreError
from shared.framestore.writer import read_frame_manifest
from shared.shards import STATUS_OK, ShardStats, resolve

logger = logging.getLogger(__name__)


class FrameStore:
    """A frame store opened for random access by video id; see the module docstring."""

    def __init__(
        self,
        root,
        *,
        expect_sampler: dict | None = None,
        short_side: int | None = None,
        verify: bool = False,
        filesystem=None,
    ):
        self.root = resolve(root, filesystem)
        manifest = read_frame_manifest(self.root)
        self.provenance = manifest["provenance"]
        self.manifest = manifest
        if expect_sampler is not None or short_side is not None:
            check_for_trainer(
                self.provenance,
                expect_sampler=expect_sampler or {},
                short_side=short_side if short_side is not None else self.short_side,
                where=str(self.root),
            )
        self.codec = Codec.from_provenance(self.provenance["codec"])
        self.files = [self.root.join(*e["file"].split("/")) for e in manifest["shards"]]
        self._index: dict[str, tuple[int, int, float | None, float | None]] = {}
        self.failed: set[str] = set()
        for i, entry in enumerate(manifest["shards"]):
            self._index_shard(i, _entry_stats(entry), verify)
        self._open: dict[int, pq.ParquetFile] = {}
        self._pid = os.getpid()
        logger.info(
            "frame store %s: %d videos (%d failed), short side %d, %s",
            self.root,
            len(self._index),
            len(self.failed),
            self.short_side,
            self.codec.name,
        )

    @property
    def short_side(self) -> int:
        return self.provenance["image"]["short_side"]

    @property
    def num_frames(self) -> int:
        return self.provenance["sampler"]["num_frames"]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._index

    def fingerprint(self) -> str:
        """Identifies the stored pixels (every shard's sha256 and the provenance), for feature caches."""
        import hashlib
        import json

        shards = sorted(e["sha256"] for e in self.manifest["shards"])
        return hashlib.sha256(json.dumps([self.provenance, shards], sort_keys=True).encode()).hexdigest()

    def __getstate__(self) -> dict:  # open files stay in the process that opened them
        return {**self.__dict__, "_open": {}}

    def _index_shard(self, i: int, entry: ShardStats, verify: bool) -> None:
        from shared.framestore.writer import _check_data

        where = str(self.files[i])
        _check_data(self.root, entry, "the manifest", verify)
        parquet = self._parquet(i, fresh=True)
        footer = (parquet.schema_arrow.metadata or {}).get(FOOTER_KEY)
        if footer is None:
            raise FrameStoreError(
                where, f"no {FOOTER_KEY.decode()!r} key in the Parquet footer: not a frame shard"
            )
        import json

        check_same_store(
            self.provenance,
            check_frame_provenance(json.loads(footer).get("provenance"), where),
            f"{where} vs the manifest",
        )
        table = parquet.read(columns=INDEX_COLUMNS)
        F = self.num_frames
        if len(table) % F or parquet.metadata.num_row_groups != len(table) // F:
            raise FrameStoreError(
                where,
                f"{len(table)} rows in {parquet.metadata.num_row_groups} row groups; "
                f"expected one row group of {F} rows per video",
            )
        firsts = table.take(pa.array(range(0, len(table), F), pa.int64()))
        ids, status = firsts["video_id"].to_pylist(), firsts["status"].to_pylist()
        starts, ends = firsts["window_start"].to_pylist(), firsts["window_end"].to_pylist()
        if firsts["frame_pos"].to_pylist() != [0] * len(ids):
            raise FrameStoreError(
                where, "row groups do not start at frame_pos 0: rows are not one video per group"
            )
        for group, (vid, ok, start, end) in enumerate(zip(ids, status, starts, ends, strict=True)):
            if ok != STATUS_OK:
                self.failed.add(vid)
            elif vid not in self._index:
                self._index[vid] = (i, group, start, end)

    def _parquet(self, i: int, fresh: bool = False) -> pq.ParquetFile:
        if os.getpid() != getattr(self, "_pid", None):  # a forked worker: never share file handles
            self._open, self._pid = {}, os.getpid()
        if fresh or i not in self._open:
            loc = self.files[i]
            try:
                handle = pq.ParquetFile(loc.fs.open_input_file(loc.path))
            except (pa.ArrowException, OSError) as err:
                raise FrameStoreError(str(loc), f"not a readable Parquet file ({err})") from err
            if fresh:
                return handle
            self._open[i] = handle
        return self._open[i]

    def frames(self, video_id: str, window=None) -> np.ndarray | None:
        """The F stored frames [F, H, W, 3] uint8 of ``video_id`` sampled from ``window`` (seconds or None);
        None when the store has no such video or holds it for another window."""
        found = self._index.get(video_id)
        if found is None:
            return None
        i, group, start, end = found
        if not _same_window((start, end), window):
            return None
        where = f"{self.files[i]} ({video_id})"
        try:
            rows = self._parquet(i).read_row_group(group, columns=["video_id", "frame", "height", "width"])
        except (pa.ArrowException, OSError) as err:
            raise FrameStoreError(where, f"cannot read the row group ({err})") from err
        if rows["video_id"][0].as_py() != video_id:
            raise FrameStoreError(
                where, "row group holds another video: the file changed after it was indexed"
            )
        heights, widths = rows["height"].to_pylist(), rows["width"].to_pylist()
        try:
            decoded = [
                self.codec.decode(data, h, w)
                for data, h, w in zip(rows["frame"].to_pylist(), heights, widths, strict=True)
            ]
        except ValueError as err:
            raise FrameStoreError(where, f"a stored frame is damaged: {err}") from err
        return np.stack(decoded)


def _same_window(stored: tuple, window) -> bool:
    if window is None or window[0] is None or window[1] is None:
        return stored[0] is None and stored[1] is None
    return (
        stored[0] is not None
        and stored[1] is not None
        and abs(stored[0] - float(window[0])) < 1e-6
        and abs(stored[1] - float(window[1])) < 1e-6
    )


_STATS_DEFAULTS = {"schema_version": 1, "created_at": "", "finish_reasons": {}, "provenance": {}}


def _entry_stats(entry: dict) -> ShardStats:
    """A manifest entry (its fields checked by ``read_frame_manifest``) as :class:`ShardStats`; keys that
    ShardStats does not know (a hand-edited manifest) are ignored, not a ``TypeError``."""
    known = {f.name for f in dataclasses.fields(ShardStats)}
    return ShardStats(**{**_STATS_DEFAULTS, **{k: v for k, v in entry.items() if k in known}})
