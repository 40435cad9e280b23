"""Resumable training state on disk (no pickle): what ``output_dir/checkpoint`` holds and how it is restored.

A checkpoint folder::

    adapters/                 the trainable tensors (training.adapters: safetensors + adapter_config.json)
    optimizer.safetensors     AdamW moments, keyed ``<param index>.<state name>``
    trainer_state.json        optimiser param groups, trainable tensor names, scheduler, position
    rng_rank<r>.json          Python, NumPy and torch generator states of rank r

It is written into ``checkpoint.tmp`` and renamed, so a crash mid-write leaves the previous checkpoint
intact. The same folder is what the Ray launcher reports to Ray Train (``ray.train.report``) and gets back
from ``ray.train.get_checkpoint()`` after a worker is lost. ``adapters/last`` and ``adapters/best`` (what a
user keeps) are written by :func:`save_named_adapters`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from shared.errors import DiscoVLAError
from training.distributed import barrier, gather_objects

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.json"

__all__ = ["CHECKPOINT_DIR", "CheckpointError", "save_state", "load_state", "save_named_adapters"]


class CheckpointError(DiscoVLAError, ValueError):
    """A checkpoint that is missing or does not fit the run that tries to resume from it."""


def _rng_state() -> dict:
    """Python, NumPy, torch (CPU and CUDA) generator states as JSON values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {
        "python": [version, list(internal), py_gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _trainable_names(model) -> list[str]:
    """The adapter tensors' names in the optimiser's order (training.parameters.adapter_parameters)."""
    from training.adapters import adapter_parameters

    return list(adapter_parameters(model))


def save_state(out: str | Path, model, optimizer, scheduler, position: dict, *, rank: int = 0) -> Path:
    """Write ``out/checkpoint`` (module docstring) via ``checkpoint.tmp`` + rename; every rank calls it.

    Rank 0 writes every file, the other ranks' RNG states gathered to it, so ``out`` need only exist on
    rank 0's machine (a remote run's ranks each have their own working folder: training.run_dir).
    Returns the checkpoint folder.
    """
    from safetensors.torch import save_file

    from training.adapters import save_adapters

    out = Path(out)
    final, tmp = out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.tmp"
    rng_states = gather_objects(json.dumps(_rng_state()))  # rank 0 writes them all: no shared disk needed
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for r, state in enumerate(rng_states):
            (tmp / f"rng_rank{r}.json").write_text(state)
        save_adapters(model, tmp / "adapters")
        opt = optimizer.state_dict()
        tensors = {
            f"{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items() for k, v in s.items()
        }
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]
        meta = {
            "param_groups": groups,
            "param_names": _trainable_names(model),
            "scheduler": scheduler.state_dict(),
            "position": position,
        }
        (tmp / STATE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    barrier()
    if rank == 0:
        old = out / f"{CHECKPOINT_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint at step %d -> %s", position["step"], final)
    barrier()
    return final


def load_state(path: str | Path, model, optimizer, scheduler, *, rank: int = 0) -> dict:
    """Restore the checkpoint folder ``path`` (written by :func:`save_state`) into freshly built objects.

    Returns the saved position (step, epoch, batch_in_epoch, best, total_steps, world_size, global_batch).
    """
    from safetensors.torch import load_file

    from training.adapters import load_adapters

    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(
            f"no checkpoint at {path} (expected {STATE_FILE} there); run without --resume "
            "to start from step 0"
        )
    meta = json.loads((path / STATE_FILE).read_text())
    if meta["param_names"] != _trainable_names(model):
        raise CheckpointError(
            f"{path}: the checkpoint's {len(meta['param_names'])} trainable tensors differ from "
            f"this model's {len(_trainable_names(model))}; resume with the same model settings"
        )
    load_adapters(model, path / "adapters")
    state: dict[int, dict] = {}
    for key, value in load_file(str(path / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    params = list(range(len(meta["param_names"])))
    optimizer.load_state_dict(
        {"state": state, "param_groups": [{**g, "params": params} for g in meta["param_groups"]]}
    )
    scheduler.load_state_dict(meta["scheduler"])
    rng_file = path / f"rng_rank{rank}.json"
    if rng_file.is_file():
        _set_rng_state(json.loads(rng_file.read_text()))
    else:
        logger.warning(
            "%s: no RNG state for rank %d (saved with another world size); keeping fresh seeds", path, rank
        )
    return meta["position"]


def save_named_adapters(model, out: str | Path, name: str, *, step: int, metrics: dict | None) -> Path:
    """``out/adapters/<name>`` (last or best) + ``<name>.json`` saying which step and metrics they are."""
    from training.adapters import save_adapters

    out = Path(out)
    folder = save_adapters(model, out / "adapters" / name)
    info = {"which": name, "step": step, "metrics": metrics}
    (out / "adapters" / f"{name}.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=float))
    return folder
