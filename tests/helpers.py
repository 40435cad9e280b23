"""Helpers that several test modules share (one copy each; no test module imports another test module).

Each helper builds something real and small: tiny adapter folders, generated videos, tiny configs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from training.adapters import save_adapters
from training.model import DiscoVLAConfig, build_model

SEARCH_FRAMES, SEARCH_WORDS = 4, 16  # the tiny model of the search tests


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
