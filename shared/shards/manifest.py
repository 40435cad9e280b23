"""``manifest.json``: every shard of a caption set with its row count and sha256, and the provenance.

Public API::

    write_manifest(out_root, *, filesystem=None, verify=True) -> dict
        # built from the _stats files; refuses incompatible provenance or shards failing their checksum
    read_manifest(path_or_uri, *, filesystem=None) -> dict
        # a caption-set root or its manifest.json; raises CaptionSetError when absent, malformed or
        # inconsistent (check_consistency)
    manifest_root(path_or_uri, filesystem=None) -> Location    # the root for either form
    check_consistency(manifest, where)      # every split's entries = its shards 0..N-1, counts add up
    check_shard_matches(entry, shard, where)  # the file is the one the entry (or stats file) describes

A manifest is trusted only when it agrees with itself: each split's entries are exactly its shards
``0..num_shards-1``, its ``complete`` / ``missing_shards`` say so, and its counts are the sums of its
entries. So an entry deleted by hand, or counts edited by hand, is an error for every reader (the
trainer's loader included), never a set that loads with videos silently missing. Each file must then
be the one its entry describes (sha256, size, rows, videos, failed rows and videos, split and index).

Shape::

    {"format": "discovla.captions", "schema_version": 1, "created_at": "...", "provenance": {...},
     "splits": {"test": {"num_shards": 4, "complete": true, "missing_shards": [], "rows": 12000,
                         "videos": 1000, "failed_rows": 12, "failed_videos": 1, "finish_reasons": {...}}},
     "shards": [{"file": "data/test-00000-of-00004.parquet", "split": "test", "shard_index": 0,
                 "num_shards": 4, "rows": 3000, "videos": 250, "failed_rows": 0, "failed_videos": 0,
                 "sha256": "...", "bytes": 123456}, ...]}
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pyarrow.compute as pc

from shared.shards.layout import DATA_DIR, MANIFEST_NAME, STATS_DIR, ShardStats, parse_shard_name
from shared.shards.provenance import check_compatible, check_provenance
from shared.shards.schema import FORMAT_NAME, SCHEMA_VERSION, STATUS_OK, CaptionSetError
from shared.shards.shardio import read_shard
from shared.shards.storage import Location, field_problem, read_json_manifest, resolve

logger = logging.getLogger(__name__)
SHARD_KEYS = (
    "file",
    "split",
    "shard_index",
    "num_shards",
    "rows",
    "videos",
    "failed_rows",
    "failed_videos",
    "sha256",
    "bytes",
)
_COUNT_KEYS = ("rows", "videos", "failed_rows", "failed_videos")
# The types of the fields readers use (shared.shards.storage.field_problem names a wrong one).
SHARD_FIELDS = {k: str if k in ("file", "split", "sha256") else int for k in SHARD_KEYS}
SPLIT_FIELDS = {
    "num_shards": int,
    "complete": bool,
    "missing_shards": list,
    **dict.fromkeys(_COUNT_KEYS, int),
}


def manifest_root(path_or_uri, filesystem=None) -> Location:
    loc = resolve(path_or_uri, filesystem)
    return loc.parent() if loc.name == MANIFEST_NAME else loc


def collect_stats(root: Location, *, verify: bool = True) -> list[ShardStats]:
    """All stats files under ``root``; with ``verify``, each data file must match its sha256."""
    found, bad = [], []
    for name in root.join(STATS_DIR).list_names():
        parsed = parse_shard_name(name.removesuffix(".json") + ".parquet") if name.endswith(".json") else None
        if parsed is None:
            continue
        loc = root.join(STATS_DIR, name)
        try:
            stats = ShardStats.from_json(loc.read_bytes(), str(loc))
            if verify:
                read_shard(root.join(DATA_DIR, name.removesuffix(".json") + ".parquet"), stats.sha256)
            found.append(stats)
        except CaptionSetError as err:
            bad.append(str(err))
    if bad:
        raise CaptionSetError(str(root), f"{len(bad)} shard(s) fail their checks: " + " | ".join(bad[:5]))
    return found


def build_manifest(stats: list[ShardStats], where: str) -> dict:
    """The manifest for ``stats``: provenance compatibility, per-split completeness and counts."""
    if not stats:
        raise CaptionSetError(where, "no finished shards (no _stats/*.json); nothing to put in a manifest")
    stats = sorted(stats, key=lambda s: (s.split, s.shard_index))
    provenance = check_provenance(stats[0].provenance, f"{where}/{stats[0].file}")
    for other in stats[1:]:
        check_compatible(provenance, other.provenance, where=f"{where}: {stats[0].file} vs {other.file}")
    by_split: dict[str, list[ShardStats]] = defaultdict(list)
    for s in stats:
        by_split[s.split].append(s)
    splits = {}
    for split, items in by_split.items():
        layouts = {s.num_shards for s in items}
        if len(layouts) > 1:
            raise CaptionSetError(
                where,
                f"split {split!r} mixes shard layouts {sorted(layouts)}: remove the shards of the old layout",
            )
        num = layouts.pop()
        missing = sorted(set(range(num)) - {s.shard_index for s in items})
        reasons = sum((Counter(s.finish_reasons) for s in items), Counter())
        splits[split] = {
            "num_shards": num,
            "complete": not missing,
            "missing_shards": missing,
            **{k: sum(getattr(s, k) for s in items) for k in _COUNT_KEYS},
            "finish_reasons": dict(sorted(reasons.items())),
        }
        if missing:
            logger.warning("%s: split %r lacks shards %s", where, split, missing[:10])
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance,
        "splits": splits,
        "shards": [{k: getattr(s, k) for k in SHARD_KEYS} for s in stats],
    }


def write_manifest(out_root, *, filesystem=None, verify: bool = True) -> dict:
    """Build the manifest from the finished shards' stats files and write ``<root>/manifest.json``."""
    root = resolve(out_root, filesystem)
    manifest = build_manifest(collect_stats(root, verify=verify), str(root))
    root.join(MANIFEST_NAME).write_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode())
    logger.info("wrote %s: %d shards", root.join(MANIFEST_NAME), len(manifest["shards"]))
    return manifest


def read_manifest(path_or_uri, *, filesystem=None) -> dict:
    """Read and check a manifest (a caption-set root or the manifest file itself)."""
    loc = manifest_root(path_or_uri, filesystem).join(MANIFEST_NAME)
    where = str(loc)
    manifest = read_json_manifest(
        loc,
        FORMAT_NAME,
        CaptionSetError,
        "no manifest.json: the caption set is being written, or the run writing it did not finish (it "
        "writes the manifest after its last shard), so it is refused until then; if that run finished its "
        "shards, write the manifest from their stats files: python -m pipelines.shards write-manifest ROOT",
    )
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CaptionSetError(
            where,
            f"unknown schema version {manifest.get('schema_version')!r}; "
            f"this code reads version {SCHEMA_VERSION}",
        )
    check_provenance(manifest.get("provenance"), where)
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise CaptionSetError(where, 'manifest has no "shards" list')
    for i, entry in enumerate(shards):
        _check_entry(entry, where, i)
    check_consistency(manifest, where)
    return manifest


REBUILD_HINT = (
    "if the shards under data/ are right, rewrite the manifest from their stats files: "
    "python -m pipelines.shards write-manifest ROOT"
)


def check_consistency(manifest: dict, where: str) -> None:
    """Every split's entries cover exactly its shards 0..N-1 once, and its counts are their sums."""
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise CaptionSetError(where, 'manifest has no "splits" object')
    files = Counter(e["file"] for e in manifest["shards"])
    repeated = sorted(f for f, n in files.items() if n > 1)
    if repeated:
        raise CaptionSetError(where, f"shard entries listed twice: {repeated[:5]}")
    by_split: dict[str, list[dict]] = defaultdict(list)
    for entry in manifest["shards"]:
        by_split[entry["split"]].append(entry)
    unknown = sorted(set(by_split) - set(splits))
    if unknown:
        raise CaptionSetError(
            where, f'shard entries of split(s) {unknown} that "splits" does not list; {REBUILD_HINT}'
        )
    for split, info in splits.items():
        _check_split(split, info, by_split.get(split, []), where)


def _check_split(split: str, info, entries: list[dict], where: str) -> None:
    problem = field_problem(info, SPLIT_FIELDS, f"splits.{split}.")
    if problem is not None:
        raise CaptionSetError(where, f"{problem}; {REBUILD_HINT}")
    num = info["num_shards"]
    other_layout = sorted({e["file"] for e in entries if e["num_shards"] != num})
    if other_layout:
        raise CaptionSetError(
            where,
            f"split {split!r} has {num} shards but lists {other_layout[:3]} of another "
            f"layout; {REBUILD_HINT}",
        )
    missing = sorted(set(range(num)) - {e["shard_index"] for e in entries})
    if missing != list(info["missing_shards"]) or info["complete"] != (not missing):
        raise CaptionSetError(
            where,
            f"split {split!r}: the manifest lists shards {sorted(e['shard_index'] for e in entries)[:20]} "
            f"of {num}, so shards {missing[:10]} are missing, but it says complete={info['complete']!r}, "
            f"missing_shards={list(info['missing_shards'])[:10]}: an entry was removed or the split was edited; "
            f"{REBUILD_HINT}",
        )
    wrong = {
        k: (info[k], sum(e[k] for e in entries)) for k in _COUNT_KEYS if info[k] != sum(e[k] for e in entries)
    }
    if wrong:
        detail = "; ".join(f"{k} {a!r}, its shards add up to {b!r}" for k, (a, b) in wrong.items())
        raise CaptionSetError(
            where,
            f"split {split!r}: counts do not add up ({detail}): the manifest was edited; {REBUILD_HINT}",
        )


def check_shard_matches(entry, shard, where: str, *, described_by: str = "the manifest") -> None:
    """``shard`` (a :class:`shared.shards.shardio.Shard`) is the file that ``entry`` (a manifest entry or a
    :class:`ShardStats`) describes: same size, counts, split and index, and every row of that split."""
    get = entry.get if isinstance(entry, dict) else lambda k: getattr(entry, k)
    table = shard.table
    failed = pc.not_equal(table["status"], STATUS_OK)
    actual = {
        "bytes": shard.nbytes,
        "rows": len(table),
        "videos": pc.count_distinct(table["video_id"]).as_py(),
        "failed_rows": pc.sum(failed).as_py() or 0,
        "failed_videos": pc.count_distinct(pc.filter(table["video_id"], failed)).as_py(),
    }
    footer = shard.footer.get("shard") or {}
    for key in ("split", "shard_index", "num_shards"):
        if key in footer:
            actual[key] = footer[key]
    wrong = {k: (get(k), v) for k, v in actual.items() if get(k) != v}
    if wrong:
        detail = "; ".join(
            f"{k}: {described_by} says {a!r}, the file has {b!r}" for k, (a, b) in wrong.items()
        )
        raise CaptionSetError(where, f"the file is not the one {described_by} describes ({detail})")
    splits = pc.unique(table["split"]).to_pylist()
    if splits and splits != [get("split")]:
        raise CaptionSetError(
            where, f"rows of split(s) {sorted(splits)} in a shard of split {get('split')!r}"
        )


def _check_entry(entry, where: str, i: int = 0) -> None:
    if not isinstance(entry, dict) or not set(SHARD_KEYS) <= set(entry):
        raise CaptionSetError(where, f"shard entry {entry!r} lacks keys; expected {list(SHARD_KEYS)}")
    problem = field_problem(entry, SHARD_FIELDS, f"shards[{i}].")
    if problem is not None:
        raise CaptionSetError(where, f"{problem}; {REBUILD_HINT}")
    file = entry["file"]
    parsed = parse_shard_name(file.removeprefix(f"{DATA_DIR}/")) if isinstance(file, str) else None
    if parsed is None or file != f"{DATA_DIR}/{file.removeprefix(f'{DATA_DIR}/')}":
        raise CaptionSetError(where, f"shard file {file!r} is not data/<split>-NNNNN-of-NNNNN.parquet")
    if parsed != (entry["split"], entry["shard_index"], entry["num_shards"]):
        raise CaptionSetError(where, f"shard entry {file!r} disagrees with its split/index/num_shards")
