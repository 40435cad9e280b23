"""``demo``: the generated dataset of coloured shapes (``shared.demo_videos``), as a ``folder`` dataset.

Without ``--annotations`` the data is generated on first use into ``$DISCOVLA_CACHE/demo``; splits
``train`` (240 videos), ``val`` (60) and ``test`` (60), one text per video, 4 frames (one per second), 16 words.
"""

from __future__ import annotations

from shared.datasets.folder import Folder
from shared.demo_videos import NUM_FRAMES, ensure_demo_data


class Demo(Folder):
    name = "demo"
    splits = ("train", "val", "test")
    window_rule = "whole"
    frames = NUM_FRAMES
    words = 16

    def __init__(self, split, annotations=None, video_root=None, **options):
        if split not in self.splits:
            raise ValueError(f"demo has splits {self.splits}, got {split!r}")
        if annotations is None:
            annotations = ensure_demo_data()
        if video_root is None:
            video_root = f"{annotations}/videos"
        super().__init__(split, annotations, video_root, **options)
