"""The embedded demo dataset: short real videos of coloured shapes that change over time.

Every video is a 4 s, 8 fps, 64x64 px H.264 clip of one shape on a dark background, in two phases (the
first half and the second half of the clip). What happens between the phases is the video's story:

    colour   "a red circle turns blue"                       (same place, colour changes)
    move     "a green square moves from the left to the right" (same colour, place changes)
    appear   "a yellow triangle appears at the top"           (empty, then the shape)

The video-level text describes the whole clip, which no single frame shows; the per-frame reference
descriptions ("a red circle on the left") describe what each frame sampled by the shared frame sampler
shows. They are written in the authors' pseudo-caption JSON shape ``{"<video_id>_<text>": [F captions]}``
so the demo trains on them through the same import path as the captions released with the paper.

Generated on first use into ``$DISCOVLA_CACHE/demo`` (default ``~/.cache/discovla/demo``), deterministic
from the seed; ``DONE.json`` is written last and names the generator version, so a changed generator or
seed regenerates. Layout: ``videos/<id>.mp4``, ``train.jsonl``, ``test.jsonl`` (the ``folder`` dataset's
annotation format), ``frame_captions_<split>.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shared.frames import sample_indices
from shared.synthetic import write_video

GENERATOR_VERSION = 1
SIZE = 64  # pixels, square
FPS = 8
SECONDS = 4
NUM_FRAMES = 4  # F of the demo preset: one sampled frame per second
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "purple": (160, 60, 200),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle")
PLACES = {"left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48), "centre": (32, 32)}
MOVES = (
    ("left", "right"),
    ("right", "left"),
    ("top", "bottom"),
    ("bottom", "top"),
    ("centre", "left"),
    ("centre", "right"),
)
BACKGROUND = (25, 25, 30)


def cache_root() -> Path:
    return Path(os.environ.get("DISCOVLA_CACHE", Path.home() / ".cache" / "discovla"))


@dataclass(frozen=True)
class Story:
    """Two phases of one shape: (colour, place) before and after the midpoint; colour None = no shape."""

    shape: str
    first: tuple[str | None, str]
    second: tuple[str | None, str]

    def text(self) -> str:
        (c1, p1), (c2, p2) = self.first, self.second
        if c2 is None:
            return (
                f"a {c1} {self.shape} disappears from the {p1}"
                if p1 != "centre"
                else f"a {c1} {self.shape} disappears"
            )
        if c1 is None:
            return (
                f"a {c2} {self.shape} appears at the {p2}"
                if p2 != "centre"
                else f"a {c2} {self.shape} appears"
            )
        if p1 == p2:
            return f"a {c1} {self.shape} turns {c2}"
        return f"a {c1} {self.shape} moves from the {p1} to the {p2}"

    def phase(self, t_s: float) -> tuple[str | None, str]:
        return self.first if t_s < SECONDS / 2 else self.second

    def describe(self, t_s: float) -> str:
        colour, place = self.phase(t_s)
        if colour is None:
            return "an empty dark background"
        return (
            f"a {colour} {self.shape} in the {place}"
            if place == "centre"
            else f"a {colour} {self.shape} on the {place}"
        )


def all_stories() -> list[Story]:
    """Every story the generator can tell (each text is unique)."""
    stories = []
    for shape in SHAPES:
        for c1 in COLOURS:
            for c2 in COLOURS:
                if c1 != c2:
                    stories.append(Story(shape, (c1, "centre"), (c2, "centre")))
            for p1, p2 in MOVES:
                stories.append(Story(shape, (c1, p1), (c1, p2)))
            for place in ("top", "bottom", "centre"):
                stories.append(Story(shape, (None, place), (c1, place)))
                stories.append(Story(shape, (c1, place), (None, place)))
    return stories


def draw(shape: str, colour: str | None, place: str, jitter: np.ndarray) -> np.ndarray:
    """One 64x64 RGB frame: the shape (radius 10) at ``place`` shifted by ``jitter`` pixels."""
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = BACKGROUND
    if colour is None:
        return img
    cx, cy = np.add(PLACES[place], jitter)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        mask = dx**2 + dy**2 <= 10**2
    elif shape == "square":
        mask = (np.abs(dx) <= 8) & (np.abs(dy) <= 8)
    else:  # triangle, apex up
        mask = (dy >= -9) & (dy <= 9) & (np.abs(dx) <= (dy + 9) * 0.6)
    img[mask] = COLOURS[colour]
    return img


def render(story: Story, rng: np.random.Generator) -> list[np.ndarray]:
    """FPS·SECONDS frames; a small random drift keeps frames of one phase from being identical."""
    drift = rng.integers(-2, 3, size=2)
    frames = []
    for i in range(FPS * SECONDS):
        colour, place = story.phase(i / FPS)
        frames.append(draw(story.shape, colour, place, drift * (i % FPS) // FPS))
    return frames


def generate(root: Path, *, seed: int = 0, n_train: int = 240, n_test: int = 60) -> Path:
    """Write the demo dataset under ``root`` (idempotent); returns ``root``."""
    marker = root / "DONE.json"
    stamp = {"generator_version": GENERATOR_VERSION, "seed": seed, "n_train": n_train, "n_test": n_test}
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    stories = all_stories()
    order = rng.permutation(len(stories))
    if n_train + n_test > len(stories):
        raise ValueError(f"at most {len(stories)} distinct demo videos, asked for {n_train + n_test}")
    splits = {
        "test": [stories[i] for i in order[:n_test]],
        "train": [stories[i] for i in order[n_test : n_test + n_train]],
    }
    frame_idx = sample_indices(FPS * SECONDS, FPS, NUM_FRAMES)
    for split, chosen in splits.items():
        rows, captions = [], {}
        for k, story in enumerate(tqdm(chosen, desc=f"demo videos ({split})", unit="video")):
            video_id = f"demo-{split}-{k:04d}"
            write_video(root / "videos" / f"{video_id}.mp4", render(story, rng), fps=FPS)
            rows.append({"video_id": video_id, "text": story.text()})
            captions[f"{video_id}_{story.text()}"] = [story.describe(i / FPS) for i in frame_idx]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / f"frame_captions_{split}.json").write_text(json.dumps(captions, indent=1))
    marker.write_text(json.dumps(stamp))
    return root


def ensure_demo_data(root: Path | None = None, **kwargs) -> Path:
    """The demo dataset's folder, generated on first use."""
    return generate(Path(root) if root else cache_root() / "demo", **kwargs)
