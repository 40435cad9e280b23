"""Ways to run the recipe: a dry run, one process or ``torchrun`` (local), or Ray Train's TorchTrainer.

- ``dry_run(cfg)``: build the model, return the resolved config and the trainable-parameter table.
- ``run_local(cfg, resume)``: this process trains; under ``torchrun --nproc-per-node N`` each of the N
  processes runs it and joins the process group from the ``torch.distributed`` environment variables
  (NCCL on GPUs, gloo on CPUs).
- ``run_ray(cfg, resume, num_workers, use_gpu)``: the same recipe in ``num_workers`` Ray Train workers
  (``ray.train.torch.TorchTrainer`` forms the process group). The caller (``pipelines.train``) owns
  ``ray.init``.

Ray specifics:

- **GPUs**: ``use_gpu="auto"`` asks the *cluster* (``ray.cluster_resources()``), not the driver, so a
  driver on a CPU-only head node still trains on the worker nodes' GPUs; ``"yes"``/``"no"`` force it.
- **Environment**: the workers get ``PYTHONPATH`` (this checkout first) and the ``DISCOVLA_*`` / ``HF_*``
  variables of the driver through Ray's ``runtime_env``; ``working_dir`` additionally ships a folder of
  code to every node (for nodes without the checkout) and starts the workers in it. Paths in the config
  are made absolute first; the videos and the caption set must be on storage that every node sees at
  the same path (or URIs). ``output_dir`` may be an object-store URI (``s3://...``, training.run_dir):
  rank 0 publishes the run's files there and Ray Train's ``storage_path`` is ``<output_dir>/ray`` on
  the same filesystem, so nodes need no shared disk for the outputs.
- **Lost workers**: each checkpoint (``save_every``, and the final one) is reported with
  ``ray.train.report``; with ``FailureConfig(max_failures=N)`` Ray restarts the worker group after a worker
  or a node dies and every worker resumes from ``ray.train.get_checkpoint()`` (same adapters, optimiser,
  RNG and data position), so the result equals an undisturbed run's. Steps after the last checkpoint are
  trained again.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from training.config import ConfigError, TrainConfig, format_config, make_config

logger = logging.getLogger(__name__)

_PATH_FIELDS = ("annotations", "video_root", "captions", "output_dir", "pretrained")
_FORWARDED_ENV = ("DISCOVLA_", "HF_", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS")
USE_GPU_CHOICES = ("auto", "yes", "no")
CODE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding the training/ package


def parameter_table(model) -> str:
    """Trainable parameters per group (tensors, parameters) with the total and the frozen remainder."""
    from training.adapters import parameter_groups

    groups = {
        g: [len(ps), sum(p.numel() for p in ps.values())] for g, ps in parameter_groups(model).items() if ps
    }
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(n for _, n in groups.values())
    rows = [f"{'group':<18}{'tensors':>9}{'parameters':>14}", "-" * 41]
    rows += [f"{g:<18}{t:>9}{n:>14,}" for g, (t, n) in sorted(groups.items())]
    rows += [
        "-" * 41,
        f"{'trainable total':<18}{sum(t for t, _ in groups.values()):>9}{trainable:>14,}",
        f"{'frozen':<18}{'':>9}{total - trainable:>14,}",
        f"trainable share: {100 * trainable / max(total, 1):.3f} % of {total:,}",
    ]
    return "\n".join(rows)


def dry_run(cfg: TrainConfig) -> str:
    """Resolve, build the model on CPU, return config + parameter table (nothing is trained or written)."""
    from training.model import build_model

    model = build_model(cfg.model_config(), "cpu")
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
    """Relative paths resolved against this directory (Ray workers start elsewhere)."""
    changes = {}
    for name in _PATH_FIELDS:
        value = getattr(cfg, name)
        if value and "://" not in value and (name != "pretrained" or Path(value).expanduser().exists()):
            changes[name] = str(Path(value).expanduser().resolve())
    return cfg.replace(**changes)


def resolve_use_gpu(use_gpu: str | bool, num_workers: int) -> bool:
    """Whether the Ray workers take a GPU each: ``auto`` = the cluster has GPUs (not: this driver has one)."""
    import ray

    if isinstance(use_gpu, bool):
        use_gpu = "yes" if use_gpu else "no"
    if use_gpu not in USE_GPU_CHOICES:
        raise ConfigError(f"use_gpu={use_gpu!r}: expected one of {list(USE_GPU_CHOICES)}")
    gpus = ray.cluster_resources().get("GPU", 0)
    if use_gpu == "auto":
        use_gpu = "yes" if gpus >= 1 else "no"
        logger.info(
            "Ray cluster has %g GPUs: the %d workers train on %s",
            gpus,
            num_workers,
            "GPUs" if use_gpu == "yes" else "CPUs",
        )
    if use_gpu == "yes" and gpus < num_workers:
        logger.warning(
            "%d Ray workers with one GPU each, the cluster has %g GPUs now: Ray waits until enough "
            "GPUs join (autoscaling) or forever",
            num_workers,
            gpus,
        )
    return use_gpu == "yes"


def worker_runtime_env(working_dir: str | Path | None = None) -> dict:
    """The Ray ``runtime_env`` of the training workers: this checkout on ``PYTHONPATH``, the driver's
    data/cache variables, and (optionally) ``working_dir`` shipped to every node as the workers' cwd."""
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
    for key in ("DISCOVLA_DATA", "DISCOVLA_CACHE"):
        if key in env:
            env[key] = str(Path(env[key]).expanduser().resolve())
    env["PYTHONPATH"] = os.pathsep.join([str(CODE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    runtime_env: dict = {"env_vars": env}
    if working_dir is not None:
        runtime_env["working_dir"] = str(Path(working_dir).resolve())
        runtime_env["excludes"] = [".git", ".venv*", "runs", "outputs", "data", "**/__pycache__"]
    return runtime_env


def _ray_worker(loop_config: dict) -> None:
    """Body of each Ray Train worker: the same recipe, the process group formed by Ray; checkpoints are
    reported to Ray Train and, after a restart, restored from it."""
    import ray.train
    import ray.train.torch

    from training.recipe import TrainRecipe

    cfg = make_config(loop_config["config"])
    rank = ray.train.get_context().get_world_rank()

    def report(path: Path, record: dict) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(path)) if rank == 0 else None
        ray.train.report(record, checkpoint=checkpoint, delete_local_checkpoint_after_upload=False)

    kwargs = {
        "device": ray.train.torch.get_device(),
        "on_checkpoint": report,
        "progress": loop_config["progress"],
    }
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            logger.info("Ray Train restarted the workers: resuming from %s", folder)
            recipe = TrainRecipe(cfg, checkpoint_dir=folder, **kwargs).setup()
    else:
        recipe = TrainRecipe(cfg, resume=loop_config["resume"], **kwargs).setup()
    try:
        recipe.train()
    finally:
        recipe.cleanup()


def check_storage(cfg: TrainConfig) -> None:
    """Before any model loads: ``output_dir`` writable, and with a Ray connection every node sees it and
    reads the inputs (the caption and frame-store manifests, the annotation folder, the video root)."""
    import ray

    from shared.storage_check import StorageCheck
    from shared.uris import join_uri
    from training.config import storage_locations

    inputs, outputs = storage_locations(cfg)
    sets = {cfg.captions, cfg.frame_store} - {None, ""}
    inputs = [join_uri(i, "manifest.json") if i in sets else i for i in inputs]
    check = StorageCheck(outputs=outputs, inputs=inputs).on_driver()
    if ray.is_initialized():
        check.on_cluster()
    else:
        check.cleanup()


def run_ray(
    cfg: TrainConfig,
    resume: bool = False,
    num_workers: int = 1,
    use_gpu: str | bool = "auto",
    max_failures: int = 3,
    working_dir: str | Path | None = None,
    progress: bool = True,
) -> dict | None:
    """Train through ``ray.train.torch.TorchTrainer`` with ``num_workers`` workers; returns the final metrics.

    ``max_failures``: worker-group restarts Ray may make after lost workers (each resumes from the last
    reported checkpoint); -1 = unlimited. The Ray run (its copies of the checkpoints) is kept under
    ``<output_dir>/ray/<run name>`` (on the object store when ``output_dir`` is a URI); each call starts
    a new Ray run, ``resume=True`` continues from ``<output_dir>/checkpoint`` as the local launcher does.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.run_dir import RunDir, read_run_json

    cfg = _absolute(cfg)
    check_storage(cfg)
    storage_path, storage_filesystem = RunDir(cfg.output_dir).ray_storage()
    gpu = resolve_use_gpu(use_gpu, num_workers)
    name = time.strftime("discovla-%Y%m%d-%H%M%S")
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"config": cfg.to_dict(), "resume": resume, "progress": progress},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=gpu),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env=worker_runtime_env(working_dir),
        ),
    )
    trainer.fit()
    summary = read_run_json(cfg.output_dir, "summary.json")
    return summary["final"] if summary is not None else None
