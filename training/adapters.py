"""DiscoVLA's adapter files: saving, reading and loading an adapter folder.

Which parameters are adapters (by module type) and how they group is :mod:`training.parameters`
(re-exported here: ``adapter_parameters``, ``parameter_groups``, ``lora_merged``, ``GROUPS``); this module
saves and loads exactly those tensors. :mod:`training.model` uses the selection, never these files.

An adapter folder holds ``adapters.safetensors`` (those tensors by parameter name; ~2 MB for the ViT-B
defaults) and ``adapter_config.json`` (sorted keys)::

    {"format": "discovla-adapters", "format_version": 2, "package_version": "...",
     "model": {<every field of DiscoVLAConfig>}, "parameter_groups": {...}, "trainable_parameters": N}

``model`` is the whole :class:`~training.model.DiscoVLAConfig` (``dataclasses.asdict``) and is read back
as ``DiscoVLAConfig(**model)``: a field added to the dataclass later is saved and loaded without any change
here, a field absent from an older file takes its default, and a field this code does not know (a file
from a newer version) is refused by name. Version 1 folders (backbone, pretrained, max_words and
quick_gelu at the top level, the rest under ``hyper_parameters``: all named as DiscoVLAConfig fields) are
still read. Loading refuses anything that is not exactly ours for this model: another format or version,
another backbone, LoRA rank or IVFusion depth, missing or unexpected tensors, wrong shapes, or a pickle.

Folders are read from a local path or any pyarrow filesystem URI (``s3://bucket/runs/x/adapters/best?
endpoint_override=...``, ``gs://...``: ``shared.shards.storage``), with the same checks; messages name
the file as given (the URI without its query). Saving is local (a remote run publishes the folder:
``training.run_dir``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from importlib import metadata
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from shared.errors import DiscoVLAError
from shared.shards.storage import Location, resolve
from shared.storage_errors import storage_error_reason
from training.parameters import GROUPS, adapter_parameters, lora_merged, parameter_groups

if typing.TYPE_CHECKING:
    from training.model import DiscoVLA, DiscoVLAConfig

__all__ = [
    "AdapterLoadError",
    "CONFIG_NAME",
    "GROUPS",
    "WEIGHTS_NAME",
    "adapter_model_config",
    "adapter_parameters",
    "load_adapters",
    "lora_merged",
    "parameter_groups",
    "read_adapter_config",
    "save_adapters",
]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "adapters.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT_NAME = "discovla-adapters"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# fields that decide the adapters' tensors: a file trained with other values cannot be loaded
TENSOR_FIELDS = ("backbone", "lora_rank", "h_v", "h_l")
# fields that only trade memory for time in training: never worth a warning when they differ
MEMORY_FIELDS = ("lean_mlp", "mlp_recompute")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


class AdapterLoadError(DiscoVLAError, ValueError):
    """An adapter folder that this model cannot take; the message names the file and the mismatch."""


# ---------------------------------------------------------------------- the files
def _package_version() -> str:
    try:
        return metadata.version("discovla")
    except metadata.PackageNotFoundError:
        return "unknown"


def save_adapters(model: DiscoVLA, directory: str | Path) -> Path:
    """Write ``adapters.safetensors`` + ``adapter_config.json`` into ``directory``; returns the folder."""
    if lora_merged(model):
        raise ValueError(
            "LoRA is merged into this model's frozen weights (merge_lora): save the adapters before "
            "merging; a merged model is for inference only"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter_parameters(model).items()}
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "model": dataclasses.asdict(model.cfg),
        "parameter_groups": {
            g: sum(p.numel() for p in ps.values()) for g, ps in parameter_groups(model).items()
        },
        "trainable_parameters": sum(t.numel() for t in tensors.values()),
    }
    weights_tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(
        tensors, str(weights_tmp), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    )
    weights_tmp.replace(directory / WEIGHTS_NAME)
    config_tmp = directory / (CONFIG_NAME + ".tmp")
    config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    config_tmp.replace(directory / CONFIG_NAME)
    logger.info(
        "saved %d adapter tensors (%d parameters) to %s",
        len(tensors),
        config["trainable_parameters"],
        directory,
    )
    return directory


def _folder(directory: str | Path | Location) -> Location:
    """An adapter folder as a storage Location (local path or URI); a URI pyarrow refuses is named."""
    try:
        return resolve(directory)
    except ValueError as e:
        raise AdapterLoadError(str(e)) from e


def _read(path: Location) -> bytes:
    """The bytes of ``path``; absent or unreadable -> AdapterLoadError naming it (FileNotFoundError kept apart)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise AdapterLoadError(f"{path}: cannot read ({storage_error_reason(path.uri, e, path.fs)})") from e


def read_adapter_config(directory: str | Path | Location) -> dict:
    """The parsed and format-checked ``adapter_config.json`` of an adapter folder (as stored)."""
    folder = _folder(directory)
    path = folder.join(CONFIG_NAME)
    try:
        text = _read(path)
    except FileNotFoundError:
        found = folder.list_names() if folder.is_dir() else "no such folder"
        raise AdapterLoadError(
            f"{path}: not found; an adapter folder holds {CONFIG_NAME} + {WEIGHTS_NAME} (found: {found})"
        ) from None
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterLoadError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise AdapterLoadError(
            f"{path}: not a DiscoVLA adapter config (format {got!r}, expected {FORMAT_NAME!r})"
        )
    if config.get("format_version") not in READABLE_VERSIONS:
        raise AdapterLoadError(
            f"{path}: format_version {config.get('format_version')!r} (written by discovla "
            f"{config.get('package_version', '?')}); this code reads versions {list(READABLE_VERSIONS)}: "
            "use a discovla release that reads it"
        )
    return config


def _stored_fields(config: dict, path: Location) -> dict:
    """The DiscoVLAConfig fields stored in ``config`` (version 2: ``model``; version 1: flattened)."""
    from training.model import DiscoVLAConfig

    names = {f.name for f in dataclasses.fields(DiscoVLAConfig)}
    if config["format_version"] == 1:
        fields = {k: v for k, v in config.items() if k in names}
        fields.update(config.get("hyper_parameters") or {})
    else:
        fields = config.get("model")
        if not isinstance(fields, dict):
            raise AdapterLoadError(f"{path}: 'model' must hold the model config as an object, got {fields!r}")
    unknown = sorted(set(fields) - names)
    if unknown:
        raise AdapterLoadError(
            f"{path}: unknown model config field(s) {unknown} (written by discovla "
            f"{config.get('package_version', '?')}, newer than this code?)"
        )
    hints = typing.get_type_hints(DiscoVLAConfig)
    for name, value in fields.items():
        allowed = _plain_types(hints[name])
        if allowed and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
            raise AdapterLoadError(f"{path}: model field {name}={value!r}, expected {hints[name]}")
    return fields


def _plain_types(hint) -> tuple[type, ...]:
    """``str | None`` -> (str, NoneType), ``int`` -> (int,); () for what JSON cannot check simply."""
    args = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    return args if all(isinstance(a, type) and typing.get_origin(a) is None for a in args) else ()


def adapter_model_config(directory: str | Path | Location, **overrides) -> DiscoVLAConfig:
    """The DiscoVLAConfig an adapter folder was trained with; ``overrides`` (e.g. ``pretrained=path``) win."""
    from training.model import DiscoVLAConfig

    folder = _folder(directory)
    fields = _stored_fields(read_adapter_config(folder), folder.join(CONFIG_NAME))
    try:
        return DiscoVLAConfig(**{**fields, **overrides})
    except ValueError as e:
        raise AdapterLoadError(f"{folder.join(CONFIG_NAME)}: {e}") from e


def _check_compatible(cfg: DiscoVLAConfig, saved: dict, path: Location) -> None:
    """The fields that shape the tensors must match; other differences are logged."""
    ours = dataclasses.asdict(cfg)
    for key in TENSOR_FIELDS:
        if key in saved and saved[key] != ours[key]:
            raise AdapterLoadError(
                f"{path}: {key}={saved[key]!r} in the file, the model has {key}={ours[key]!r}"
            )
    differ = {
        k: (v, ours[k])
        for k, v in saved.items()
        if k not in TENSOR_FIELDS and k not in MEMORY_FIELDS and v != ours[k]
    }
    for key, (theirs, mine) in sorted(differ.items()):
        logger.warning(
            "%s: trained with %s=%r, loading into a model with %s=%r", path, key, theirs, key, mine
        )


def _read_tensors(folder: Location) -> dict[str, torch.Tensor]:
    path = folder.join(WEIGHTS_NAME)
    try:
        data = _read(path)
    except FileNotFoundError:
        pickles = [n for n in folder.list_names() if n.endswith(_PICKLE_SUFFIXES)]
        hint = f"; pickle files ({pickles}) are never loaded" if pickles else ""
        raise AdapterLoadError(f"{path}: not found{hint}") from None
    try:
        return load_safetensors(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterLoadError(
            f"{path}: not a safetensors file ({e}); pickled checkpoints are refused"
        ) from e


def load_adapters(
    model_or_cfg: DiscoVLA | DiscoVLAConfig, directory: str | Path | Location, device="cpu"
) -> DiscoVLA:
    """Load an adapter folder (a local path or a URI) into ``model`` (in place), or build the model from
    ``cfg`` first. The backbone, LoRA rank and IVFusion depths must match the file's. Returns the model.
    """
    from training.model import DiscoVLA, DiscoVLAConfig, build_model

    directory = _folder(directory)
    config = read_adapter_config(directory)
    cfg = model_or_cfg.cfg if isinstance(model_or_cfg, DiscoVLA) else model_or_cfg
    if not isinstance(cfg, DiscoVLAConfig):
        raise TypeError(
            f"load_adapters takes a DiscoVLA or a DiscoVLAConfig, got {type(model_or_cfg).__name__}"
        )
    config_path = directory.join(CONFIG_NAME)
    _check_compatible(cfg, _stored_fields(config, config_path), config_path)
    weights_path = directory.join(WEIGHTS_NAME)
    tensors = _read_tensors(directory)
    model = model_or_cfg if isinstance(model_or_cfg, DiscoVLA) else build_model(cfg, device=device)
    if lora_merged(model):
        raise AdapterLoadError(
            f"{directory}: this model's LoRA is already merged (merge_lora); load adapters into "
            "an unmerged model, then merge"
        )
    params = adapter_parameters(model)
    missing, unexpected = sorted(params.keys() - tensors.keys()), sorted(tensors.keys() - params.keys())
    if missing or unexpected:
        raise AdapterLoadError(
            f"{weights_path}: {len(missing)} missing tensors {missing[:3]}, {len(unexpected)} unexpected "
            f"{unexpected[:3]}"
        )
    for name, p in params.items():
        if tensors[name].shape != p.shape:
            raise AdapterLoadError(
                f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, expected {tuple(p.shape)}"
            )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(dtype=p.dtype, device=p.device))
    logger.info("loaded %d adapter tensors from %s", len(tensors), directory)
    return model
