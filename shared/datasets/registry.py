"""The one registry of dataset adapters: ``--dataset NAME`` → an adapter class.

To add a dataset, write an adapter (a :class:`shared.datasets.base.DatasetAdapter` subclass or any
factory with the same signature) and add it to ``DATASETS`` (or call :func:`register_dataset`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shared.datasets.activitynet import ActivityNet
from shared.datasets.base import DatasetAdapter
from shared.datasets.demo import Demo
from shared.datasets.didemo import DiDeMo
from shared.datasets.folder import Folder
from shared.datasets.lsmdc import LSMDC
from shared.datasets.msrvtt import MSRVTT

DATASETS: dict[str, Callable[..., DatasetAdapter]] = {
    "msrvtt": MSRVTT,
    "didemo": DiDeMo,
    "activitynet": ActivityNet,
    "lsmdc": LSMDC,
    "folder": Folder,
    "demo": Demo,
}


def register_dataset(name: str, factory: Callable[..., DatasetAdapter], *, replace: bool = False) -> None:
    """Make ``factory(split, annotations=None, video_root=None, **options)`` available as ``name``."""
    if name in DATASETS and not replace:
        raise ValueError(f"dataset {name!r} is already registered (pass replace=True to override it)")
    DATASETS[name] = factory


def list_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(DATASETS)


def get_dataset(
    name: str,
    split: str,
    annotations: str | Path | None = None,
    video_root: str | Path | None = None,
    **options,
) -> DatasetAdapter:
    """The adapter for ``name`` / ``split``; ``options`` (e.g. ``frames``, ``words``) go to it."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list_datasets()}")
    return DATASETS[name](split, annotations=annotations, video_root=video_root, **options)
