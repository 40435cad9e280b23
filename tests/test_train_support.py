"""Support for the training tests (no tests here): a learnable colour-retrieval set of generated videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.datasets import VideoItem
from shared.shards.example import write_example_set
from shared.synthetic import write_video
from training.config import resolve_config

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "purple": (140, 30, 160),
    "orange": (240, 140, 20),
    "white": (235, 235, 235),
    "black": (20, 20, 20),
}


def colour_videos(root: Path, n: int = 8, seconds: int = 2, fps: float = 8.0) -> list[VideoItem]:
    """``n`` videos, each one colour with a moving lighter square; text "a <colour> video"."""
    rng = np.random.default_rng(0)
    items = []
    for name, rgb in list(COLOURS.items())[:n]:
        frames = []
        for t in range(int(seconds * fps)):
            frame = np.empty((48, 64, 3), np.uint8)
            frame[:] = np.clip(np.array(rgb) + rng.integers(-10, 10, 3), 0, 255)
            frame[10:22, 4 + 3 * t : 16 + 3 * t] = np.clip(np.array(rgb) + 30, 0, 255)
            frames.append(frame)
        path = write_video(root / f"{name}.mp4", frames, fps=fps)
        items.append(VideoItem(name, path, None, None, f"a {name} video", "train", f"{name}_0", True))
    return items


def colour_captions(root: Path, items: list[VideoItem], frames: int) -> Path:
    """A caption set whose captions read "<colour> frame <pos>: ..." (shared.shards.example)."""
    write_example_set(root, [i.video_id for i in items], num_frames=frames, num_shards=2, split="train")
    return root


def tiny_config(out: Path, **fields):
    """The demo preset on the tiny backbone, fast settings, overridable."""
    values = dict(
        backbone="DiscoVLA-Tiny",
        pretrained=None,
        frames=4,
        words=16,
        caption_words=16,
        batch_size=8,
        lr=3e-3,
        epochs=6,
        warmup_ratio=0.0,
        randaugment="",
        reference_world_size=1,
        num_workers=0,
        eval_every=0,
        save_every=0,
        log_every=1,
        eval_batch_size=8,
        output_dir=str(out),
        seed=0,
    )
    values.update(fields)
    return resolve_config("demo", **values)
