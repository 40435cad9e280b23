"""Reading and checking one shard file, and the per-video position checks shared by writer and reader.

Public API::

    read_shard(location, expect_sha256=None) -> Shard(table, footer, sha256, nbytes)
    footer_of(parquet_metadata, where) -> dict          # {"schema_version", "provenance", "shard"}
    check_positions(table, num_frames, where, files=None)
        # no duplicate (video_id, frame_pos); every video has positions 0..F-1
    check_one_split_per_video(table, where, files=None)
        # a video belongs to one split of a caption set (the trainer keys captions by video id)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.shards.schema import FOOTER_KEY, SCHEMA_VERSION, CaptionSetError, check_rows, conform
from shared.shards.storage import Location, sha256_hex


@dataclass
class Shard:
    table: pa.Table  # conformed to SCHEMA and value-checked
    footer: dict
    sha256: str
    nbytes: int


def footer_of(metadata: pq.FileMetaData, where: str) -> dict:
    """The provenance JSON stored under FOOTER_KEY, with its schema version checked."""
    raw = (metadata.metadata or {}).get(FOOTER_KEY)
    if raw is None:
        raise CaptionSetError(
            where, f"no {FOOTER_KEY.decode()!r} key in the Parquet footer: not a discovla caption shard"
        )
    try:
        footer = json.loads(raw)
    except ValueError as err:
        raise CaptionSetError(where, f"footer key {FOOTER_KEY.decode()!r} is not JSON: {err}") from err
    version = footer.get("schema_version") if isinstance(footer, dict) else None
    if version != SCHEMA_VERSION:
        raise CaptionSetError(
            where,
            f"unknown schema version {version!r}; this code reads version {SCHEMA_VERSION} "
            "(upgrade discovla to read newer shards)",
        )
    return footer


def read_shard(location: Location, expect_sha256: str | None = None) -> Shard:
    """Read a whole shard (one read: the bytes are hashed and parsed from memory) and check it."""
    where = str(location)
    try:
        data = location.read_bytes()
    except FileNotFoundError as err:
        raise CaptionSetError(where, "shard file is missing") from err
    except OSError as err:
        raise CaptionSetError(where, f"cannot read shard: {err}") from err
    digest = sha256_hex(data)
    if expect_sha256 is not None and digest != expect_sha256:
        raise CaptionSetError(
            where,
            f"checksum mismatch: sha256 {digest[:12]}..., the manifest/stats say {expect_sha256[:12]}... "
            "(the file was changed or truncated after it was written)",
        )
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        footer = footer_of(parquet.metadata, where)
        table = parquet.read()
    except CaptionSetError:
        raise
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CaptionSetError(where, f"not a readable Parquet file ({type(err).__name__}: {err})") from err
    table = conform(table, where)
    check_rows(table, where)
    return Shard(table, footer, digest, len(data))


def check_positions(table: pa.Table, num_frames: int, where: str, files: list[str] | None = None) -> None:
    """Every video has exactly the positions 0..F-1, each once.

    ``table`` may carry an int32 ``_file`` column (index into ``files``) so errors can name the files.
    Vectorised: one group-by over video_id (count, distinct count, min, max of frame_pos).
    """
    if not len(table):
        return
    stats = table.group_by("video_id").aggregate(
        [("frame_pos", "count"), ("frame_pos", "count_distinct"), ("frame_pos", "min"), ("frame_pos", "max")]
    )
    count, distinct = stats["frame_pos_count"], stats["frame_pos_count_distinct"]
    dup = pc.not_equal(count, distinct)
    if pc.any(dup).as_py():
        videos = pc.filter(stats["video_id"], dup)
        raise CaptionSetError(
            _where(table, videos, where, files),
            f"duplicate (video_id, frame_pos) rows for {pc.sum(dup).as_py()} videos, e.g. "
            f"{videos[:3].to_pylist()}; each position must appear once",
        )
    incomplete = pc.or_(
        pc.not_equal(distinct, num_frames),
        pc.or_(pc.not_equal(stats["frame_pos_min"], 0), pc.not_equal(stats["frame_pos_max"], num_frames - 1)),
    )
    if pc.any(incomplete).as_py():
        bad = stats.filter(incomplete)
        examples = [
            f"{v!r} has {n}"
            for v, n in zip(
                bad["video_id"][:3].to_pylist(), bad["frame_pos_count"][:3].to_pylist(), strict=True
            )
        ]
        raise CaptionSetError(
            _where(table, bad["video_id"], where, files),
            f"missing frame positions for {len(bad)} videos: expected positions 0..{num_frames - 1} "
            f"({num_frames} per video); {', '.join(examples)} rows",
        )


def check_one_split_per_video(table: pa.Table, where: str, files: list[str] | None = None) -> None:
    """Refuse videos whose rows lie in more than one split, naming them and their splits.

    The trainer keys captions by video id, so such a set would hold two caption lists for one key
    (MSRVTT's train7k videos are all in train9k: two splits of one benchmark overlap easily).
    """
    if not len(table):
        return
    stats = table.group_by("video_id").aggregate([("split", "count_distinct")])
    shared = pc.filter(stats["video_id"], pc.greater(stats["split_count_distinct"], 1))
    if not len(shared):
        return
    shared = pa.array(sorted(shared.to_pylist()), pa.string())  # examples in a stable order
    sample = pa.array(shared[:3].to_pylist(), pa.string())
    rows = (
        table.filter(pc.is_in(table["video_id"], value_set=sample))
        .group_by("video_id")
        .aggregate([("split", "distinct")])
    )
    examples = ", ".join(
        f"{v!r} in {sorted(s)}"
        for v, s in sorted(zip(rows["video_id"].to_pylist(), rows["split_distinct"].to_pylist(), strict=True))
    )
    raise CaptionSetError(
        _where(table, shared, where, files),
        f"{len(shared)} videos appear in more than one split, e.g. {examples}; a caption set holds each video "
        "once (the trainer keys captions by video id): keep one of the splits, or make one caption set per split",
    )


def _where(table: pa.Table, videos: pa.Array, where: str, files: list[str] | None) -> str:
    """``where`` plus the files holding rows of ``videos`` when the table knows its files."""
    if files is None or "_file" not in table.column_names:
        return where
    mask = pc.is_in(table["video_id"], value_set=pa.array(videos[:3].to_pylist(), pa.string()))
    idx = np.unique(pc.filter(table["_file"], mask).to_numpy())
    return f"{where} ({', '.join(files[i] for i in idx)})"
