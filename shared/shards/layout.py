"""The layout of a caption set on any filesystem, and the per-shard stats file.

::

    <root>/manifest.json                               every shard, its rows and sha256, the provenance
    <root>/data/<split>-NNNNN-of-NNNNN.parquet         the rows (schema v1), provenance in the footer
    <root>/_stats/<split>-NNNNN-of-NNNNN.json          written after the data file: the completion marker

Only Parquet files live under ``data/``, so ``pandas.read_parquet("<root>/data")``, Polars, DuckDB
(``'<root>/data/*.parquet'``) and ``datasets.load_dataset("<root>")`` (which infers the splits from the
file names) read the shards unchanged; ``_stats`` starts with ``_`` so directory readers skip it.

Public API::

    DATA_DIR, STATS_DIR, MANIFEST_NAME
    shard_name(split, shard_index, num_shards) -> str
    parse_shard_name(name) -> (split, shard_index, num_shards) | None
    ShardStats (dataclass) ; ShardStats.from_json(text, where) ; .to_json()
    stats_location(root, split, shard_index, num_shards) ; data_location(...)
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields

from shared.shards.schema import CaptionSetError
from shared.shards.storage import Location

DATA_DIR = "data"
STATS_DIR = "_stats"
MANIFEST_NAME = "manifest.json"
MAX_SHARDS = 99_999
_SPLIT = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_]{1,64})-(?P<index>\d{5})-of-(?P<num>\d{5})\.parquet$")


def check_split(split: str) -> str:
    if not isinstance(split, str) or not _SPLIT.match(split):
        raise ValueError(f"split must be 1-64 letters, digits or '_' (it names files), got {split!r}")
    return split


def shard_name(split: str, shard_index: int, num_shards: int) -> str:
    """``<split>-NNNNN-of-NNNNN.parquet``: deterministic, so a re-run overwrites rather than duplicates."""
    check_split(split)
    if not 1 <= num_shards <= MAX_SHARDS or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"need 0 <= shard_index < num_shards <= {MAX_SHARDS}, got {shard_index} of {num_shards}"
        )
    return f"{split}-{shard_index:05d}-of-{num_shards:05d}.parquet"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    match = _SHARD.match(name)
    if not match:
        return None
    index, num = int(match["index"]), int(match["num"])
    return (match["split"], index, num) if index < num else None


def data_location(root: Location, split: str, shard_index: int, num_shards: int) -> Location:
    return root.join(DATA_DIR, shard_name(split, shard_index, num_shards))


def stats_location(root: Location, split: str, shard_index: int, num_shards: int) -> Location:
    return root.join(STATS_DIR, shard_name(split, shard_index, num_shards).replace(".parquet", ".json"))


@dataclass
class ShardStats:
    """What one finished shard holds; its file is the shard's completion marker."""

    file: str  # relative to the caption-set root, e.g. "data/test-00000-of-00004.parquet"
    split: str
    shard_index: int
    num_shards: int
    rows: int
    videos: int
    failed_rows: int
    failed_videos: int
    sha256: str  # of the whole data file
    bytes: int
    schema_version: int
    created_at: str
    finish_reasons: dict = field(default_factory=dict)  # reason -> rows, e.g. {"stop": 110, "length": 2}
    provenance: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> ShardStats:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            raise CaptionSetError(where, f"stats file is not JSON: {err}") from err
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not names <= set(data):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise CaptionSetError(where, f"stats file lacks keys; expected {sorted(names)}, got {got}")
        return cls(**{k: data[k] for k in names})
