"""Dataset adapters: ``get_dataset(name, split, annotations=None, video_root=None).items()``.

Every adapter yields :class:`VideoItem` records (video id, resolved path, window, text, split) from
the benchmarks' public annotation files; see ``base`` for default roots and the ``item_id`` rule and
each adapter's module for its protocol.
"""

from shared.datasets.base import (
    DATA_ENV,
    DatasetAdapter,
    VideoItem,
    data_root,
    join_paragraph,
    summarize,
    unique_videos,
)
from shared.datasets.registry import DATASETS, get_dataset, list_datasets, register_dataset
from shared.paths import UnsafeVideoIdError

__all__ = [
    "DATASETS",
    "DATA_ENV",
    "DatasetAdapter",
    "UnsafeVideoIdError",
    "VideoItem",
    "data_root",
    "get_dataset",
    "join_paragraph",
    "list_datasets",
    "register_dataset",
    "summarize",
    "unique_videos",
]
