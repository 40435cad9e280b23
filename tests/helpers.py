"""Helpers that several test modules share (one copy each; no test module imports another test module).

Each helper builds something real and small: tiny CLIP checkpoints and adapter folders, a learnable
colour-retrieval set of generated videos with its caption set, tiny training configs, a free port.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

from shared.datasets import VideoItem
from shared.shards.example import write_example_set
from shared.synthetic import write_video
from tests.ray_cluster import free_port  # noqa: F401  (re-exported: one copy)
from training.adapters import save_adapters
from training.config import resolve_config
from training.model import DiscoVLAConfig, build_model, register_model_configs

SEARCH_FRAMES, SEARCH_WORDS = 4, 16  # the tiny model of the search tests


# ---------------------------------------------------------------------- tiny models
TINY = "DiscoVLA-Tiny"
CAPTIONS = ["a man is cooking pasta", "a dog runs on the beach", "two kids play football in a park", "rain"]


def save_tiny_checkpoint(folder) -> str:
    """A randomly initialised tiny CLIP saved as an ordinary open_clip checkpoint (safetensors state dict)."""
    register_model_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY, pretrained=None, force_quick_gelu=True)
    path = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    return str(path)


def tiny_cfg(checkpoint: str | None, **kw) -> DiscoVLAConfig:
    return DiscoVLAConfig(
        **{"backbone": TINY, "pretrained": checkpoint, "num_frames": 4, "h_v": 2, "h_l": 1, **kw}
    )


def randomize_trainables(model, seed: int = 1, std: float = 0.05) -> None:
    """Move every LoRA / adapter tensor away from its (partly zero) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)


def save_noise_adapters(directory: Path, seed: int) -> Path:
    """A tiny model's adapter folder with seeded non-zero adapters (so adapted encoders differ from CLIP)."""
    torch.manual_seed(seed)
    model = build_model(
        DiscoVLAConfig(
            backbone="DiscoVLA-Tiny", pretrained=None, num_frames=SEARCH_FRAMES, max_words=SEARCH_WORDS
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return save_adapters(model, directory)


# ---------------------------------------------------------------------- a learnable colour-retrieval set
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


def colour_folder(root: Path, frames: int = 4) -> tuple[Path, Path]:
    """The 8 colour videos as the folder dataset (``train.jsonl`` and ``test.jsonl`` under ``root``) and
    their caption set (``root/captions``, ``frames`` per video): ``(root, captions)``."""
    items = colour_videos(root, n=8)
    for split in ("train", "test"):
        rows = [{"video_id": f"{i.video_id}.mp4", "text": i.text} for i in items]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    named = [dataclasses.replace(i, video_id=f"{i.video_id}.mp4") for i in items]
    return root, colour_captions(root / "captions", named, frames=frames)
