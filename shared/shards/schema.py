"""Caption-shard schema v1: one Parquet row per sampled frame, and the checks every row must pass.

Public API::

    SCHEMA_VERSION = 1
    SCHEMA                      # pyarrow.Schema of a v1 shard (see docs/caption-shards.md)
    FOOTER_KEY = b"discovla.captions"    # Parquet footer key holding the provenance JSON
    STATUS_OK, STATUS_FAILED = "ok", "failed"
    CaptionSetError(where, problem)      # the one error type for bad caption data
    CaptionRow(...)                       # one row as a dataclass
    make_rows(dataset, split, video_id, frame_indices, timestamps, captions,
              finish_reasons=None, n_tokens=None) -> list[CaptionRow]
    failed_rows(dataset, split, video_id, num_frames, error,
                frame_indices=None, timestamps=None) -> list[CaptionRow]
    rows_to_table(rows) -> pa.Table       # CaptionRows, dicts or a Table -> a SCHEMA table
    conform(table, where) -> pa.Table     # cast to SCHEMA or raise (missing column, wrong type)
    check_rows(table, where)              # value checks; vectorised (pyarrow.compute)

A failed frame or video is a row with ``status = "failed"`` and an ``error``, never a gap: a video that
could not be decoded gets F failed rows with null ``frame_index``/``timestamp_s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import pyarrow as pa
import pyarrow.compute as pc

from shared.errors import DiscoVLAError

SCHEMA_VERSION = 1
FORMAT_NAME = "discovla.captions"
FOOTER_KEY = FORMAT_NAME.encode()
STATUS_OK, STATUS_FAILED = "ok", "failed"
MAX_ID_CHARS = 512  # longer ids are not video ids
MAX_CAPTION_CHARS = 8192  # a caption is one sentence; 8 KiB means a runaway generation or bad data
MAX_ERROR_CHARS = 4096  # error texts are truncated to this by the row helpers
MAX_FRAMES = 4096  # frame_pos upper bound (F frames per video)

SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),  # benchmark name, e.g. "msrvtt"
        pa.field("split", pa.string(), nullable=False),  # "train" / "val" / "test"
        pa.field("video_id", pa.string(), nullable=False),  # the dataset's own id, never a path
        pa.field("frame_pos", pa.int32(), nullable=False),  # 0..F-1, the join key with the trainer
        pa.field("frame_index", pa.int64()),  # index in the decoded stream; null if unknown (see docs)
        pa.field("timestamp_s", pa.float64()),  # frame_index / average fps; null if unknown
        pa.field("caption", pa.string()),  # null when failed
        pa.field("finish_reason", pa.string()),  # engine's reason, e.g. "stop" / "length"
        pa.field("n_tokens", pa.int32()),  # generated tokens
        pa.field("status", pa.string(), nullable=False),  # "ok" | "failed"
        pa.field("error", pa.string()),  # null when ok
    ]
)
_STRING_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
# the rule of shared.paths.check_video_id: no empty id, control character, absolute path or ".." part
_UNSAFE_ID = r"^\s*$|[\x00-\x1f\x7f]|^[/\\]|^[A-Za-z]:|(^|[/\\])\.\.([/\\]|$)"


class CaptionSetError(DiscoVLAError, ValueError):
    """Caption data is unusable. ``where`` names the file (or set), ``problem`` says what is wrong."""

    def __init__(self, where: str, problem: str):
        self.where, self.problem = str(where), problem
        super().__init__(f"{self.where}: {problem}")


@dataclass(frozen=True)
class CaptionRow:
    """One sampled frame of one video and its caption (schema v1)."""

    dataset: str
    split: str
    video_id: str
    frame_pos: int
    frame_index: int | None
    timestamp_s: float | None
    caption: str | None
    finish_reason: str | None = None
    n_tokens: int | None = None
    status: str = STATUS_OK
    error: str | None = None


def make_rows(
    dataset: str,
    split: str,
    video_id: str,
    frame_indices: Sequence[int],
    timestamps: Sequence[float],
    captions: Sequence[str],
    finish_reasons: Sequence[str | None] | None = None,
    n_tokens: Sequence[int | None] | None = None,
) -> list[CaptionRow]:
    """The F ok rows of one captioned video; position f holds frame ``frame_indices[f]``."""
    num = len(captions)
    if not len(frame_indices) == len(timestamps) == num:
        raise ValueError(
            f"video {video_id!r}: {len(frame_indices)} frame indices, {len(timestamps)} timestamps and "
            f"{num} captions; expected one of each per sampled frame"
        )
    reasons = list(finish_reasons) if finish_reasons is not None else [None] * num
    tokens = list(n_tokens) if n_tokens is not None else [None] * num
    return [
        CaptionRow(
            dataset,
            split,
            video_id,
            pos,
            int(frame_indices[pos]),
            float(timestamps[pos]),
            captions[pos],
            reasons[pos],
            None if tokens[pos] is None else int(tokens[pos]),
        )
        for pos in range(num)
    ]


def failed_rows(
    dataset: str,
    split: str,
    video_id: str,
    num_frames: int,
    error: str,
    frame_indices: Sequence[int] | None = None,
    timestamps: Sequence[float] | None = None,
) -> list[CaptionRow]:
    """F failed rows for a video that could not be decoded or captioned (``error`` truncated)."""
    error = str(error)[:MAX_ERROR_CHARS] or "unknown error"
    return [
        CaptionRow(
            dataset,
            split,
            video_id,
            pos,
            None if frame_indices is None else int(frame_indices[pos]),
            None if timestamps is None else float(timestamps[pos]),
            None,
            None,
            None,
            STATUS_FAILED,
            error,
        )
        for pos in range(num_frames)
    ]


def rows_to_table(rows: pa.Table | Iterable[CaptionRow | dict]) -> pa.Table:
    """A SCHEMA table from CaptionRows, dicts with the schema's keys, or an existing table."""
    if isinstance(rows, pa.Table):
        return conform(rows, "rows")
    names = [f.name for f in fields(CaptionRow)]
    # vars(), not asdict(): a row's fields are scalars, and asdict's deep copy costs ~20x more per row
    records = [vars(r) if isinstance(r, CaptionRow) else r for r in rows]
    for i, rec in enumerate(records):
        missing = [n for n in names if n not in rec and n not in ("finish_reason", "n_tokens", "error")]
        if missing:
            raise CaptionSetError("rows", f"record {i} lacks {missing}; expected the keys {names}")
    columns = {n: [rec.get(n) for rec in records] for n in names}
    try:
        return pa.Table.from_pydict(columns, schema=SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise CaptionSetError("rows", f"values do not fit schema v{SCHEMA_VERSION}: {err}") from err


def conform(table: pa.Table, where: str) -> pa.Table:
    """``table`` cast to SCHEMA (column order, widening casts); raise on missing columns or wrong types."""
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise CaptionSetError(
            where, f"missing columns {missing}; schema v{SCHEMA_VERSION} has {SCHEMA.names}"
        )
    columns = []
    for field in SCHEMA:
        col = table.column(field.name)
        if not _same_kind(col.type, field.type):
            raise CaptionSetError(where, f"column {field.name!r} has type {col.type}, expected {field.type}")
        try:
            columns.append(col.cast(field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise CaptionSetError(where, f"column {field.name!r} does not fit {field.type}: {err}") from err
        if not field.nullable and col.null_count:
            raise CaptionSetError(
                where, f"column {field.name!r} has {col.null_count} nulls; it must have none"
            )
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _same_kind(actual: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_null(actual):
        return True  # an all-null column (e.g. no failures) written by another tool
    if pa.types.is_string(expected):
        return any(check(actual) for check in _STRING_TYPES)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual)
    return pa.types.is_floating(actual)


def check_rows(table: pa.Table, where: str) -> None:
    """Value checks on a SCHEMA table: ids, positions, status/error/caption consistency, sizes, NaNs."""
    _check_strings(table, where)
    pos = table["frame_pos"]
    if len(table) and (pc.min(pos).as_py() < 0 or pc.max(pos).as_py() >= MAX_FRAMES):
        raise CaptionSetError(
            where, f"frame_pos outside [0, {MAX_FRAMES}): {_examples(table, _bad_pos(pos))}"
        )
    ts = table["timestamp_s"]
    bad_ts = pc.or_(pc.is_nan(ts), pc.is_inf(ts)).fill_null(False)
    bad_ts = pc.or_(bad_ts, pc.less(ts, 0.0).fill_null(False))
    if pc.any(bad_ts).as_py():
        raise CaptionSetError(
            where, f"timestamp_s is NaN, infinite or negative at {_examples(table, bad_ts)}"
        )
    bad_index = pc.less(table["frame_index"], 0).fill_null(False)
    if pc.any(bad_index).as_py():
        raise CaptionSetError(where, f"frame_index is negative at {_examples(table, bad_index)}")
    status = table["status"]
    bad_status = pc.invert(pc.is_in(status, value_set=pa.array([STATUS_OK, STATUS_FAILED])))
    if pc.any(bad_status).as_py():
        raise CaptionSetError(where, f"status must be 'ok' or 'failed': {_examples(table, bad_status)}")
    is_ok = pc.equal(status, STATUS_OK)
    ok_without = pc.and_(is_ok, pc.is_null(table["caption"]))
    if pc.any(ok_without).as_py():
        raise CaptionSetError(where, f"ok rows without a caption: {_examples(table, ok_without)}")
    ok_with_error = pc.and_(is_ok, pc.is_valid(table["error"]))
    if pc.any(ok_with_error).as_py():
        raise CaptionSetError(where, f"ok rows with an error text: {_examples(table, ok_with_error)}")
    failed_without = pc.and_(pc.invert(is_ok), pc.is_null(table["error"]))
    if pc.any(failed_without).as_py():
        raise CaptionSetError(where, f"failed rows without an error text: {_examples(table, failed_without)}")


def _check_strings(table: pa.Table, where: str) -> None:
    ids = table["video_id"]
    unsafe = pc.match_substring_regex(ids, _UNSAFE_ID)
    if pc.any(unsafe).as_py():
        bad = pc.filter(ids, unsafe).unique()[:3].to_pylist()
        raise CaptionSetError(
            where,
            f"video ids that look like paths or are empty: {bad}; an id is a name (or a relative path "
            "inside the video root) without a leading '/', a drive, '..' parts or control characters",
        )
    limits = {
        "video_id": MAX_ID_CHARS,
        "dataset": MAX_ID_CHARS,
        "split": MAX_ID_CHARS,
        "caption": MAX_CAPTION_CHARS,
        "finish_reason": MAX_ID_CHARS,
        "error": MAX_ERROR_CHARS,
    }
    for name, limit in limits.items():
        lengths = pc.utf8_length(table[name])
        longest = pc.max(lengths).as_py() if len(table) else None
        if longest is not None and longest > limit:
            raise CaptionSetError(
                where, f"column {name!r} holds a string of {longest:,} characters; the limit is {limit:,}"
            )


def _bad_pos(pos: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.or_(pc.less(pos, 0), pc.greater_equal(pos, MAX_FRAMES))


def _examples(table: pa.Table, mask, limit: int = 3) -> str:
    """A few offending (video_id, frame_pos) pairs for an error message."""
    bad = table.filter(mask).select(["video_id", "frame_pos"]).slice(0, limit).to_pylist()
    return ", ".join(f"({r['video_id']!r}, {r['frame_pos']})" for r in bad)
