"""Frame-store schema v1: one Parquet row per sampled frame, the frame's pixels encoded in ``frame``.

Public API::

    SCHEMA_VERSION = 1
    FORMAT_NAME = "discovla.frames"; FOOTER_KEY = b"discovla.frames"
    FRAME_SCHEMA                    # pyarrow.Schema of a v1 frame shard
    FrameStoreError(where, problem) # the one error type for bad frame-store data (a CaptionSetError)
    video_rows(dataset, split, video_id, window, indices, timestamps, frames, codec) -> pa.Table
    failed_video_rows(dataset, split, video_id, window, num_frames, error) -> pa.Table
    conform_frames(table, where) -> pa.Table     # cast to FRAME_SCHEMA or raise

Rows of a video are its F sampled frames (``frame_pos`` 0..F-1, the same join key as the caption
shards). A video that could not be decoded has F rows with ``status = "failed"``, an ``error`` and a
null ``frame``. ``window_start/window_end`` (seconds, null = whole video) are the item window the frames
were sampled from: a reader only serves frames for the same window.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from shared.framestore.codec import Codec
from shared.shards import STATUS_FAILED, STATUS_OK, CaptionSetError

SCHEMA_VERSION = 1
FORMAT_NAME = "discovla.frames"
FOOTER_KEY = FORMAT_NAME.encode()
MAX_ERROR_CHARS = 4096

FRAME_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),  # the dataset's own id, as in the caption shards
        pa.field("frame_pos", pa.int32(), nullable=False),  # 0..F-1
        pa.field("frame_index", pa.int64()),  # index in the decoded stream; null when failed
        pa.field("timestamp_s", pa.float64()),  # frame_index / average fps; null when failed
        pa.field("window_start", pa.float64()),  # item window in seconds; null = whole video
        pa.field("window_end", pa.float64()),
        pa.field("height", pa.int32()),  # stored frame size (short side = the store's short_side)
        pa.field("width", pa.int32()),
        pa.field("frame", pa.binary()),  # encoded with the store's codec; null when failed
        pa.field("status", pa.string(), nullable=False),  # "ok" | "failed"
        pa.field("error", pa.string()),
    ]
)
INDEX_COLUMNS = ["video_id", "frame_pos", "status", "window_start", "window_end"]  # everything but pixels


class FrameStoreError(CaptionSetError):
    """Frame-store data is unusable. ``where`` names the file (or store), ``problem`` says what is wrong.

    A :class:`~shared.shards.CaptionSetError` because a frame store shares the caption sets' layout,
    completion protocol and per-video position checks."""


def _window(window) -> tuple[float | None, float | None]:
    return (None, None) if window is None else (float(window[0]), float(window[1]))


def video_rows(
    dataset: str, split: str, video_id: str, window, indices, timestamps, frames: np.ndarray, codec: Codec
) -> pa.Table:
    """The F rows of one decoded video; ``frames`` [F, H, W, 3] uint8 are encoded with ``codec``."""
    n = len(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(indices) != n:
        raise ValueError(
            f"{video_id}: frames must be uint8 [F, H, W, 3] with F indices, got "
            f"{frames.dtype} {frames.shape} and {len(indices)} indices"
        )
    start, end = _window(window)
    h, w = frames.shape[1:3]
    return pa.table(
        {
            "dataset": [dataset] * n,
            "split": [split] * n,
            "video_id": [video_id] * n,
            "frame_pos": np.arange(n, dtype=np.int32),
            "frame_index": np.asarray(indices, np.int64),
            "timestamp_s": np.asarray(timestamps, np.float64),
            "window_start": [start] * n,
            "window_end": [end] * n,
            "height": [h] * n,
            "width": [w] * n,
            "frame": [codec.encode(f) for f in frames],
            "status": [STATUS_OK] * n,
            "error": [None] * n,
        },
        schema=FRAME_SCHEMA,
    )


def failed_video_rows(
    dataset: str, split: str, video_id: str, window, num_frames: int, error: str
) -> pa.Table:
    """F failed rows for a video that could not be sampled (``error`` says why)."""
    start, end = _window(window)
    n = num_frames
    nulls = [None] * n
    return pa.table(
        {
            "dataset": [dataset] * n,
            "split": [split] * n,
            "video_id": [video_id] * n,
            "frame_pos": np.arange(n, dtype=np.int32),
            "frame_index": nulls,
            "timestamp_s": nulls,
            "window_start": [start] * n,
            "window_end": [end] * n,
            "height": nulls,
            "width": nulls,
            "frame": nulls,
            "status": [STATUS_FAILED] * n,
            "error": [str(error)[:MAX_ERROR_CHARS] or "unknown error"] * n,
        },
        schema=FRAME_SCHEMA,
    )


def conform_frames(table: pa.Table, where: str) -> pa.Table:
    """``table`` with FRAME_SCHEMA's columns and types, or :class:`FrameStoreError` naming what is off."""
    missing = [f.name for f in FRAME_SCHEMA if f.name not in table.column_names]
    if missing:
        raise FrameStoreError(
            where, f"not a frame shard: columns {missing} are missing (expected {FRAME_SCHEMA.names})"
        )
    try:
        return table.select(FRAME_SCHEMA.names).cast(FRAME_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
        raise FrameStoreError(where, f"column types differ from the frame schema: {err}") from err
