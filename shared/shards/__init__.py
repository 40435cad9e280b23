"""Caption-shard format v1: schema, writer, reader, manifest, validation, merge, interop and viewer.

A caption set is a directory (local, ``s3://``, ``gs://``, any pyarrow filesystem)::

    <root>/manifest.json                         every shard with rows + sha256, and the provenance
    <root>/data/<split>-NNNNN-of-NNNNN.parquet   one row per sampled frame (schema v1)
    <root>/_stats/<split>-NNNNN-of-NNNNN.json    per-shard stats; written last = the completion marker

Writer side (the captioning stage)::

    prov = make_provenance(model=..., prompt_text=..., sampler=SamplerConfig(...).provenance(), ...)
    done = completed_shards(root, "test", num_shards=N)           # resume: skip these
    check_compatible(read_manifest(root)["provenance"], prov)     # before adding to an existing set
    write_shard(root, "test", i, N, make_rows(...) + failed_rows(...), prov) -> ShardStats
    write_manifest(root)                                          # after the last shard

Reader side (the trainer)::

    cs = load_caption_set(root, split="train", expect_sampler=SamplerConfig(...).provenance(), num_frames=12)
    cs.captions["video7010"]  # 12 captions in frame_pos order;  cs.failed;  cs.provenance

Every data problem raises :class:`CaptionSetError` (``.where`` names the file). See docs/caption-shards.md.
"""

from shared.shards.layout import DATA_DIR, MANIFEST_NAME, STATS_DIR, ShardStats, parse_shard_name, shard_name
from shared.shards.manifest import read_manifest, write_manifest
from shared.shards.provenance import (
    COMPATIBILITY_KEYS,
    REQUIRED_KEYS,
    IncompatibleProvenanceError,
    check_compatible,
    check_provenance,
    check_sampler,
    make_provenance,
    prompt_sha256,
)
from shared.shards.reader import CaptionRows, CaptionSet, load_caption_set, read_caption_rows
from shared.shards.schema import (
    FOOTER_KEY,
    SCHEMA,
    SCHEMA_VERSION,
    STATUS_FAILED,
    STATUS_OK,
    CaptionRow,
    CaptionSetError,
    failed_rows,
    make_rows,
    rows_to_table,
)
from shared.shards.storage import Location, resolve
from shared.shards.writer import ShardWriter, completed_shards, write_shard

__all__ = [
    "COMPATIBILITY_KEYS",
    "DATA_DIR",
    "FOOTER_KEY",
    "MANIFEST_NAME",
    "REQUIRED_KEYS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STATS_DIR",
    "STATUS_FAILED",
    "STATUS_OK",
    "CaptionRow",
    "CaptionRows",
    "CaptionSet",
    "CaptionSetError",
    "IncompatibleProvenanceError",
    "Location",
    "ShardStats",
    "ShardWriter",
    "check_compatible",
    "check_provenance",
    "check_sampler",
    "completed_shards",
    "failed_rows",
    "load_caption_set",
    "make_provenance",
    "make_rows",
    "parse_shard_name",
    "prompt_sha256",
    "read_caption_rows",
    "read_manifest",
    "resolve",
    "rows_to_table",
    "shard_name",
    "write_manifest",
    "write_shard",
]
