"""Writing frame shards and the store's manifest, with the caption sets' completion protocol.

Public API::

    write_frame_shard(root, split, shard_index, num_shards, tables, provenance, *, filesystem=None) -> ShardStats
    completed_frame_shards(root, split, *, num_shards=None, verify=True, filesystem=None) -> dict[int, ShardStats]
    write_frame_manifest(root, *, filesystem=None, verify=True) -> dict
    read_frame_manifest(root, *, filesystem=None) -> dict

Layout and protocol are those of ``shared.shards`` (same file names, same :class:`ShardStats`): the
old stats file is deleted, the data file is written whole (temporary name + rename on a disk, one PUT
on an object store), then the stats file holding its sha256. A shard counts as done only when its
stats file exists and the data file's sha256 matches. Rows are sorted by (video_id, frame_pos) and
each Parquet row group holds exactly one video (F rows), so a reader fetches one video with one
row-group read. The encoded ``frame`` column is stored uncompressed (JPEG/PNG do not compress further);
the other columns use zstd.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.framestore.provenance import check_frame_provenance, check_same_store
from shared.framestore.schema import FOOTER_KEY, FORMAT_NAME, FRAME_SCHEMA, SCHEMA_VERSION, FrameStoreError
from shared.shards import STATUS_OK, Location, ShardStats, resolve
from shared.shards.layout import (
    DATA_DIR,
    MANIFEST_NAME,
    STATS_DIR,
    check_split,
    data_location,
    parse_shard_name,
    shard_name,
    stats_location,
)
from shared.shards.manifest import SHARD_FIELDS, SHARD_KEYS, SPLIT_FIELDS
from shared.shards.shardio import check_positions
from shared.shards.storage import field_problem, read_json_manifest, sha256_hex

logger = logging.getLogger(__name__)
_COUNT_KEYS = ("rows", "videos", "failed_rows", "failed_videos", "bytes")


def write_frame_shard(
    root, split: str, shard_index: int, num_shards: int, tables, provenance: dict, *, filesystem=None
) -> ShardStats:
    """Write one whole frame shard (``tables``: one or more FRAME_SCHEMA tables), data first, stats last."""
    root = resolve(root, filesystem)
    check_split(split)
    name = shard_name(split, shard_index, num_shards)
    where = f"{root} ({name})"
    provenance = check_frame_provenance(provenance, where)
    tables = [tables] if isinstance(tables, pa.Table) else list(tables)
    table = pa.concat_tables([t.cast(FRAME_SCHEMA) for t in tables]) if tables else FRAME_SCHEMA.empty_table()
    splits = pc.unique(table["split"]).to_pylist()
    if splits and splits != [split]:
        raise FrameStoreError(where, f"rows of split(s) {splits} in a shard of split {split!r}")
    num_frames = provenance["sampler"]["num_frames"]
    check_positions(table, num_frames, where)
    table = table.sort_by([("video_id", "ascending"), ("frame_pos", "ascending")])
    failed = pc.not_equal(table["status"], STATUS_OK)
    stats = ShardStats(
        file=f"{DATA_DIR}/{name}",
        split=split,
        shard_index=shard_index,
        num_shards=num_shards,
        rows=len(table),
        videos=pc.count_distinct(table["video_id"]).as_py() if len(table) else 0,
        failed_rows=pc.sum(failed).as_py() or 0,
        failed_videos=pc.count_distinct(pc.filter(table["video_id"], failed)).as_py() if len(table) else 0,
        sha256="",
        bytes=0,
        schema_version=SCHEMA_VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        provenance=provenance,
    )
    footer = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance,
        "shard": {k: v for k, v in stats.__dict__.items() if k != "provenance"},
    }
    table = table.replace_schema_metadata({FOOTER_KEY: json.dumps(footer, sort_keys=True).encode()})
    sink = pa.BufferOutputStream()
    compression = {c: ("none" if c == "frame" else "zstd") for c in FRAME_SCHEMA.names}
    pq.write_table(table, sink, compression=compression, row_group_size=num_frames)  # one video per group
    payload = sink.getvalue().to_pybytes()
    stats.sha256, stats.bytes = sha256_hex(payload), len(payload)
    stats_loc = stats_location(root, split, shard_index, num_shards)
    stats_loc.delete()  # an old marker must not vouch for the file being replaced
    data_location(root, split, shard_index, num_shards).write_bytes(payload)
    stats_loc.write_bytes(stats.to_json().encode())
    logger.info(
        "wrote %s/%s: %d videos (%d failed), %.1f MB",
        root,
        stats.file,
        stats.videos,
        stats.failed_videos,
        stats.bytes / 1e6,
    )
    return stats


def _stats_files(root: Location) -> list[tuple[str, int, int]]:
    names = root.join(STATS_DIR).list_names()
    parsed = [parse_shard_name(n.removesuffix(".json") + ".parquet") for n in names if n.endswith(".json")]
    return [p for p in parsed if p is not None]


def _check_data(root: Location, stats: ShardStats, where: str, verify: bool) -> None:
    loc = root.join(*stats.file.split("/"))
    if verify:
        try:
            data = loc.read_bytes()
        except FileNotFoundError as err:
            raise FrameStoreError(str(loc), "frame shard is missing") from err
        digest = sha256_hex(data)
        if digest != stats.sha256:
            raise FrameStoreError(
                str(loc),
                f"checksum mismatch: sha256 {digest[:12]}..., {where} says "
                f"{stats.sha256[:12]}... (changed or truncated after it was written)",
            )
        return
    info = root.fs.get_file_info(loc.path)
    if info.size is None:
        raise FrameStoreError(str(loc), "frame shard is missing")
    if info.size != stats.bytes:
        raise FrameStoreError(
            str(loc), f"{info.size} bytes, {where} says {stats.bytes} (truncated or replaced)"
        )


def completed_frame_shards(
    root, split: str, *, num_shards: int | None = None, verify: bool = True, filesystem=None
) -> dict[int, ShardStats]:
    """Shards of ``split`` that are done: stats file present and the data file matching it."""
    root = resolve(root, filesystem)
    done = {}
    for s, index, num in _stats_files(root):
        if s != split or (num_shards is not None and num != num_shards):
            continue
        loc = stats_location(root, s, index, num)
        try:
            stats = ShardStats.from_json(loc.read_bytes(), str(loc))
            _check_data(root, stats, str(loc), verify)
        except (FrameStoreError, OSError) as err:
            logger.warning("frame shard %s not complete: %s", shard_name(s, index, num), err)
            continue
        done[index] = stats
    return dict(sorted(done.items()))


def write_frame_manifest(root, *, filesystem=None, verify: bool = True) -> dict:
    """``manifest.json`` from the finished shards' stats files (provenance must agree across shards)."""
    root = resolve(root, filesystem)
    stats = []
    for s, index, num in _stats_files(root):
        loc = stats_location(root, s, index, num)
        entry = ShardStats.from_json(loc.read_bytes(), str(loc))
        _check_data(root, entry, str(loc), verify)
        stats.append(entry)
    if not stats:
        raise FrameStoreError(
            str(root), "no finished frame shards (no _stats/*.json); nothing to put in a manifest"
        )
    stats.sort(key=lambda st: (st.split, st.shard_index))
    provenance = check_frame_provenance(stats[0].provenance, f"{root}/{stats[0].file}")
    for other in stats[1:]:
        check_same_store(provenance, other.provenance, f"{root}: {stats[0].file} vs {other.file}")
    by_split = defaultdict(list)
    for st in stats:
        by_split[st.split].append(st)
    splits = {}
    for split, items in by_split.items():
        layouts = {st.num_shards for st in items}
        if len(layouts) > 1:
            raise FrameStoreError(
                str(root),
                f"split {split!r} mixes shard layouts {sorted(layouts)}: remove the shards of the old layout",
            )
        num = layouts.pop()
        missing = sorted(set(range(num)) - {st.shard_index for st in items})
        splits[split] = {
            "num_shards": num,
            "complete": not missing,
            "missing_shards": missing,
            **{k: sum(getattr(st, k) for st in items) for k in _COUNT_KEYS},
        }
    manifest = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance,
        "splits": splits,
        "shards": [{k: getattr(st, k) for k in SHARD_KEYS} for st in stats],
    }
    root.join(MANIFEST_NAME).write_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode())
    logger.info("wrote %s: %d frame shards", root.join(MANIFEST_NAME), len(stats))
    return manifest


def read_frame_manifest(root, *, filesystem=None) -> dict:
    """The manifest of a frame store (its root or its manifest.json), checked."""
    loc = resolve(root, filesystem)
    loc = loc if loc.name == MANIFEST_NAME else loc.join(MANIFEST_NAME)
    where = str(loc)
    manifest = read_json_manifest(
        loc,
        FORMAT_NAME,
        FrameStoreError,
        "no manifest.json: not a frame store, or its build did not finish "
        "(re-run python -m pipelines.framestore build)",
    )
    check_frame_provenance(manifest.get("provenance"), where)
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(
        isinstance(e, dict) and set(SHARD_KEYS) <= set(e) for e in shards
    ):
        raise FrameStoreError(where, f'manifest "shards" must be a list of entries with {list(SHARD_KEYS)}')
    problem = next((field_problem(e, SHARD_FIELDS, f"shards[{i}].") for i, e in enumerate(shards)), None)
    splits = manifest.get("splits")
    if problem is None:
        problem = field_problem(manifest, {"splits": dict})
    if problem is None:
        split_fields = {**SPLIT_FIELDS, "bytes": int}
        problem = next((field_problem(v, split_fields, f"splits.{k}.") for k, v in splits.items()), None)
    if problem is not None:
        raise FrameStoreError(where, f"{problem}; rebuild it with python -m pipelines.framestore build")
    for entry in shards:
        file = entry["file"]
        if (
            not isinstance(file, str)
            or parse_shard_name(file.removeprefix(f"{DATA_DIR}/")) is None
            or not file.startswith(f"{DATA_DIR}/")
        ):
            raise FrameStoreError(where, f"shard file {file!r} is not data/<split>-NNNNN-of-NNNNN.parquet")
    return manifest
