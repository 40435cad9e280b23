"""Finding the captioning model: a local directory or a Hugging Face id, with a clear error offline.

:func:`resolve_model` runs once in the driver, before any Ray actor starts, so a missing model fails
in seconds with instructions instead of inside every engine actor. It also returns the revision that
goes into provenance: the Hub commit of a cached snapshot, or, for a local directory, a fingerprint of
its files (names, sizes and the first and last MiB of each), so swapping weights in a directory is
noticed on resume.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from shared.errors import DiscoVLAError

logger = logging.getLogger(__name__)

_FINGERPRINT_BYTES = 1 << 20


class ModelNotFoundError(DiscoVLAError, FileNotFoundError):
    """The model is neither a usable local directory nor available from the Hugging Face Hub/cache."""


@dataclass(frozen=True)
class ResolvedModel:
    model: str  # what the engines load: the local directory, or the Hub id
    revision: str | None  # Hub commit / requested revision, or "local-sha256:<hex>" for a directory
    local_dir: str | None  # where the files are on this machine (None: not downloaded yet)


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _how_to_provide(model: str) -> str:
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (
        f"To run without network access: download it where there is network (`hf download {model}` or "
        f"`huggingface-cli download {model} --local-dir DIR`), copy it here and pass --model DIR; or copy a "
        f"Hugging Face cache that holds it and set HF_HOME=/path/to/cache HF_HUB_OFFLINE=1 (now: {cache})."
    )


def local_fingerprint(directory: str | Path) -> str:
    """sha256 over (name, size, first and last MiB) of every file directly in ``directory``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(_FINGERPRINT_BYTES))
            if size > 2 * _FINGERPRINT_BYTES:
                fh.seek(size - _FINGERPRINT_BYTES)
                digest.update(fh.read())
    return "local-sha256:" + digest.hexdigest()


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") != 1


def resolve_model(model: str, revision: str | None = None, *, download: bool = True) -> ResolvedModel:
    """A local directory (with ``config.json``) or a Hub id found in the cache or downloaded now.

    Raises :class:`ModelNotFoundError` saying how to provide the model offline.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path}: not a model directory (no config.json); expected the output of save_pretrained or a "
                "downloaded Hugging Face snapshot"
            )
        local = str(path.resolve())
        return ResolvedModel(local, local_fingerprint(local), local)
    if _looks_like_path(model):
        raise ModelNotFoundError(f"model directory {model!r} does not exist. " + _how_to_provide(model))
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(model, revision=revision, local_files_only=True)
        return ResolvedModel(model, Path(local).name, local)
    except Exception as err:  # noqa: BLE001  (not cached: every hub error type means the same here)
        cached_error = err
    if _offline() or not download:
        raise ModelNotFoundError(
            f"model {model!r} (revision {revision or 'main'}) is not in the Hugging Face cache and "
            f"downloads are off ({type(cached_error).__name__}). " + _how_to_provide(model)
        ) from cached_error
    logger.info("downloading %s (revision %s) from the Hugging Face Hub", model, revision or "main")
    try:
        local = snapshot_download(model, revision=revision)
    except Exception as err:  # noqa: BLE001
        raise ModelNotFoundError(
            f"model {model!r} is not cached and could not be downloaded ({type(err).__name__}: {err}). "
            + _how_to_provide(model)
        ) from err
    return ResolvedModel(model, Path(local).name, local)
