"""Merging caption sets from several runs or teams into one new caption set.

Public API::

    merge_caption_sets(inputs, out_root, *, num_shards=1, allow_mismatch=(), filesystem=None) -> dict

Rules:

- Every input is read and checked in full (checksums, schema, positions) before anything is written.
- Provenance must be compatible (same model, prompt, sampler, ...: ``COMPATIBILITY_KEYS``); keys named in
  ``allow_mismatch`` (or every key, with ``allow_mismatch=True``) are exempt. The frame sampler's F must
  always agree. The merged provenance is the first input's, plus ``merged_from`` (each input's source,
  model, prompt sha256 and created_at) and ``merge_mismatch`` (the exempted keys that differed).
- One row per (split, video_id, frame_pos), chosen per *video* so a video's F captions come from one run:
  the first input (in argument order) where all the video's frames are ok, else the first input that
  has the video.
- The merged result is checked with the rules of ``validate`` and the trainer's loader before
  anything is written: row values, one dataset, each video in one split (two splits of a benchmark
  often overlap: MSRVTT's train7k videos are all in train9k), positions 0..F-1 once per video. A
  refusal names the videos and the inputs holding them, and writes nothing. After writing, the output
  is validated once more.
- The output directory must be new or empty and must not be an input: inputs are only read, so a
  failed merge leaves them untouched (and leaves an output without ``manifest.json``).
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from shared.shards.layout import DATA_DIR, MANIFEST_NAME, STATS_DIR
from shared.shards.manifest import write_manifest
from shared.shards.provenance import COMPATIBILITY_KEYS, check_compatible, check_sampler
from shared.shards.reader import CaptionRows, read_caption_rows
from shared.shards.schema import SCHEMA, STATUS_OK, CaptionSetError, check_rows
from shared.shards.shardio import check_one_split_per_video, check_positions
from shared.shards.storage import Location, resolve
from shared.shards.validate import validate_caption_set
from shared.shards.writer import write_shard

logger = logging.getLogger(__name__)


def merge_caption_sets(inputs, out_root, *, num_shards: int = 1, allow_mismatch=(), filesystem=None) -> dict:
    """Merge ``inputs`` (roots, manifests or shard files) into ``out_root``; returns the new manifest."""
    if not inputs:
        raise ValueError("merge needs at least one input caption set")
    out = resolve(out_root, filesystem)
    sources = [resolve(i, filesystem) for i in inputs]
    _check_output(out, sources)
    rows = [read_caption_rows(src, allow_incomplete=False) for src in sources]
    provenance = _merged_provenance(rows, allow_mismatch)
    table = _pick_rows(rows)
    _check_result(table, provenance, [r.source for r in rows], f"merge into {out}")
    table = table.drop_columns(["_file"])
    for split in pc.unique(table["split"]).to_pylist():
        part = table.filter(pc.equal(table["split"], split))
        ids = pc.unique(part["video_id"]).sort()  # contiguous, sorted chunks of videos per shard
        for index in range(num_shards):
            chunk = ids[len(ids) * index // num_shards : len(ids) * (index + 1) // num_shards]
            write_shard(
                out,
                split,
                index,
                num_shards,
                part.filter(pc.is_in(part["video_id"], value_set=chunk)),
                provenance,
            )
    manifest = write_manifest(out)
    report = validate_caption_set(out)
    if not report.ok:  # the checks above make this unreachable; never hand over a set validate refuses
        raise CaptionSetError(
            str(out), "the merged set fails validation: " + "; ".join(map(str, report.findings))
        )
    logger.info("merged %d caption sets into %s: %d rows", len(rows), out, len(table))
    return manifest


def _check_output(out: Location, sources: list[Location]) -> None:
    for src in sources:
        src_root = src.parent() if src.name == MANIFEST_NAME else src
        if src.fs.type_name == out.fs.type_name and _inside(out.path, src_root.path):
            raise CaptionSetError(
                str(out), f"the merge output is (inside) the input {src}; choose a new directory"
            )
        if src.fs.type_name == out.fs.type_name and _inside(src_root.path, out.path):
            raise CaptionSetError(
                str(out), f"the input {src} lies inside the merge output; choose a new directory"
            )
    for name in (MANIFEST_NAME, DATA_DIR, STATS_DIR):
        if out.join(name).exists():
            raise CaptionSetError(
                str(out), f"output already holds {name}; merge writes a new caption set only"
            )


def _inside(path: str, parent: str) -> bool:
    path, parent = path.rstrip("/"), parent.rstrip("/")
    return path == parent or path.startswith(parent + "/")


def _merged_provenance(rows: list[CaptionRows], allow_mismatch) -> dict:
    first = rows[0].provenance
    ignore = tuple(COMPATIBILITY_KEYS) if allow_mismatch is True else tuple(allow_mismatch or ())
    differing: set[str] = set()
    for other in rows[1:]:
        check_sampler(other.provenance, None, other.source, num_frames=rows[0].num_frames)
        check_compatible(first, other.provenance, ignore=ignore, where=f"{rows[0].source} vs {other.source}")
        differing |= {k for k in ignore if first.get(k) != other.provenance.get(k)}
    if differing:
        logger.warning("merging despite different %s (allowed)", sorted(differing))
    merged_from = [
        {"source": r.source, **{k: r.provenance.get(k) for k in ("model", "prompt_sha256", "created_at")}}
        for r in rows
    ]
    return {**first, "merged_from": merged_from, "merge_mismatch": sorted(differing)}


def _pick_rows(rows: list[CaptionRows]) -> pa.Table:
    """Per (split, video_id): rank = input index, plus len(inputs) if any frame failed; keep the lowest."""
    n = len(rows)
    tables = []
    for i, r in enumerate(rows):
        t = r.table.drop_columns(["_file"])
        t = t.append_column("_input", pa.array([i] * len(t), pa.int32()))
        bad = t.group_by(["split", "video_id"]).aggregate([("status", "min"), ("status", "max")])
        bad = bad.append_column(
            "_rank",
            pc.add(
                pc.if_else(
                    pc.and_(pc.equal(bad["status_min"], STATUS_OK), pc.equal(bad["status_max"], STATUS_OK)),
                    0,
                    n,
                ),
                i,
            ),
        )
        tables.append(t.join(bad.select(["split", "video_id", "_rank"]), ["split", "video_id"]))
    table = pa.concat_tables(tables)
    best = table.group_by(["split", "video_id"]).aggregate([("_rank", "min")])
    table = table.join(best, ["split", "video_id"])
    table = table.filter(pc.equal(table["_rank"], table["_rank_min"]))
    return table.select(SCHEMA.names).cast(SCHEMA).append_column("_file", table["_input"])


def _check_result(table: pa.Table, provenance: dict, sources: list[str], where: str) -> None:
    """The merged rows pass what validate and the loader check (``_file`` = the input each row is from)."""
    check_rows(table.drop_columns(["_file"]), where)
    datasets = pc.unique(table["dataset"]).to_pylist()
    if provenance.get("dataset") is not None and datasets != [provenance["dataset"]]:
        raise CaptionSetError(
            where,
            f"rows of datasets {sorted(datasets)} cannot share one caption set "
            f"(its provenance says {provenance['dataset']!r}); merge each dataset apart",
        )
    check_one_split_per_video(table, where, sources)
    check_positions(table, provenance["sampler"]["num_frames"], where, sources)
