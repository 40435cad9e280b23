"""Ways to run the recipe: a dry run, one process or ``torchrun`` (local), or Ray Train's TorchTrainer.

- ``dry_run(cfg)``: build the model, return the resolved config and the trainable-parameter table.
- ``run_local(cfg, resume)``: this process trains; under ``torchrun --nproc-per-node N`` each of the N
  processes runs it and joins the process group from the ``torch.distributed`` environment variables
  (NCCL on GPUs, gloo on CPUs).
- ``run_ray(cfg, resume, num_workers, use_gpu)``: the same recipe in ``num_workers`` Ray Train workers
  (``ray.train.torch.TorchTrainer``, which forms the process group). Paths are made absolute first;
  on a multi-node cluster ``output_dir``, the videos and the caption set must be on storage that every
  node sees at the same path. The caller (``pipelines.train``) owns ``ray.init``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from training.config import TrainConfig, format_config, make_config

logger = logging.getLogger(__name__)

_PATH_FIELDS = ("annotations", "video_root", "captions", "output_dir", "pretrained")


def parameter_table(model) -> str:
    """Trainable parameters per group (tensors, parameters) with the total and the frozen remainder."""
    from training.adapters import parameter_groups

    groups = {g: [len(ps), sum(p.numel() for p in ps.values())] for g, ps in parameter_groups(model).items() if ps}
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(n for _, n in groups.values())
    rows = [f"{'group':<18}{'tensors':>9}{'parameters':>14}", "-" * 41]
    rows += [f"{g:<18}{t:>9}{n:>14,}" for g, (t, n) in sorted(groups.items())]
    rows += ["-" * 41, f"{'trainable total':<18}{sum(t for t, _ in groups.values()):>9}{trainable:>14,}",
             f"{'frozen':<18}{'':>9}{total - trainable:>14,}",
             f"trainable share: {100 * trainable / max(total, 1):.3f} % of {total:,}"]
    return "\n".join(rows)


def dry_run(cfg: TrainConfig) -> str:
    """Resolve, build the model on CPU, return config + parameter table (nothing is trained or written)."""
    from training.model import DiscoVLAConfig, build_model

    model = build_model(DiscoVLAConfig(backbone=cfg.backbone, pretrained=cfg.pretrained, num_frames=cfg.frames,
                                       max_words=max(cfg.words, cfg.caption_words), lora_rank=cfg.lora_rank,
                                       h_v=cfg.effective_h_v, h_l=cfg.effective_h_l), "cpu")
    return f"resolved config:\n{format_config(cfg)}\ntrainable parameters:\n{parameter_table(model)}"


def run_local(cfg: TrainConfig, resume: bool = False, **recipe_kwargs) -> dict | None:
    """setup -> train -> cleanup in this process (one of N under torchrun); returns the final metrics."""
    from training.recipe import TrainRecipe

    recipe = TrainRecipe(cfg, resume=resume, **recipe_kwargs).setup()
    try:
        return recipe.train()
    finally:
        recipe.cleanup()


def _absolute(cfg: TrainConfig) -> TrainConfig:
    """Relative paths resolved against this directory (Ray workers may start elsewhere)."""
    changes = {}
    for name in _PATH_FIELDS:
        value = getattr(cfg, name)
        if value and not value.startswith(("s3://", "gs://")) and (name != "pretrained" or Path(value).exists()):
            changes[name] = str(Path(value).expanduser().resolve())
    return cfg.replace(**changes)


def _ray_worker(loop_config: dict) -> None:
    """Body of each Ray Train worker: the same recipe, process group already formed by Ray."""
    import ray.train.torch

    os.chdir(loop_config["cwd"])
    os.environ.update(loop_config["env"])
    cfg = make_config(loop_config["config"])
    run_local(cfg, resume=loop_config["resume"], device=ray.train.torch.get_device())


def run_ray(cfg: TrainConfig, resume: bool = False, num_workers: int = 1, use_gpu: bool | None = None) -> dict | None:
    """Train through ``ray.train.torch.TorchTrainer`` with ``num_workers`` workers; returns summary.json."""
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = _absolute(cfg)
    use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    env = {k: os.environ[k] for k in ("DISCOVLA_DATA", "HF_HUB_OFFLINE", "HF_HOME") if k in os.environ}
    if "DISCOVLA_DATA" in env:
        env["DISCOVLA_DATA"] = str(Path(env["DISCOVLA_DATA"]).resolve())
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"config": cfg.to_dict(), "resume": resume, "cwd": os.getcwd(), "env": env},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="discovla", storage_path=str(Path(cfg.output_dir) / "ray")),
    )
    trainer.fit()
    summary = Path(cfg.output_dir) / "summary.json"
    return json.loads(summary.read_text())["final"] if summary.is_file() else None
