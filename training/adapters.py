"""Save and load DiscoVLA's trainable tensors alone: one frozen CLIP, one small adapter folder per dataset.

A folder holds ``adapters.safetensors`` (the LoRA matrices and fusion adapters, by parameter name; ~2 MB
for the ViT-B defaults) and ``adapter_config.json`` (sorted keys): format name and version, package
version, backbone, pretrained tag and hyper-parameters. Loading refuses anything that is not exactly ours
for this model: another format, another backbone or hyper-parameters, missing or unexpected tensors,
wrong shapes, or a pickle.
"""

from __future__ import annotations

import json
import logging
from importlib import metadata
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shared.errors import DiscoVLAError
from training.model import DiscoVLA, DiscoVLAConfig, build_model

__all__ = [
    "save_adapters", "load_adapters", "read_adapter_config", "adapter_model_config", "AdapterLoadError", "WEIGHTS_NAME", "CONFIG_NAME",
]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "adapters.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT_NAME = "discovla-adapters"
FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


class AdapterLoadError(DiscoVLAError, ValueError):
    """An adapter folder that this model cannot take; the message names the file and the mismatch."""


def _package_version() -> str:
    try:
        return metadata.version("discovla")
    except metadata.PackageNotFoundError:
        return "unknown"


def save_adapters(model: DiscoVLA, directory: str | Path) -> Path:
    """Write ``adapters.safetensors`` + ``adapter_config.json`` into ``directory``; returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.adapter_state_dict().items()}
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "backbone": model.cfg.backbone,
        "pretrained": model.cfg.pretrained,
        "hyper_parameters": model.cfg.hyper_parameters(),
        "max_words": model.cfg.max_words,
        "quick_gelu": model.cfg.quick_gelu,
        "parameter_groups": model.parameter_groups(),
        "trainable_parameters": model.trainable_parameters(),
    }
    weights_tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(weights_tmp), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    weights_tmp.replace(directory / WEIGHTS_NAME)
    config_tmp = directory / (CONFIG_NAME + ".tmp")
    config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    config_tmp.replace(directory / CONFIG_NAME)
    logger.info("saved %d adapter tensors (%d parameters) to %s", len(tensors), config["trainable_parameters"], directory)
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    """The parsed and format-checked ``adapter_config.json`` of an adapter folder."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else "no such folder"
        raise AdapterLoadError(f"{path}: not found; an adapter folder holds {CONFIG_NAME} + {WEIGHTS_NAME} (found: {found})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterLoadError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise AdapterLoadError(f"{path}: not a DiscoVLA adapter config (format {got!r}, expected {FORMAT_NAME!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise AdapterLoadError(
            f"{path}: format_version {config.get('format_version')!r}, this code reads version {FORMAT_VERSION}"
        )
    return config


def adapter_model_config(directory: str | Path, **overrides) -> DiscoVLAConfig:
    """The DiscoVLAConfig an adapter folder was trained with; ``overrides`` (e.g. ``pretrained=path``) win."""
    config = read_adapter_config(directory)
    hp = config["hyper_parameters"]
    fields = dict(
        backbone=config["backbone"], pretrained=config["pretrained"], num_frames=hp["num_frames"],
        max_words=config["max_words"], lora_rank=hp["lora_rank"], h_v=hp["h_v"], h_l=hp["h_l"],
        quick_gelu=config["quick_gelu"],
    )
    return DiscoVLAConfig(**{**fields, **overrides})


def _check_compatible(cfg: DiscoVLAConfig, config: dict, path: Path) -> None:
    """Backbone and tensor-defining hyper-parameters must match; other differences are logged."""
    if config.get("backbone") != cfg.backbone:
        raise AdapterLoadError(f"{path}: adapters for backbone {config.get('backbone')!r}, model is {cfg.backbone!r}")
    saved, ours = config.get("hyper_parameters", {}), cfg.hyper_parameters()
    for key in ("lora_rank", "h_v", "h_l"):
        if saved.get(key) != ours[key]:
            raise AdapterLoadError(f"{path}: {key}={saved.get(key)!r} in the file, the model has {key}={ours[key]!r}")
    if saved.get("num_frames") != ours["num_frames"]:
        logger.warning("%s: trained with num_frames=%s, model configured for %s", path, saved.get("num_frames"), ours["num_frames"])
    if config.get("pretrained") != cfg.pretrained:
        logger.warning("%s: trained on pretrained=%r, loading onto pretrained=%r", path, config.get("pretrained"), cfg.pretrained)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        pickles = sorted(p.name for p in path.parent.glob("*") if p.suffix in _PICKLE_SUFFIXES)
        hint = f"; pickle files ({pickles}) are never loaded" if pickles else ""
        raise AdapterLoadError(f"{path}: not found{hint}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterLoadError(f"{path}: not a safetensors file ({e}); pickled checkpoints are refused") from e


def load_adapters(model_or_cfg: DiscoVLA | DiscoVLAConfig, directory: str | Path, device="cpu") -> DiscoVLA:
    """Load an adapter folder into ``model`` (in place), or build the model from ``cfg`` first.

    Given a config, its ``backbone`` and hyper-parameters must match the file's. Returns the model.
    """
    directory = Path(directory)
    config = read_adapter_config(directory)
    cfg = model_or_cfg.cfg if isinstance(model_or_cfg, DiscoVLA) else model_or_cfg
    if not isinstance(cfg, DiscoVLAConfig):
        raise TypeError(f"load_adapters takes a DiscoVLA or a DiscoVLAConfig, got {type(model_or_cfg).__name__}")
    _check_compatible(cfg, config, directory / CONFIG_NAME)
    weights_path = directory / WEIGHTS_NAME
    tensors = _read_tensors(weights_path)
    model = model_or_cfg if isinstance(model_or_cfg, DiscoVLA) else build_model(cfg, device=device)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(params.keys() - tensors.keys()), sorted(tensors.keys() - params.keys())
    if missing or unexpected:
        raise AdapterLoadError(
            f"{weights_path}: {len(missing)} missing tensors {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        )
    for name, p in params.items():
        if tensors[name].shape != p.shape:
            raise AdapterLoadError(f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, expected {tuple(p.shape)}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(dtype=p.dtype, device=p.device))
    logger.info("loaded %d adapter tensors from %s", len(tensors), directory)
    return model
