"""The embedded demo dataset: short real videos of coloured shapes, some still and some changing over time.

Every video is a 4 s, 8 fps, 64x64 px H.264 clip of one shape on a dark background, in two phases (the
first half and the second half of the clip). Its video-level text is one of two kinds, as benchmark texts
are (docs/method.md, "What the demo's texts are like"):

    static   "a red circle on the left, navy background"        (both phases alike: what every frame shows)
    change   colour  "a red circle turns blue"                     (same place, colour changes)
             move    "a green square moves from the left to the right" (same colour, place changes)
             appear  "a yellow triangle appears at the top"        (empty, then the shape; or disappears)

A change text names what no single frame shows; a static text names what each frame shows, as most
MSRVTT sentences do ("a man is cooking in a kitchen"). The two kinds are mixed at ``CHANGE_SHARE``, the
share of change sentences measured on the MSRVTT and DiDeMo annotations by ``benchmarks.text_kinds``.

Each video also has a *look* of its own, constant over the clip: the shape's size (small or large), the
background colour (five dark colours) and an orange dot in one corner (or none): 50 looks, so videos
that tell different stories rarely look alike. A static story fixes the background (its text names it);
size and dot are drawn at random.

The per-frame reference descriptions say what each frame sampled by the shared frame sampler shows, look
included ("a large red circle in the centre, navy background, orange dot at the top left"), as an image
captioner such as LLaVA-NeXT describes a frame of a real video with details particular to that video.
They are written in the authors' pseudo-caption JSON shape ``{"<video_id>_<text>": [F captions]}`` so
the demo trains on them through the same import path as the captions released with the paper.

Generated on first use into ``$DISCOVLA_CACHE/demo`` (default ``~/.cache/discovla/demo``), deterministic
from the seed; ``DONE.json`` is written last and names the generator version, so a changed generator or
seed regenerates. Layout: ``videos/<id>.mp4``, ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (the
``folder`` dataset's annotation format; each row also names its ``kind`` and the video's look: ``size``,
``background``, ``dot``), ``frame_captions_<split>.json``. Every split has the same mix of kinds.
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

GENERATOR_VERSION = 3
SIZE = 64  # pixels, square
FPS = 8
SECONDS = 4
NUM_FRAMES = 4  # F of the demo preset: one sampled frame per second
SPLITS = ("train", "val", "test")
KINDS = ("static", "change")
# The share of video-level texts that describe a change: the mean of MSRVTT's (7.1 %) and DiDeMo's (51.5 %)
# shares measured by `python -m benchmarks.text_kinds --annotations ../shared/data` (docs/method.md).
CHANGE_SHARE = 0.293
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
    """Two phases of one shape: (colour, place) before and after the midpoint; colour None = no shape.

    Both phases alike = a static story, whose text also names its ``background`` (the video's look must
    have it); otherwise a change story (``background`` None: the text names no look).
    """

    shape: str
    first: tuple[str | None, str]
    second: tuple[str | None, str]
    background: str | None = None

    @property
    def kind(self) -> str:
        return "static" if self.first == self.second else "change"

    def text(self) -> str:
        (c1, p1), (c2, p2) = self.first, self.second
        if self.kind == "static":
            return f"a {c1} {self.shape} {_where(p1)}, {self.background} background"
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
        return f"a {look.size} {colour} {self.shape} {_where(place)}, {look.phrase()}"


def _where(place: str) -> str:
    return "in the centre" if place == "centre" else f"on the {place}"


def change_stories() -> list[Story]:
    """Every change story the generator can tell (each text is unique)."""
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


def static_stories() -> list[Story]:
    """Every static story: one shape, colour and place over the whole clip, on a named background."""
    return [
        Story(shape, (colour, place), (colour, place), background)
        for shape in SHAPES
        for colour in COLOURS
        for place in PLACES
        for background in BACKGROUNDS
    ]


def all_stories() -> list[Story]:
    """Every story the generator can tell, static then change (each text is unique)."""
    return static_stories() + change_stories()


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


def split_sizes(n: int) -> dict[str, int]:
    """``{"static": n_static, "change": n_change}`` of a split of ``n`` videos at :data:`CHANGE_SHARE`."""
    change = round(CHANGE_SHARE * n)
    return {"static": n - change, "change": change}


def plan(
    rng: np.random.Generator, n_train: int, n_test: int, n_val: int = 0
) -> dict[str, list[tuple[str, Story, Look]]]:
    """``{split: [(video_id, story, look)]}``: distinct stories at the kinds' mix, each with a look at random.

    Static and change videos are interleaved in a random order within each split; a static video's look
    has its story's background.
    """
    sizes = {"test": n_test, "val": n_val, "train": n_train}
    pools = {"static": static_stories(), "change": change_stories()}
    orders = {kind: list(rng.permutation(len(pool))) for kind, pool in pools.items()}
    for kind, pool in pools.items():
        wanted = sum(split_sizes(n)[kind] for n in sizes.values())
        if wanted > len(pool):
            raise ValueError(f"at most {len(pool)} distinct {kind} demo videos, asked for {wanted}")
    looks = all_looks()
    out = {}
    for split, n in sizes.items():
        if not n:
            continue
        chosen = [pools[k][orders[k].pop(0)] for k, m in split_sizes(n).items() for _ in range(m)]
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
        videos = []
        for k, story in enumerate(chosen):
            candidates = [lk for lk in looks if story.background in (None, lk.background)]
            look = candidates[rng.integers(len(candidates))]
            videos.append((f"demo-{split}-{k:04d}", story, look))
        out[split] = videos
    return out


def generate(
    root: Path,
    *,
    seed: int = 0,
    n_train: int = 240,
    n_val: int = 60,
    n_test: int = 60,
    progress: bool = True,
) -> Path:
    """Write the demo dataset under ``root`` (idempotent); returns ``root``. ``n_val=0``: no val split."""
    root = Path(root)
    marker = root / "DONE.json"
    stamp = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "change_share": CHANGE_SHARE,
    }
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    frame_idx = sample_indices(FPS * SECONDS, FPS, NUM_FRAMES)
    for split, chosen in plan(rng, n_train, n_test, n_val).items():
        rows, captions = [], {}
        for video_id, story, look in tqdm(
            chosen, desc=f"demo videos ({split})", unit="video", disable=not progress
        ):
            write_video(root / "videos" / f"{video_id}.mp4", render(story, look, rng), fps=FPS)
            rows.append({"video_id": video_id, "text": story.text(), "kind": story.kind, **asdict(look)})
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
