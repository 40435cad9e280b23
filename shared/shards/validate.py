"""Validation of a whole caption set, collecting every finding instead of stopping at the first.

Public API::

    validate_caption_set(path_or_uri, *, filesystem=None, expect_video_ids=None, expect_sampler=None,
                         num_frames=None, split=None) -> ValidationReport
    ValidationReport(findings, summary).ok ; Finding(level, where, message)

Checks, with the same rules as the trainer's loader (``reader``; a root without ``manifest.json`` is
being written or unfinished, and both refuse it with the same message): the manifest (present, readable,
schema version, provenance, consistent with itself: every split's entries are its shards 0..N-1 and its
counts their sums); every listed shard (present, sha256 and size equal to the manifest's, readable
Parquet with a v1 footer, column types, row values, rows/videos/failures/split/index equal to its
entry, footer provenance compatible with the manifest's); every file under ``data/`` that the manifest
does not list is an error, because pandas, pyarrow.dataset, DuckDB and Polars would read it; a video
in two splits, duplicates and missing positions across the set; the frame sampler against
``expect_sampler``/``num_frames``; coverage of ``expect_video_ids`` (videos without captions are
errors, captions of unexpected videos warnings, failed videos warnings).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from shared.shards.layout import DATA_DIR, MANIFEST_NAME, parse_shard_name
from shared.shards.manifest import REBUILD_HINT, check_shard_matches, manifest_root, read_manifest
from shared.shards.provenance import check_compatible, check_provenance, check_sampler
from shared.shards.reader import check_bucket, storage_failure
from shared.shards.schema import STATUS_OK, CaptionSetError
from shared.shards.shardio import check_one_split_per_video, check_positions, read_shard

logger = logging.getLogger(__name__)
ERROR, WARNING = "error", "warning"


@dataclass
class Finding:
    level: str  # "error" | "warning"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper():7s} {self.where}: {self.message}"


@dataclass
class ValidationReport:
    findings: list[Finding] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.level == ERROR for f in self.findings)

    def add(self, level: str, where: str, message: str) -> None:
        self.findings.append(Finding(level, str(where), message))


def validate_caption_set(
    path_or_uri,
    *,
    filesystem=None,
    expect_video_ids=None,
    expect_sampler: dict | None = None,
    num_frames: int | None = None,
    split: str | None = None,
) -> ValidationReport:
    """Run every check; see the module docstring. Never raises on bad data or unusable storage (a missing
    bucket, denied access, an unreachable endpoint: one finding): it reports."""
    report = ValidationReport()
    root = manifest_root(path_or_uri, filesystem)
    try:
        _validate(report, root, expect_video_ids, expect_sampler, num_frames, split)
    except OSError as err:
        failure = storage_failure(path_or_uri, root, err)
        report.add(ERROR, failure.where, failure.problem)
    return report


def _validate(report: ValidationReport, root, expect_video_ids, expect_sampler, num_frames, split) -> None:
    try:
        check_bucket(root.uri, root)
        manifest = read_manifest(root)
    except CaptionSetError as err:
        report.add(ERROR, err.where, err.problem)
        return
    entries = [e for e in manifest["shards"] if split in (None, e["split"])]
    _check_listing(root, manifest, report)
    tables = _read_listed(root, entries, manifest["provenance"], report)
    report.summary = {"shards": len(entries), "splits": manifest["splits"], "rows": 0, "videos": 0}
    try:
        check_sampler(
            manifest["provenance"], expect_sampler, str(root.join(MANIFEST_NAME)), num_frames=num_frames
        )
    except CaptionSetError as err:
        report.add(ERROR, err.where, err.problem)
    if tables:
        table = pa.concat_tables(tables)
        files = [e["file"] for e in entries]
        try:
            check_one_split_per_video(table, str(root), files)
            check_positions(table, manifest["provenance"]["sampler"]["num_frames"], str(root), files)
        except CaptionSetError as err:
            report.add(ERROR, err.where, err.problem)
        _check_coverage(table, expect_video_ids, str(root), report)


def _check_listing(root, manifest: dict, report: ValidationReport) -> None:
    """Files under data/ that the manifest does not list are errors: directory readers would read them."""
    listed = {e["file"] for e in manifest["shards"]}
    for rel in root.join(DATA_DIR).walk():
        name = rel.rsplit("/", 1)[-1]
        if f"{DATA_DIR}/{rel}" in listed or name.startswith((".", "_")):
            continue  # hidden names ('.', '_') are skipped by pyarrow.dataset, pandas, DuckDB and Polars
        loc = root.join(DATA_DIR, *rel.split("/"))
        if "/" not in rel and parse_shard_name(name):
            kind = "a shard file the manifest does not list (a leftover of another layout, an unfinished or copied shard)"
        elif name.endswith(".parquet"):
            kind = "a Parquet file the manifest does not list"
        else:
            kind = "a file that is not a listed shard"
        report.add(
            ERROR,
            loc,
            f"{kind}: pandas, pyarrow.dataset, DuckDB and Polars read every file under "
            f"data/, so they would see rows the project does not. Move it out of data/ "
            f"(or delete it); if it belongs to the set, {REBUILD_HINT}",
        )
    for split, info in manifest["splits"].items():
        if not info.get("complete", False):
            report.add(
                ERROR, root.join(MANIFEST_NAME), f"split {split!r} lacks shards {info['missing_shards'][:10]}"
            )


def _read_listed(root, entries: list[dict], provenance: dict, report: ValidationReport) -> list[pa.Table]:
    tables = []
    for i, entry in enumerate(entries):
        loc = root.join(*entry["file"].split("/"))
        try:
            shard = read_shard(loc, expect_sha256=entry["sha256"])
            check_shard_matches(entry, shard, str(loc))
            check_compatible(
                provenance,
                check_provenance(shard.footer.get("provenance"), str(loc)),
                where=f"{loc} vs manifest",
            )
        except CaptionSetError as err:
            report.add(ERROR, err.where, err.problem)
            continue
        tables.append(shard.table.append_column("_file", pa.array([i] * len(shard.table), pa.int32())))
    return tables


def _check_coverage(table: pa.Table, expect_video_ids, where: str, report: ValidationReport) -> None:
    videos = pc.unique(table["video_id"])
    failed = pc.unique(pc.filter(table["video_id"], pc.not_equal(table["status"], STATUS_OK)))
    report.summary.update(rows=len(table), videos=len(videos), failed_videos=len(failed))
    if len(failed):
        report.add(
            WARNING,
            where,
            f"{len(failed)} videos have failed frames, e.g. {failed[:3].to_pylist()} "
            "(the trainer skips them)",
        )
    if expect_video_ids is None:
        return
    expected = pa.array(sorted(set(expect_video_ids)), pa.string())
    missing = pc.filter(expected, pc.invert(pc.is_in(expected, value_set=videos)))
    extra = pc.filter(videos, pc.invert(pc.is_in(videos, value_set=expected)))
    report.summary.update(expected_videos=len(expected), missing_videos=len(missing), extra_videos=len(extra))
    if len(missing):
        report.add(
            ERROR,
            where,
            f"{len(missing)} of {len(expected)} expected videos have no captions, "
            f"e.g. {missing[:5].to_pylist()}",
        )
    if len(extra):
        report.add(
            WARNING,
            where,
            f"{len(extra)} captioned videos are not in the expected list, e.g. {extra[:5].to_pylist()}",
        )
