"""Writing caption shards: data file first, stats file last, on any pyarrow filesystem.

Public API::

    ShardWriter(out_root, split, shard_index, num_shards, provenance, *, filesystem=None)
        .write(rows)                # CaptionRows, dicts or a SCHEMA table; may be called many times
        .close() -> ShardStats      # checks, writes data/<name>.parquet, then _stats/<name>.json
        context manager: an exception inside the block writes nothing
    write_shard(out_root, split, shard_index, num_shards, rows, provenance, *, filesystem=None) -> ShardStats
    completed_shards(out_root, split, *, num_shards=None, verify=True, filesystem=None) -> dict[int, ShardStats]

Completion protocol (the same on a disk and on an object store, where nothing can be renamed
atomically): the stats file is deleted, the data file is written whole (local disks: temporary name +
rename; object stores: one PUT), then the stats file, holding the data file's sha256, is written. A
shard is complete when its stats file exists and the data file's sha256 matches it, so a crash at
any point leaves either a complete shard or one that :func:`completed_shards` reports as not done.
Rows are sorted by (video_id, frame_pos), so the same rows give the same file.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.shards.layout import (
    DATA_DIR,
    STATS_DIR,
    ShardStats,
    check_split,
    data_location,
    parse_shard_name,
    shard_name,
    stats_location,
)
from shared.shards.provenance import check_provenance
from shared.shards.schema import (
    FOOTER_KEY,
    FORMAT_NAME,
    SCHEMA_VERSION,
    STATUS_OK,
    CaptionSetError,
    check_rows,
    rows_to_table,
)
from shared.shards.shardio import check_positions
from shared.shards.storage import Location, resolve, sha256_hex

logger = logging.getLogger(__name__)


class ShardWriter:
    """Collects the rows of one shard and writes them, complete or not at all, on :meth:`close`."""

    def __init__(
        self, out_root, split: str, shard_index: int, num_shards: int, provenance: dict, *, filesystem=None
    ):
        self.root: Location = resolve(out_root, filesystem)
        self.split = check_split(split)
        self.name = shard_name(split, shard_index, num_shards)
        self.shard_index, self.num_shards = shard_index, num_shards
        self.provenance = check_provenance(provenance, f"{self.root} ({self.name})")
        self._tables: list[pa.Table] = []
        self._closed = False

    def write(self, rows) -> None:
        if self._closed:
            raise RuntimeError(f"{self.name}: write() after close()")
        table = rows_to_table(rows)
        if len(table):
            self._tables.append(table)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True  # nothing written: the shard stays not-done and is redone on resume
            logger.warning("%s: not written because of %s", self.name, exc_type.__name__)

    def close(self) -> ShardStats:
        if self._closed:
            raise RuntimeError(f"{self.name}: close() called twice")
        self._closed = True
        data_loc = data_location(self.root, self.split, self.shard_index, self.num_shards)
        table = self._checked_table(str(data_loc))
        stats = _shard_stats(table, self)
        footer = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "provenance": self.provenance,
            "shard": {k: v for k, v in stats.__dict__.items() if k != "provenance"},
        }
        payload = _parquet_bytes(table, footer)
        stats.sha256, stats.bytes = sha256_hex(payload), len(payload)
        stats_loc = stats_location(self.root, self.split, self.shard_index, self.num_shards)
        stats_loc.delete()  # an old marker must not vouch for the file being replaced
        data_loc.write_bytes(payload)
        stats_loc.write_bytes(stats.to_json().encode())
        logger.info(
            "wrote %s: %d rows, %d videos, %d failed", data_loc, stats.rows, stats.videos, stats.failed_videos
        )
        return stats

    def _checked_table(self, where: str) -> pa.Table:
        table = pa.concat_tables(self._tables) if self._tables else rows_to_table([])
        check_rows(table, where)
        splits = pc.unique(table["split"]).to_pylist()
        if splits and splits != [self.split]:
            raise CaptionSetError(where, f"rows of split(s) {splits} in a shard of split {self.split!r}")
        dataset = self.provenance.get("dataset")
        datasets = pc.unique(table["dataset"]).to_pylist()
        if dataset is not None and datasets and datasets != [dataset]:
            raise CaptionSetError(where, f"rows of dataset(s) {datasets}, provenance says {dataset!r}")
        check_positions(table, self.provenance["sampler"]["num_frames"], where)
        return table.sort_by([("video_id", "ascending"), ("frame_pos", "ascending")])


def write_shard(
    out_root, split: str, shard_index: int, num_shards: int, rows, provenance: dict, *, filesystem=None
) -> ShardStats:
    """Write one whole shard in one call; see :class:`ShardWriter`."""
    writer = ShardWriter(out_root, split, shard_index, num_shards, provenance, filesystem=filesystem)
    writer.write(rows)
    return writer.close()


def _shard_stats(table: pa.Table, writer: ShardWriter) -> ShardStats:
    failed = pc.not_equal(table["status"], STATUS_OK)
    reasons = Counter({k: v for k, v in _value_counts(table["finish_reason"]).items() if k is not None})
    return ShardStats(
        file=f"{DATA_DIR}/{writer.name}",
        split=writer.split,
        shard_index=writer.shard_index,
        num_shards=writer.num_shards,
        rows=len(table),
        videos=pc.count_distinct(table["video_id"]).as_py(),
        failed_rows=pc.sum(failed).as_py() or 0,
        failed_videos=pc.count_distinct(pc.filter(table["video_id"], failed)).as_py(),
        sha256="",
        bytes=0,
        schema_version=SCHEMA_VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        finish_reasons=dict(sorted(reasons.items())),
        provenance=writer.provenance,
    )


def _value_counts(column: pa.ChunkedArray) -> dict:
    counts = pc.value_counts(column.combine_chunks()) if len(column) else []
    return {c["values"].as_py(): c["counts"].as_py() for c in counts}


def _parquet_bytes(table: pa.Table, footer: dict) -> bytes:
    table = table.replace_schema_metadata({FOOTER_KEY: json.dumps(footer, sort_keys=True).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=100_000)
    return sink.getvalue().to_pybytes()


def completed_shards(
    out_root, split: str, *, num_shards: int | None = None, verify: bool = True, filesystem=None
) -> dict[int, ShardStats]:
    """Shards of ``split`` that are done: stats file present and (``verify``) data sha256 matching.

    With ``num_shards`` only that layout counts; without it, finding two layouts is an error.
    """
    root = resolve(out_root, filesystem)
    found: dict[int, ShardStats] = {}
    layouts = set()
    for name in root.join(STATS_DIR).list_names():
        parsed = parse_shard_name(name.removesuffix(".json") + ".parquet") if name.endswith(".json") else None
        if parsed is None or parsed[0] != split or (num_shards is not None and parsed[2] != num_shards):
            continue
        layouts.add(parsed[2])
        stats = _verified_stats(root, *parsed, verify=verify)
        if stats is not None:
            found[parsed[1]] = stats
    if len(layouts) > 1:
        raise CaptionSetError(
            str(root),
            f"split {split!r} has shards of several layouts (of {sorted(layouts)}); pass num_shards",
        )
    return dict(sorted(found.items()))


def _verified_stats(root: Location, split: str, index: int, num: int, *, verify: bool) -> ShardStats | None:
    loc = stats_location(root, split, index, num)
    try:
        stats = ShardStats.from_json(loc.read_bytes(), str(loc))
        if verify:  # the completion protocol: the bytes are the ones the stats file vouches for
            _check_digest(data_location(root, split, index, num), stats)
        elif not data_location(root, split, index, num).exists():
            raise CaptionSetError(str(loc), "data file is missing")
    except (CaptionSetError, OSError) as err:
        logger.warning("shard %s not complete: %s", shard_name(split, index, num), err)
        return None
    return stats


def _check_digest(location: Location, stats: ShardStats) -> None:
    """The data file's sha256 and size equal the stats file's. The file is hashed, not parsed: the writer
    checked its rows before writing it, and resuming must not pay for parsing every finished shard."""
    try:
        data = location.read_bytes()
    except FileNotFoundError as err:
        raise CaptionSetError(str(location), "shard file is missing") from err
    if len(data) != stats.bytes or sha256_hex(data) != stats.sha256:
        raise CaptionSetError(
            str(location),
            "checksum mismatch: the file was changed or truncated after its stats file was written",
        )
