"""Finding the captioning model: a local directory or a Hugging Face id, with a clear error offline.

:func:`resolve_model` runs once in the driver, before any Ray actor starts, so a missing model fails
in seconds with instructions instead of inside every engine actor. It never downloads weights: it
returns the revision that goes into provenance and that every engine then loads:

- a Hub id: the commit that ``--revision`` (default ``main``) points to, asked from the Hub's API
  (``HfApi.model_info``: metadata only), or, offline, the commit of the snapshot in the local cache;
  offline without a cached snapshot is an error that says how to provide the model. The engines load
  ``revision=<that commit>``, so a branch that moves during a run cannot mix two models.
- a local directory: its git commit when it is a git checkout (``git:<commit>``), else a fingerprint of
  its files (names, sizes and the first and last MiB of each), so swapping weights in a directory is
  noticed on resume; engines check the fingerprint of the directory they load.

:func:`model_context_length` reads the model's config (a few KB) for the vLLM context length.
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
    revision: str | None  # Hub commit, or "git:<commit>" / "local-sha256:<hex>" for a directory
    local_dir: str | None  # where the files are on this machine (None: not downloaded here)

    @property
    def load_revision(self) -> str | None:
        """The ``revision=`` engines pass when loading: the Hub commit (None for a local directory)."""
        return None if self.local_dir == self.model else self.revision


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


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


def git_commit(directory: str | Path) -> str | None:
    """The commit checked out in ``directory`` when it is the top of a git checkout (read from .git)."""
    git = Path(directory) / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def local_revision(directory: str | Path) -> str:
    """``git:<commit>`` for a git checkout, else :func:`local_fingerprint`."""
    commit = git_commit(directory)
    return f"git:{commit}" if commit else local_fingerprint(directory)


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") != 1


def resolve_model(model: str, revision: str | None = None) -> ResolvedModel:
    """A local directory (with ``config.json``) or a Hub id resolved to a commit, without downloading
    weights. Raises :class:`ModelNotFoundError` saying how to provide the model offline."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path}: not a model directory (no config.json); expected the output of save_pretrained or a "
                "downloaded Hugging Face snapshot"
            )
        local = str(path.resolve())
        return ResolvedModel(local, local_revision(local), local)
    if _looks_like_path(model):
        raise ModelNotFoundError(f"model directory {model!r} does not exist. " + _how_to_provide(model))
    from huggingface_hub import snapshot_download

    try:
        cached = snapshot_download(model, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001  (not cached: every hub error type means the same here)
        cached = None
    if _offline():
        if cached is None:
            raise ModelNotFoundError(
                f"model {model!r} (revision {revision or 'main'}) is not in the Hugging Face cache and "
                "downloads are off (HF_HUB_OFFLINE). " + _how_to_provide(model)
            )
        logger.info("offline: using the cached snapshot %s of %s", Path(cached).name, model)
        return ResolvedModel(model, Path(cached).name, cached)
    from huggingface_hub import HfApi

    try:
        commit = HfApi().model_info(model, revision=revision).sha
    except Exception as err:  # noqa: BLE001
        if cached is not None:
            logger.warning(
                "could not ask the Hub for %s (%s); using the cached snapshot %s",
                model,
                type(err).__name__,
                Path(cached).name,
            )
            return ResolvedModel(model, Path(cached).name, cached)
        raise ModelNotFoundError(
            f"model {model!r} (revision {revision or 'main'}) could not be resolved on the Hugging Face Hub "
            f"({type(err).__name__}: {str(err)[:200]}). " + _how_to_provide(model)
        ) from err
    local = cached if cached is not None and Path(cached).name == commit else None
    return ResolvedModel(model, commit, local)


PROMPT_TOKENS_PER_CHAR = 1  # a safe bound for the question; the chat template adds TEMPLATE_TOKENS
TEMPLATE_TOKENS = 64


def image_tokens_bound(config) -> int:
    """Most tokens one image can take in a LLaVA-NeXT prompt: base tile + anyres tiles + row newlines."""
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return 0
    size, patch = int(vision.image_size), int(vision.patch_size)
    per_tile = (size // patch) ** 2
    pinpoints = getattr(config, "image_grid_pinpoints", None) or [[size, size]]
    tiles = max((h // size) * (w // size) for h, w in pinpoints)
    rows = max(h // size for h, _ in pinpoints) * (size // patch)
    return (tiles + 1) * per_tile + rows


def model_context_length(resolved: ResolvedModel, max_tokens: int, prompt_text: str) -> int:
    """The vLLM context length for one frame: the model's own (``max_position_embeddings`` of its text
    model) capped at what one image, the prompt and a ``max_tokens`` caption need, rounded up to 256."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolved.local_dir or resolved.model, revision=resolved.load_revision)
    text = getattr(config, "text_config", None) or config
    context = getattr(text, "max_position_embeddings", None) or 4096
    need = (
        image_tokens_bound(config) + TEMPLATE_TOKENS + PROMPT_TOKENS_PER_CHAR * len(prompt_text) + max_tokens
    )
    need = -(-need // 256) * 256
    length = min(int(context), need)
    logger.info("max_model_len %d (model context %d, one frame needs <= %d)", length, context, need)
    return length
