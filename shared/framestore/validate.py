"""Checking a whole frame store: checksums, footers, schema, positions, and that every frame decodes.

Public API::

    validate_frame_store(root, *, items=None, decode=True, progress=False, filesystem=None) -> FrameStoreReport
    frame_store_info(root, *, filesystem=None) -> FrameStoreReport     # from the manifest alone
    FrameStoreReport(root, provenance, splits, videos, failed_videos, bytes, problems, missing_videos)
        .ok ; .format()

``items`` (a dataset's VideoItems) adds a coverage check: videos of the dataset the store lacks.
Problems are collected per shard (one bad shard does not hide the others); ``ok`` is False if any.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from shared.framestore.codec import Codec
from shared.framestore.provenance import check_frame_provenance, check_same_store
from shared.framestore.schema import FOOTER_KEY, FrameStoreError, conform_frames
from shared.framestore.writer import read_frame_manifest
from shared.shards import STATUS_OK, resolve
from shared.shards.shardio import check_positions
from shared.shards.storage import sha256_hex


@dataclass
class FrameStoreReport:
    root: str
    provenance: dict
    splits: dict
    videos: int = 0
    failed_videos: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    missing_videos: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing_videos

    def format(self) -> str:
        prov = self.provenance
        codec = prov["codec"]
        lines = [
            f"frame store {self.root}",
            f"  sampler: {prov['sampler']}",
            f"  frames: short side {prov['image']['short_side']} px, codec {codec.get('name')}"
            + (f" q{codec['quality']}" if "quality" in codec else "")
            + f", dataset {prov.get('dataset')!r}",
            f"  {self.videos} videos ({self.failed_videos} failed), {self.bytes / 1e6:.1f} MB "
            f"({self.bytes / max(self.videos, 1) * 1000 / 1e9:.2f} GB per 1,000 videos)",
        ]
        for split, info in sorted(self.splits.items()):
            state = "complete" if info["complete"] else f"missing shards {info['missing_shards'][:10]}"
            lines.append(f"  split {split}: {info['num_shards']} shards, {info['videos']} videos, {state}")
        if self.missing_videos:
            lines.append(
                f"  {len(self.missing_videos)} dataset videos not in the store, e.g. {self.missing_videos[:5]}"
            )
        lines += [f"  problem: {p}" for p in self.problems[:20]]
        lines.append("  OK" if self.ok else f"  NOT OK: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def frame_store_info(root, *, filesystem=None) -> FrameStoreReport:
    """What the manifest says (provenance, splits, counts, bytes), without reading the shards."""
    manifest = read_frame_manifest(resolve(root, filesystem))
    splits = manifest["splits"]
    report = FrameStoreReport(str(resolve(root, filesystem)), manifest["provenance"], splits)
    report.videos = sum(info["videos"] for info in splits.values())
    report.failed_videos = sum(info["failed_videos"] for info in splits.values())
    report.bytes = sum(info["bytes"] for info in splits.values())
    report.problems = [
        f"split {s!r} lacks shards {i['missing_shards'][:10]}" for s, i in splits.items() if not i["complete"]
    ]
    return report


def validate_frame_store(
    root, *, items=None, decode: bool = True, progress: bool = False, filesystem=None
) -> FrameStoreReport:
    """Check every shard of the store at ``root``; see the module docstring."""
    root = resolve(root, filesystem)
    manifest = read_frame_manifest(root)
    provenance = manifest["provenance"]
    report = FrameStoreReport(str(root), provenance, manifest["splits"])
    codec = Codec.from_provenance(provenance["codec"])
    stored: set[str] = set()
    for split, info in manifest["splits"].items():
        if not info["complete"]:
            report.problems.append(f"split {split!r} lacks shards {info['missing_shards'][:10]}")
    for entry in tqdm(manifest["shards"], desc="validate", unit="shard", disable=not progress):
        loc = root.join(*entry["file"].split("/"))
        try:
            ids, failed = _check_shard(loc, entry, provenance, codec, decode)
        except (FrameStoreError, OSError) as err:
            report.problems.append(str(err))
            continue
        stored |= ids
        report.videos += len(ids)
        report.failed_videos += failed
        report.bytes += entry["bytes"]
    if items is not None:
        report.missing_videos = sorted({item.video_id for item in items} - stored)
    return report


def _check_shard(loc, entry: dict, provenance: dict, codec: Codec, decode: bool) -> tuple[set[str], int]:
    where = str(loc)
    try:
        data = loc.read_bytes()
    except FileNotFoundError as err:
        raise FrameStoreError(where, "frame shard is missing") from err
    if sha256_hex(data) != entry["sha256"]:
        raise FrameStoreError(
            where, "checksum mismatch with the manifest (changed or truncated after writing)"
        )
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        raw = (parquet.schema_arrow.metadata or {}).get(FOOTER_KEY)
        if raw is None:
            raise FrameStoreError(where, f"no {FOOTER_KEY.decode()!r} footer key: not a frame shard")
        footer = json.loads(raw)
        table = conform_frames(parquet.read(), where)
    except (pa.ArrowException, ValueError) as err:
        if isinstance(err, FrameStoreError):
            raise
        raise FrameStoreError(where, f"not a readable Parquet frame shard ({err})") from err
    check_same_store(
        provenance, check_frame_provenance(footer.get("provenance"), where), f"{where} vs manifest"
    )
    F = provenance["sampler"]["num_frames"]
    check_positions(table, F, where)
    if parquet.metadata.num_row_groups != len(table) // F:
        raise FrameStoreError(
            where,
            f"{parquet.metadata.num_row_groups} row groups for {len(table) // F} videos; "
            "expected one per video",
        )
    if len(table) != entry["rows"]:
        raise FrameStoreError(where, f"{len(table)} rows, the manifest says {entry['rows']}")
    ok = pc.equal(table["status"], STATUS_OK)
    if pc.any(pc.and_(ok, pc.is_null(table["frame"]))).as_py():
        raise FrameStoreError(where, "rows with status ok but no frame")
    if decode:
        short = provenance["image"]["short_side"]
        good = table.filter(ok)
        for vid, pos, data_, h, w in zip(
            *(good[c].to_pylist() for c in ("video_id", "frame_pos", "frame", "height", "width")), strict=True
        ):
            if min(h, w) != short:
                raise FrameStoreError(
                    where, f"{vid} frame {pos} is {h}x{w}; the store's short side is {short}"
                )
            try:
                codec.decode(data_, h, w)
            except ValueError as err:
                raise FrameStoreError(where, f"{vid} frame {pos}: {err}") from err
    ids = set(pc.unique(table["video_id"]).to_pylist())
    failed = len(pc.unique(pc.filter(table["video_id"], pc.invert(ok))))
    return ids, failed
