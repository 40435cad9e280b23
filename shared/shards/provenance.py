"""Provenance of a caption set: what produced the captions, and when two sets may be mixed.

Public API::

    REQUIRED_KEYS        # schema_version, model, prompt_sha256, sampler (with num_frames)
    COMPATIBILITY_KEYS   # the keys whose values change captions or frames
    make_provenance(*, model, prompt_text, sampler, **extra) -> dict
    check_provenance(provenance, where="provenance") -> dict     # raises CaptionSetError
    check_compatible(existing, new, *, ignore=(), where="") -> None   # raises IncompatibleProvenanceError
    check_sampler(provenance, expect_sampler, where, num_frames=None) -> None   # raises CaptionSetError
    prompt_sha256(text) -> str

Recommended keys beside the required ones (any extra JSON-serialisable key is kept): model_revision,
dtype, engine, library_versions {vllm, transformers, torch, ray}, prompt_preset, prompt_text,
chat_template_sha256, sampling {temperature, top_p, max_tokens, seed}, image_resolution, decoder
{name, version}, video_source, dataset, code_version, created_at.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone

from shared.shards.schema import SCHEMA_VERSION, CaptionSetError

REQUIRED_KEYS = ("schema_version", "model", "prompt_sha256", "sampler")
COMPATIBILITY_KEYS = (
    "schema_version",
    "dataset",
    "model",
    "model_revision",
    "dtype",
    "prompt_sha256",
    "chat_template_sha256",
    "sampling",
    "image_resolution",
    "sampler",
    "decoder",
    "video_source",
)
SAMPLER_FRAME_KEYS = ("name", "version", "num_frames", "candidate_fps")  # what decides frame indices
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class IncompatibleProvenanceError(CaptionSetError):
    """Two caption sets were made differently; ``differences`` maps key -> (existing, new)."""

    def __init__(self, where: str, differences: dict):
        self.differences = differences
        lines = "; ".join(f"{k}: {a!r} vs {b!r}" for k, a, b in ((k, *v) for k, v in differences.items()))
        super().__init__(where, f"incompatible provenance in {sorted(differences)} ({lines})")


def prompt_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_version() -> str:
    """The discovla git commit (with '-dirty') when run from a checkout, else 'unknown'."""
    from shared.versions import git_revision

    return git_revision()


def make_provenance(*, model: str, prompt_text: str, sampler: dict, **extra) -> dict:
    """A provenance dict with the required keys filled in (prompt sha256, created_at, code_version)."""
    provenance = {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "prompt_text": prompt_text,
        "prompt_sha256": prompt_sha256(prompt_text),
        "sampler": dict(sampler),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
    }
    provenance.update(extra)
    return check_provenance(provenance)


def check_provenance(provenance: dict, where: str = "provenance") -> dict:
    """Check the required keys and their types; returns a JSON-clean copy."""
    if not isinstance(provenance, dict):
        raise CaptionSetError(where, f"provenance must be a dict, got {type(provenance).__name__}")
    missing = [k for k in REQUIRED_KEYS if provenance.get(k) in (None, "")]
    if missing:
        raise CaptionSetError(where, f"provenance lacks {missing}; required: {list(REQUIRED_KEYS)}")
    if provenance["schema_version"] != SCHEMA_VERSION:
        raise CaptionSetError(
            where,
            f"unknown schema version {provenance['schema_version']!r}; this code reads {SCHEMA_VERSION}",
        )
    if not _SHA256.match(str(provenance["prompt_sha256"])):
        raise CaptionSetError(
            where, f"prompt_sha256 must be 64 hex digits, got {provenance['prompt_sha256']!r}"
        )
    text = provenance.get("prompt_text")
    if text is not None and prompt_sha256(text) != provenance["prompt_sha256"]:
        raise CaptionSetError(where, "prompt_sha256 is not the sha256 of prompt_text")
    sampler = provenance["sampler"]
    if (
        not isinstance(sampler, dict)
        or not isinstance(sampler.get("num_frames"), int)
        or sampler["num_frames"] < 1
    ):
        raise CaptionSetError(
            where,
            f"sampler must be a dict like SamplerConfig(...).provenance() with num_frames >= 1, got {sampler!r}",
        )
    try:
        return json.loads(json.dumps(provenance, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise CaptionSetError(where, f"provenance is not plain JSON: {err}") from err


def check_compatible(existing: dict, new: dict, *, ignore: tuple[str, ...] = (), where: str = "") -> None:
    """Raise :class:`IncompatibleProvenanceError` naming every key of COMPATIBILITY_KEYS that differs."""
    differences = {
        key: (existing.get(key), new.get(key))
        for key in COMPATIBILITY_KEYS
        if key not in ignore and _canonical(existing.get(key)) != _canonical(new.get(key))
    }
    if differences:
        raise IncompatibleProvenanceError(where or "caption sets", differences)


def check_sampler(
    provenance: dict, expect_sampler: dict | None, where: str, num_frames: int | None = None
) -> None:
    """Refuse captions whose frames were sampled differently from the trainer's frames.

    Compares SAMPLER_FRAME_KEYS (rule name and version, F, candidate fps) present in ``expect_sampler``
    (``shared.frames.SamplerConfig(...).provenance()``), and F against ``num_frames``.
    """
    sampler = provenance.get("sampler") or {}
    if num_frames is not None and sampler.get("num_frames") != num_frames:
        raise CaptionSetError(
            where,
            f"captions have {sampler.get('num_frames')} frames per video, the trainer samples {num_frames}",
        )
    if expect_sampler is None:
        return
    wrong = {
        key: (sampler.get(key), expect_sampler[key])
        for key in SAMPLER_FRAME_KEYS
        if key in expect_sampler and _canonical(sampler.get(key)) != _canonical(expect_sampler[key])
    }
    if wrong:
        detail = "; ".join(f"{k}: captions {a!r}, trainer {b!r}" for k, (a, b) in wrong.items())
        raise CaptionSetError(
            where, f"frame sampler differs from the trainer's ({detail}): captions would not match frames"
        )


def _canonical(value) -> str:
    """Order- and int/float-insensitive form for comparison (1 == 1.0, dict key order ignored)."""

    def norm(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return str(v)

    return json.dumps(norm(value), sort_keys=True)
