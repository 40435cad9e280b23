"""Reading a caption set into what the trainer needs: video_id -> F captions in frame_pos order.

Public API::

    load_caption_set(path_or_uri, *, split=None, expect_sampler=None, num_frames=None,
                     filesystem=None, verify=True, allow_incomplete=False) -> CaptionSet
    read_caption_rows(path_or_uri, *, split=None, filesystem=None, verify=True,
                      allow_incomplete=False) -> CaptionRows   # all rows, checked, for the tools
    CaptionSet(captions, failed, provenance, num_frames, source, splits)

``path_or_uri``: a caption-set root, its ``manifest.json``, or one shard ``.parquet``; local, ``s3://``,
``gs://`` or a path in ``filesystem``.

A set is read through its ``manifest.json``, which its writer (a caption run, ``merge``,
``write-manifest``) writes after the last shard: a root without one is being written or was not
finished, and is refused with the message ``validate`` gives for it (``read_manifest``'s: how to write
the manifest when the shards are done), so the loader and ``validate`` accept and refuse the same
folders. Only ``allow_incomplete=True`` (the inspection tools: ``info``, ``view``) reads the finished
shards of a root without a manifest, from their stats files.
Every problem raises :class:`CaptionSetError` naming the file: a manifest that disagrees with itself
(an entry removed, counts edited: ``manifest.check_consistency``), a file that is not the one its
entry describes (size, rows, videos, failures, split, index), unknown schema version, wrong column
types, checksum mismatch, duplicate (video_id, frame_pos), missing positions, a video in two splits,
shards with different provenance, and a frame sampler that differs from ``expect_sampler`` (the
trainer's ``SamplerConfig(...).provenance()``) or ``num_frames``. A set is whole or refused: with
``allow_incomplete=False`` (the default) every split read must have all its shards. The work is vectorised Arrow (one concat,
one group-by, one sort); the captions stay in Arrow (``shared.shards.caption_table.CaptionTable``: sorted
ids and one caption column, each video's F strings built on access), so a million videos fit in a rank.

``captions`` holds the videos whose F rows are all ``ok``; videos with any failed row are in ``failed``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from shared.shards.caption_table import CaptionTable
from shared.shards.layout import DATA_DIR, MANIFEST_NAME, STATS_DIR, ShardStats, parse_shard_name
from shared.shards.manifest import check_shard_matches, read_manifest
from shared.shards.provenance import check_compatible, check_provenance, check_sampler
from shared.shards.schema import STATUS_OK, CaptionSetError
from shared.shards.shardio import check_one_split_per_video, check_positions, read_shard
from shared.shards.storage import Location, resolve
from shared.storage_errors import bucket_missing, storage_error_reason

logger = logging.getLogger(__name__)


@dataclass
class CaptionRows:
    """Every row of a caption set, checked; ``table`` has SCHEMA's columns plus ``_file`` (index into files)."""

    table: pa.Table
    provenance: dict
    files: list[str]
    source: str

    @property
    def num_frames(self) -> int:
        return self.provenance["sampler"]["num_frames"]


@dataclass
class CaptionSet:
    captions: CaptionTable  # video_id -> F captions (read-only Mapping), position f = sampled frame f
    failed: set[str]  # videos with at least one failed frame (not in captions)
    provenance: dict
    num_frames: int
    source: str
    splits: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def _with_system_allocator(load):
    """Run ``load`` with Arrow allocating from malloc: the reading's temporaries then go back to the system
    when freed (mimalloc, Arrow's default, kept ~1.7x the captions' bytes per process after loading)."""

    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        previous = pa.default_memory_pool()
        pa.set_memory_pool(pa.system_memory_pool())
        try:
            return load(*args, **kwargs)
        finally:
            pa.set_memory_pool(previous)

    return wrapper


@_with_system_allocator
def load_caption_set(
    path_or_uri,
    *,
    split: str | None = None,
    expect_sampler: dict | None = None,
    num_frames: int | None = None,
    filesystem=None,
    verify: bool = True,
    allow_incomplete: bool = False,
) -> CaptionSet:
    """Load and check a caption set; see the module docstring."""
    rows = read_caption_rows(
        path_or_uri, split=split, filesystem=filesystem, verify=verify, allow_incomplete=allow_incomplete
    )
    check_sampler(rows.provenance, expect_sampler, rows.source, num_frames=num_frames)
    table, F, provenance, source = rows.table, rows.num_frames, rows.provenance, rows.source
    failed_ids = pc.unique(pc.filter(table["video_id"], pc.not_equal(table["status"], STATUS_OK)))
    splits = pc.unique(table["split"]).to_pylist()
    ok = table.select(["video_id", "frame_pos", "caption"])  # the three columns kept, before any copy
    del table, rows  # the other columns are freed here: the peak is the read table plus these copies
    if len(failed_ids):
        ok = ok.filter(pc.invert(pc.is_in(ok["video_id"], value_set=failed_ids)))
    if not _in_order(ok):  # shards of a caption run are: no copy then
        ok = ok.sort_by([("video_id", "ascending"), ("frame_pos", "ascending")])
    captions = CaptionTable.from_sorted_rows(ok["video_id"], ok["caption"], F)
    del ok
    pa.default_memory_pool().release_unused()  # the read's freed pages back to the system, not kept per rank
    logger.info("loaded %s: %d videos x %d captions, %d failed", source, len(captions), F, len(failed_ids))
    return CaptionSet(captions, set(failed_ids.to_pylist()), provenance, F, source, sorted(splits))


def _in_order(rows: pa.Table) -> bool:
    """Whether ``rows`` are sorted by (video_id, frame_pos), checked without copying them."""
    n = len(rows)
    if n < 2:
        return True
    ids, pos = rows["video_id"], rows["frame_pos"]
    before, after = ids.slice(0, n - 1), ids.slice(1)
    same_video_next_pos = pc.and_(pc.equal(before, after), pc.less(pos.slice(0, n - 1), pos.slice(1)))
    return bool(pc.all(pc.or_(pc.less(before, after), same_video_next_pos)).as_py())


def read_caption_rows(
    path_or_uri,
    *,
    split: str | None = None,
    filesystem=None,
    verify: bool = True,
    allow_incomplete: bool = False,
) -> CaptionRows:
    """All rows of a caption set (or one split), every file and the whole set checked."""
    loc = resolve(path_or_uri, filesystem)
    try:
        return _read_caption_rows(loc, split, verify, allow_incomplete)
    except OSError as err:  # storage, not data: a missing bucket, denied access, an unreachable endpoint
        raise storage_failure(path_or_uri, loc, err) from err


def storage_failure(given, loc: Location, err: OSError) -> CaptionSetError:
    """``err`` from reading the set at ``loc`` as one line (``shared.storage_errors``) naming it."""
    uri = given if isinstance(given, str) and "://" in given else loc.uri
    return CaptionSetError(str(loc), storage_error_reason(uri, err, loc.fs))


def check_bucket(given, root: Location) -> None:
    """A set whose manifest is absent because its bucket is: say so, not "being written"."""
    uri = given if isinstance(given, str) and "://" in given else root.uri
    if bucket_missing(uri, root.fs):
        raise CaptionSetError(str(root), storage_error_reason(uri, FileNotFoundError(root.path), root.fs))


def _read_caption_rows(loc: Location, split, verify: bool, allow_incomplete: bool) -> CaptionRows:
    if loc.name.endswith(".parquet"):
        files, entries, provenance = [loc], [None], None
    else:
        root = loc.parent() if loc.name == MANIFEST_NAME else loc
        files, entries, provenance, described_by = _shard_files(root, split, allow_incomplete)
    tables = []
    for i, (file, entry) in enumerate(zip(files, entries, strict=True)):
        shard = read_shard(file, expect_sha256=entry["sha256"] if entry is not None and verify else None)
        if entry is not None:
            check_shard_matches(entry, shard, str(file), described_by=described_by)
        file_prov = check_provenance(shard.footer.get("provenance"), str(file))
        if provenance is None:
            provenance = file_prov
        check_compatible(provenance, file_prov, where=f"{file} vs the caption set")
        table = shard.table
        if split is not None and entry is None:  # a lone shard file: keep the rows of the split asked for
            table = table.filter(pc.equal(table["split"], split))
        tables.append(table.append_column("_file", pa.array([i] * len(table), pa.int32())))
    if not tables:
        raise CaptionSetError(str(loc), f"no shards{f' of split {split!r}' if split else ''} found")
    table = pa.concat_tables(tables)
    names = [str(f) for f in files]
    check_one_split_per_video(table, str(loc), names)
    check_positions(table, provenance["sampler"]["num_frames"], str(loc), names)
    return CaptionRows(table, provenance, names, str(loc))


def _shard_files(root: Location, split: str | None, allow_incomplete: bool):
    """(files, their manifest entries or stats, provenance, which describes them): from the manifest, or
    from the _stats files without one."""
    if root.join(MANIFEST_NAME).exists():
        manifest = read_manifest(root)
        splits = manifest["splits"]
        if split is not None and split not in splits:
            raise CaptionSetError(str(root), f"no split {split!r}; the manifest has {sorted(splits)}")
        for name, info in splits.items():
            if (split in (None, name)) and not info["complete"] and not allow_incomplete:
                raise CaptionSetError(
                    str(root),
                    f"split {name!r} lacks shards {info['missing_shards'][:10]} "
                    "(pass allow_incomplete=True to load it anyway)",
                )
        entries = [e for e in manifest["shards"] if split in (None, e["split"])]
        files = [root.join(*e["file"].split("/")) for e in entries]
        return files, entries, manifest["provenance"], "the manifest"
    if not allow_incomplete:
        check_bucket(root.uri, root)
        read_manifest(root)  # raises the "no manifest.json: being written or unfinished" error of validate
    logger.warning("%s: no manifest.json; reading the shards that have a stats file", root)
    names = [n for n in root.join(DATA_DIR).list_names() if parse_shard_name(n)]
    names = [n for n in names if split in (None, parse_shard_name(n)[0])]
    done = set(root.join(STATS_DIR).list_names())
    unfinished = [n for n in names if n.replace(".parquet", ".json") not in done]
    if unfinished or _missing_shards(names):
        logger.warning("%s: reading the finished shards only (unfinished: %s)", root, unfinished[:5])
    names = [n for n in names if n not in unfinished]
    return [root.join(DATA_DIR, n) for n in names], [_stats(root, n) for n in names], None, "its stats file"


def _stats(root: Location, name: str) -> dict:
    loc = root.join(STATS_DIR, name.replace(".parquet", ".json"))
    return ShardStats.from_json(loc.read_bytes(), str(loc)).__dict__


def _missing_shards(names: list[str]) -> list[str]:
    """Shard names absent from each split's NNNNN-of-NNNNN sequence."""
    present = {parse_shard_name(n) for n in names}
    layouts = {(s, num) for s, _, num in present}
    return [
        f"{s}-{i:05d}-of-{num:05d}"
        for s, num in sorted(layouts)
        for i in range(num)
        if (s, i, num) not in present
    ]
