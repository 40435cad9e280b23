"""Dataset adapters: ``get_dataset(name, split, annotations=None, video_root=None).items()``.

Every adapter yields :class:`VideoItem` records (video id, resolved path, window, text, split) from
the benchmarks' public annotation files; see ``base`` for default roots and the ``item_id`` rule and
each adapter's module for its protocol.

    base.py         VideoItem, DatasetAdapter, default roots ($DISCOVLA_DATA), join_paragraph, summarize
    registry.py     DATASETS (name -> adapter class), get_dataset, list_datasets, register_dataset
    msrvtt.py       9k (or 7k) × 20 sentences / 1k-A test                       whole video, 12 / 32
    didemo.py       one paragraph per video                                      0-31 s,      12 / 64
    activitynet.py  one paragraph per video (v_ prefix optional on disk)         whole video, 12 / 64
    lsmdc.py        one sentence per clip: its own file, or a window in the movie file       12 / 32
    folder.py       your videos + JSONL/CSV of video_id, text[, start, end]                  12 / 32
Video files are found through ``shared.paths`` (safe ids, one cached listing per video root).
"""

from shared.datasets.base import (
    DATA_ENV,
    DatasetAdapter,
    VideoItem,
    data_root,
    join_paragraph,
    summarize,
    unique_videos,
    video_present,
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
    "video_present",
]
