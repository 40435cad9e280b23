"""The embedded demo dataset: short real videos of coloured shapes that change over time.

Every video is a 4 s, 8 fps, 64x64 px H.264 clip of one shape on a dark background, in two phases (the
first half and the second half of the clip). What happens between the phases is the video's story:

    colour   "a red circle turns blue"                       (same place, colour changes)
    move     "a green square moves from the left to the right" (same colour, place changes)
    appear   "a yellow triangle appears at the top"           (empty, then the shape)

Each video also has a *look* of its own, constant over the clip: the shape's size (small or large), the
background colour (five dark colours) and an orange dot in one corner (or none): 50 looks, so videos
that tell different stories rarely look alike, and videos that share a moment ("a red circle in the
centre") rarely share a frame.

The video-level text tells the story only, like a human-written benchmark caption ("a red circle turns
blue"), which no single frame shows. The per-frame reference descriptions say what each frame sampled by
the shared frame sampler shows, look included ("a large red circle in the centre, navy background, orange
dot at the top left"), as an image captioner such as LLaVA-NeXT describes a frame of a real video with
details particular to that video. They are written in the authors' pseudo-caption JSON shape
``{"<video_id>_<text>": [F captions]}`` so the demo trains on them through the same import path as the
captions released with the paper.

Generated on first use into ``$DISCOVLA_CACHE/demo`` (default ``~/.cache/discovla/demo``), deterministic
from the seed; ``DONE.json`` is written last and names the generator version, so a changed generator or
seed regenerates. Layout: ``videos/<id>.mp4``, ``train.jsonl``, ``test.jsonl`` (the ``folder`` dataset's
annotation format; each row also names the video's look: ``size``, ``background``, ``dot``),
``frame_captions_<split>.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shared.frames import sample_indices
from shared.synthetic import write_video

GENERATOR_VERSION = 2
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
BACKGROUNDS = {  # dark, so that every shape colour stands out on each
    "black": (18, 18, 22),
    "grey": (85, 85, 90),
    "navy": (20, 28, 95),
    "brown": (95, 55, 25),
    "dark green": (20, 75, 35),
}
SIZES = {"small": 7, "large": 12}  # circle radius in pixels; square and triangle scale with it
CORNERS = {"top left": (4, 4), "top right": (60, 4), "bottom left": (4, 60), "bottom right": (60, 60)}
DOT = (255, 140, 0)  # the orange corner dot: a 6x6 square centred on its CORNERS point
DOT_HALF = 3


def cache_root() -> Path:
    return Path(os.environ.get("DISCOVLA_CACHE", Path.home() / ".cache" / "discovla"))


@dataclass(frozen=True)
class Look:
    """What stays the same over one video: shape size, background colour, corner dot (None = no dot)."""

    size: str
    background: str
    dot: str | None

    def phrase(self) -> str:
        """The look as a caption fragment: "navy background, orange dot at the top left"."""
        text = f"{self.background} background"
        return f"{text}, orange dot at the {self.dot}" if self.dot else text


def all_looks() -> list[Look]:
    return [Look(size, bg, dot) for size in SIZES for bg in BACKGROUNDS for dot in (None, *CORNERS)]


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

    def describe(self, t_s: float, look: Look) -> str:
        """What the frame at ``t_s`` shows: "a large red circle on the left, grey background"."""
        colour, place = self.phase(t_s)
        if colour is None:
            return f"an empty {look.phrase()}"
        where = "in the centre" if place == "centre" else f"on the {place}"
        return f"a {look.size} {colour} {self.shape} {where}, {look.phrase()}"


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


def shape_mask(shape: str, size: str, centre: np.ndarray) -> np.ndarray:
    """[SIZE, SIZE] bool: the pixels of ``shape`` of ``size`` centred on ``centre`` (x, y)."""
    r = SIZES[size]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    dx, dy = xx - centre[0], yy - centre[1]
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r)
    return (np.abs(dy) <= 0.9 * r) & (np.abs(dx) <= (dy + 0.9 * r) * 0.6)  # triangle, apex up


def draw(shape: str, colour: str | None, place: str, look: Look, jitter: np.ndarray) -> np.ndarray:
    """One 64x64 RGB frame: background, corner dot, and the shape at ``place`` shifted by ``jitter``."""
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = BACKGROUNDS[look.background]
    if look.dot:
        x, y = CORNERS[look.dot]
        img[y - DOT_HALF : y + DOT_HALF, x - DOT_HALF : x + DOT_HALF] = DOT
    if colour is not None:
        img[shape_mask(shape, look.size, np.add(PLACES[place], jitter))] = COLOURS[colour]
    return img


def render(story: Story, look: Look, rng: np.random.Generator) -> list[np.ndarray]:
    """FPS·SECONDS frames; a small random drift keeps frames of one phase from being identical."""
    drift = rng.integers(-2, 3, size=2)
    frames = []
    for i in range(FPS * SECONDS):
        colour, place = story.phase(i / FPS)
        frames.append(draw(story.shape, colour, place, look, drift * (i % FPS) // FPS))
    return frames


def plan(rng: np.random.Generator, n_train: int, n_test: int) -> dict[str, list[tuple[str, Story, Look]]]:
    """``{split: [(video_id, story, look)]}``: distinct stories, each with a look drawn at random."""
    stories, looks = all_stories(), all_looks()
    if n_train + n_test > len(stories):
        raise ValueError(f"at most {len(stories)} distinct demo videos, asked for {n_train + n_test}")
    order = rng.permutation(len(stories))
    chosen = {"test": order[:n_test], "train": order[n_test : n_test + n_train]}
    return {
        split: [
            (f"demo-{split}-{k:04d}", stories[i], looks[rng.integers(len(looks))]) for k, i in enumerate(idx)
        ]
        for split, idx in chosen.items()
    }


def generate(
    root: Path, *, seed: int = 0, n_train: int = 240, n_test: int = 60, progress: bool = True
) -> Path:
    """Write the demo dataset under ``root`` (idempotent); returns ``root``."""
    marker = root / "DONE.json"
    stamp = {"generator_version": GENERATOR_VERSION, "seed": seed, "n_train": n_train, "n_test": n_test}
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    frame_idx = sample_indices(FPS * SECONDS, FPS, NUM_FRAMES)
    for split, chosen in plan(rng, n_train, n_test).items():
        rows, captions = [], {}
        for video_id, story, look in tqdm(
            chosen, desc=f"demo videos ({split})", unit="video", disable=not progress
        ):
            write_video(root / "videos" / f"{video_id}.mp4", render(story, look, rng), fps=FPS)
            rows.append({"video_id": video_id, "text": story.text(), **asdict(look)})
            captions[f"{video_id}_{story.text()}"] = [story.describe(i / FPS, look) for i in frame_idx]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / f"frame_captions_{split}.json").write_text(json.dumps(captions, indent=1))
    marker.write_text(json.dumps(stamp))
    return root


def read_split(root: Path, split: str) -> list[tuple[str, Story, Look]]:
    """``(video_id, story, look)`` of every video of a generated split, in file order."""
    stories = {s.text(): s for s in all_stories()}
    out = []
    for line in (Path(root) / f"{split}.jsonl").read_text().splitlines():
        row = json.loads(line)
        look = Look(row["size"], row["background"], row["dot"])
        out.append((row["video_id"], stories[row["text"]], look))
    return out


def ensure_demo_data(root: Path | None = None, **kwargs) -> Path:
    """The demo dataset's folder, generated on first use."""
    return generate(Path(root) if root else cache_root() / "demo", **kwargs)
