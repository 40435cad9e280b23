"""The training configuration: a frozen dataclass, presets as YAML data files, ``--set key=value`` overrides.

Resolution order (later wins)::

    TrainConfig defaults  <  training/presets/<name>.yaml (or any YAML path)  <  --set key=value ...

``--preset msrvtt`` is the reference recipe (docs/method.md "Total loss and optimisation"). Every field can be
overridden: ``--set lr=3e-4 --set batch_size=64 --set captions=null``; values are parsed as YAML
scalars and converted to the field's type. An unknown key or a bad value raises ``ConfigError`` naming
the field, the value and what was expected. Each run saves ``config.yaml`` (sorted keys, loadable again
with ``--preset <run>/config.yaml``) and ``run_info.json`` (git hash, package versions, world size).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shared.errors import UsageError

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).parent / "presets"
PRECISIONS = ("auto", "fp32", "bf16")
DECODE_POLICIES = ("substitute", "blank", "raise")  # what a dataset does with an undecodable video
DECODE_ERROR_POLICIES = ("substitute", "raise")  # those a training run may choose ("blank" is evaluation's)
TRAIN_RANDAUGMENT = "rand-m7-n4-mstd0.5-inc1"  # the reference recipe's timm RandAugment
RANDAUGMENT_SECTION = re.compile(
    r"^(mstd|mmax|inc|m|n|p|w)\d+(\.\d+)?$"
)  # timm's RandAugment string sections
_VERSIONED = ("torch", "open_clip_torch", "timm", "numpy", "decord", "safetensors", "ray", "discovla")


class ConfigError(UsageError):
    """A configuration value or key that cannot be used; the message names it and says what was expected."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults: the MSRVTT reference recipe (docs/method.md "Presets")."""

    # ---- data
    dataset: str = field(default="msrvtt", metadata={"help": "shared.datasets name"})
    train_split: str = "train"
    eval_split: str = "test"
    annotations: str | None = None  # annotation folder/file; None = <data>/<dataset>/annotations
    video_root: str | None = None  # None = <data>/<dataset>/videos
    captions: str | None = None  # caption-set root of the train split; needed by PImgAlign / AlignDistill
    frame_store: str | None = None  # frame store (pipelines.framestore) read instead of decoding; must match
    #   frames and decode_short_side (or the model's input size); videos it lacks are decoded
    frames: int = 12  # F frames per video = pseudo captions per sample
    words: int = 32  # query text tokens (SOT + words-2 BPE + EOT)
    caption_words: int = 32  # pseudo caption tokens: SOT + 30 BPE + EOT (docs/method.md "Pseudo captions")
    randaugment: str = TRAIN_RANDAUGMENT  # timm config string, same ops on every frame; "" = off
    decode_short_side: int | None = None  # resize while decoding (faster on big videos); None = as stored
    decode_timeout_s: float = 60.0
    on_decode_error: str = "substitute"  # substitute: the next decodable item takes the slot (counted)
    num_workers: int = 4  # DataLoader worker processes per training process
    # ---- model
    backbone: str = "ViT-B-32"  # open_clip name (ViT-B-32, ViT-B-16, DiscoVLA-Tiny for tests)
    pretrained: str | None = "openai"  # open_clip tag or checkpoint path; --no-pretrained = None
    lora_rank: int = 8
    h_v: int = 4  # IVFusion in the top h_v vision blocks
    h_l: int = 2  # IVFusion in the top h_l text blocks
    use_ivfusion: bool = True  # ablation: False = plain LoRA (h_v = h_l = 0)
    mlp_recompute: bool = False  # frozen MLPs recompute c_fc in backward: ~20% less memory, ~16% more time
    # ---- loss: L = L_vid + alpha·L_img + beta·L_KD
    alpha: float = 0.3
    beta: float = 1.0
    use_pimgalign: bool = True  # ablation: False drops alpha·L_img
    use_aligndistill: bool = True  # ablation: False drops beta·L_KD
    # ---- optimisation
    batch_size: int = 128  # GLOBAL batch (all processes, all accumulation chunks): the contrastive batch
    micro_batch_size: int | None = None  # samples per forward per process; None = batch_size / world size
    lr: float = 6e-4
    epochs: int = 5
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests); None = all epochs
    warmup_ratio: float = 0.1  # linear warm-up over this fraction of the steps, then cosine to 0
    weight_decay: float = 0.2  # on every trainable tensor
    adam_eps: float = 1e-6
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: float = 1.0  # max global L2 norm; 0 = off
    reference_world_size: int = (
        4  # gradient = full-batch gradient / this (docs/method.md "Total loss and optimisation")
    )
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    # ---- loop
    seed: int = 42
    eval_every: int = 150  # optimiser steps between evaluations; 0 = only at the end
    eval_batch_size: int = 64
    save_every: int = 150  # optimiser steps between checkpoints; 0 = only at the end
    log_every: int = 10
    diagnose_every: int = 0  # steps between loss diagnostics (training.diagnostics); 0 = off
    output_dir: str = "runs/msrvtt"

    def __post_init__(self):
        _validate(self)

    # ------------------------------------------------------------------ derived values
    @property
    def effective_h_v(self) -> int:
        return self.h_v if self.use_ivfusion else 0

    @property
    def effective_h_l(self) -> int:
        return self.h_l if self.use_ivfusion else 0

    @property
    def needs_captions(self) -> bool:
        """Pseudo captions feed PImgAlign and AlignDistill's teacher; plain L_vid needs none."""
        return self.use_pimgalign or self.use_aligndistill

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_config(self):
        """The :class:`training.model.DiscoVLAConfig` this run trains (the one place that maps the fields)."""
        from training.model import DiscoVLAConfig

        return DiscoVLAConfig(
            backbone=self.backbone,
            pretrained=self.pretrained,
            num_frames=self.frames,
            max_words=max(self.words, self.caption_words),
            lora_rank=self.lora_rank,
            h_v=self.effective_h_v,
            h_l=self.effective_h_l,
            mlp_recompute=self.mlp_recompute,
        )

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _validate(cfg: TrainConfig) -> None:
    def bad(name: str, expected: str):
        raise ConfigError(f"{name}={getattr(cfg, name)!r}: expected {expected}")

    for name in (
        "frames",
        "words",
        "caption_words",
        "lora_rank",
        "batch_size",
        "epochs",
        "reference_world_size",
        "eval_batch_size",
        "log_every",
    ):
        if getattr(cfg, name) < 1:
            bad(name, "an integer >= 1")
    for name in ("h_v", "h_l", "num_workers", "eval_every", "save_every", "seed", "diagnose_every"):
        if getattr(cfg, name) < 0:
            bad(name, "an integer >= 0")
    for name in ("micro_batch_size", "max_steps", "decode_short_side"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            bad(name, "an integer >= 1 or null")
    if cfg.words < 3 or cfg.caption_words < 3:
        bad("words" if cfg.words < 3 else "caption_words", "at least 3 tokens (SOT, one word, EOT)")
    for name in ("lr", "adam_eps", "decode_timeout_s"):
        if not getattr(cfg, name) > 0:
            bad(name, "a number > 0")
    for name in ("alpha", "beta", "weight_decay", "grad_clip"):
        if not getattr(cfg, name) >= 0:
            bad(name, "a number >= 0")
    if not 0 <= cfg.warmup_ratio < 1:
        bad("warmup_ratio", "a fraction in [0, 1)")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            bad(name, "a number in [0, 1)")
    if cfg.precision not in PRECISIONS:
        bad("precision", f"one of {list(PRECISIONS)}")
    if cfg.on_decode_error not in DECODE_ERROR_POLICIES:
        bad("on_decode_error", f"one of {list(DECODE_ERROR_POLICIES)}")
    sections = cfg.randaugment.split("-")
    if cfg.randaugment and (
        sections[0] != "rand" or not all(RANDAUGMENT_SECTION.match(x) for x in sections[1:])
    ):
        bad("randaugment", "a timm RandAugment string such as 'rand-m7-n4-mstd0.5-inc1', or '' for none")
    for name in ("dataset", "train_split", "eval_split", "backbone", "output_dir"):
        if not getattr(cfg, name):
            bad(name, "a non-empty string")


# ---------------------------------------------------------------------- building configs
def field_types() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> dict:
    """The mapping in ``training/presets/<name>.yaml``, or in a YAML file given by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown preset {str(name_or_path)!r}; expected one of {list_presets()} or a .yaml path"
            )
    if not path.is_file():
        raise ConfigError(f"preset file {path} not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def parse_override(text: str) -> tuple[str, typing.Any]:
    """``"key=value"`` -> (key, YAML-parsed value): ``lr=1e-4`` -> 0.0001, ``captions=null`` -> None."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _coerce(name: str, value, hint) -> typing.Any:
    """``value`` as the field's type (int, float, bool, str, or one of those | None)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{name}=None: expected a {base.__name__}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{name}={value!r}: expected true or false")
    if base is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"{name}={value!r}: expected an integer")
        return int(value)
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={value!r}: expected a number") from None
    if base is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}={value!r}: expected a string")
        return str(value)
    return value


def make_config(values: dict) -> TrainConfig:
    """A validated TrainConfig from a mapping of field names to (loosely typed) values."""
    types = field_types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; valid fields: {sorted(types)}")
    return TrainConfig(**{k: _coerce(k, v, types[k]) for k, v in values.items()})


def resolve_config(
    preset: str | Path | None = None, overrides: typing.Iterable[str] = (), **fields
) -> TrainConfig:
    """Defaults < preset file < ``overrides`` ("key=value" strings) < ``fields`` (keyword values)."""
    values = load_preset(preset) if preset is not None else {}
    values.update(dict(parse_override(o) for o in overrides))
    values.update(fields)
    return make_config(values)


# ---------------------------------------------------------------------- where a run reads and writes
def _is_location(value: str) -> bool:
    """A pretrained value that names a file (a path or URI), not an open_clip tag such as "openai"."""
    return "://" in value or "/" in value or Path(value).suffix != ""


def storage_locations(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """``(inputs, outputs)``: the locations (paths or URIs, as configured) a run of ``cfg`` reads and writes.

    Inputs: annotations and video root (when unset, the dataset's defaults: ``<data>/<dataset>/...``,
    or the annotation folder for ``folder``), the caption set and frame store when set, and
    ``pretrained`` when it is a file. Outputs: ``output_dir`` (read back too by ``--resume`` and by Ray
    Train after a lost worker). For the storage check that every node sees them before work starts.
    """
    from shared.datasets import get_dataset
    from shared.datasets.base import data_root

    annotations = str(data_root() / cfg.dataset / "annotations")
    video_root = str(data_root() / cfg.dataset / "videos")
    if cfg.annotations is None or cfg.video_root is None:
        try:  # the adapter knows its defaults (it may look for the annotation file)
            source = get_dataset(cfg.dataset, cfg.train_split, cfg.annotations, cfg.video_root)
            annotations, video_root = str(source.annotations), str(source.video_root)
        except (OSError, ValueError):
            pass  # the base defaults: the storage check then names what is missing
    inputs = [cfg.annotations or annotations, cfg.video_root or video_root]
    inputs += [v for v in (cfg.captions, cfg.frame_store) if v]
    if cfg.pretrained and _is_location(cfg.pretrained):
        inputs.append(cfg.pretrained)
    return inputs, [cfg.output_dir]


# ---------------------------------------------------------------------- saving and printing
def format_config(cfg: TrainConfig) -> str:
    """The resolved configuration as sorted YAML (what the run folder's config.yaml holds)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=True, default_flow_style=False)


def config_summary(cfg: TrainConfig) -> str:
    """One line: the fields that differ from the defaults, ``key=value`` in field order."""
    changed = [
        f"{f.name}={getattr(cfg, f.name)}"
        for f in dataclasses.fields(cfg)
        if getattr(cfg, f.name) != f.default
    ]
    return " ".join(changed) or "(all defaults)"


def save_config(cfg: TrainConfig, run_dir: str | Path, **extra) -> Path:
    """Write ``config.yaml`` (sorted keys) and ``run_info.json`` (git, versions, ``extra``) into ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(format_config(cfg), encoding="utf-8")
    from shared.versions import git_revision, library_versions

    versions = {"python": sys.version.split()[0], **library_versions(*_VERSIONED, missing="not installed")}
    info = {"git": git_revision(), "versions": versions, "argv": sys.argv, **extra}
    (run_dir / "run_info.json").write_text(
        json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return run_dir / "config.yaml"
