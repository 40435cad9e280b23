"""Provenance of a frame store: which sampler, window rule, resolution and codec made the frames.

Public API::

    make_frame_provenance(*, sampler, short_side, codec, dataset=None, **extra) -> dict
    check_frame_provenance(provenance, where) -> dict                  # raises FrameStoreError
    check_same_store(existing, new, where) -> None    # two writers must agree on COMPATIBILITY_KEYS
    check_for_trainer(provenance, *, expect_sampler, short_side, where) -> None

The trainer refuses a store whose sampler (rule name, version, F, candidate fps) or resolution (short
side) differs from its own: such frames are not the frames it would decode.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from shared.framestore.codec import Codec
from shared.framestore.schema import SCHEMA_VERSION, FrameStoreError
from shared.shards.provenance import SAMPLER_FRAME_KEYS, _canonical, code_version

RESIZE_RULE = (
    "short side to short_side px, aspect kept, PIL bilinear (antialiased), shared.decoder.resize_short_side"
)
WINDOW_RULE = "the item's (start, end) seconds as in the sampler (null = whole video); stored per row"
COMPATIBILITY_KEYS = ("schema_version", "dataset", "sampler", "window_rule", "image", "codec", "video_source")


def make_frame_provenance(
    *, sampler: dict, short_side: int, codec: Codec, dataset: str | None = None, **extra
) -> dict:
    """The provenance of a store written now (decoder version, code version and time filled in)."""
    from importlib import metadata

    try:
        decord_version = metadata.version("decord")
    except metadata.PackageNotFoundError:
        decord_version = "unknown"
    provenance = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "sampler": dict(sampler),
        "window_rule": WINDOW_RULE,
        "image": {"short_side": int(short_side), "resize": RESIZE_RULE},
        "codec": codec.provenance(),
        "decoder": {"name": "decord", "version": decord_version},
        "code_version": code_version(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    provenance.update(extra)
    return check_frame_provenance(provenance)


def check_frame_provenance(provenance, where: str = "provenance") -> dict:
    """Required keys and types; returns a JSON-clean copy."""
    if not isinstance(provenance, dict):
        raise FrameStoreError(where, f"provenance must be a dict, got {type(provenance).__name__}")
    if provenance.get("schema_version") != SCHEMA_VERSION:
        raise FrameStoreError(
            where,
            f"unknown frame-store schema version {provenance.get('schema_version')!r}; "
            f"this code reads version {SCHEMA_VERSION}",
        )
    sampler = provenance.get("sampler")
    if (
        not isinstance(sampler, dict)
        or not isinstance(sampler.get("num_frames"), int)
        or sampler["num_frames"] < 1
    ):
        raise FrameStoreError(
            where, f"sampler must be SamplerConfig(...).provenance() with num_frames >= 1, got {sampler!r}"
        )
    image = provenance.get("image")
    if not isinstance(image, dict) or not isinstance(image.get("short_side"), int) or image["short_side"] < 1:
        raise FrameStoreError(where, f"image must be {{'short_side': pixels, ...}}, got {image!r}")
    codec = provenance.get("codec")
    try:
        Codec.from_provenance(codec if isinstance(codec, dict) else {"name": codec})
    except ValueError as err:
        raise FrameStoreError(where, f"codec {codec!r}: {err}") from err
    try:
        return json.loads(json.dumps(provenance, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise FrameStoreError(where, f"provenance is not plain JSON: {err}") from err


def _comparable(provenance: dict, key: str):
    value = provenance.get(key)
    if key == "codec" and isinstance(value, dict):  # the library version does not change the format
        value = {k: v for k, v in value.items() if k != "library"}
    return _canonical(value)


def check_same_store(existing: dict, new: dict, where: str) -> None:
    """Shards of one store must agree on every key of COMPATIBILITY_KEYS."""
    differences = {
        k: (existing.get(k), new.get(k))
        for k in COMPATIBILITY_KEYS
        if _comparable(existing, k) != _comparable(new, k)
    }
    if differences:
        detail = "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in differences.items())
        raise FrameStoreError(
            where, f"frames made differently cannot share a store ({detail}); write them to another store"
        )


def check_for_trainer(provenance: dict, *, expect_sampler: dict, short_side: int, where: str) -> None:
    """Refuse a store whose frames are not what the trainer would decode (sampler or resolution)."""
    sampler = provenance.get("sampler") or {}
    wrong = {
        k: (sampler.get(k), expect_sampler[k])
        for k in SAMPLER_FRAME_KEYS
        if k in expect_sampler and _canonical(sampler.get(k)) != _canonical(expect_sampler[k])
    }
    if wrong:
        detail = "; ".join(f"{k}: store {a!r}, trainer {b!r}" for k, (a, b) in wrong.items())
        raise FrameStoreError(
            where,
            f"frame sampler differs from the trainer's ({detail}); rebuild the store "
            "with the trainer's frames (python -m pipelines.framestore build)",
        )
    stored = provenance["image"]["short_side"]
    if stored != short_side:
        raise FrameStoreError(
            where,
            f"frames are stored at short side {stored} px, the trainer decodes at "
            f"{short_side} px; rebuild the store with --image-size {short_side} or set "
            f"decode_short_side={stored}",
        )
