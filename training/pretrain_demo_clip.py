"""A small "pretrained" image CLIP for the demo, made locally by contrastive training on single frames.

The method's premise is a frozen image-text model adapted to video. No weights can be downloaded here,
so the demo makes its own: ``DiscoVLA-Demo`` (training/model_configs) trained from scratch on every frame
of the demo's *train* videos paired with the description of what that frame shows ("a large red circle on
the left, grey background"). It never sees a video-level text.

Recipe, sized to take about a minute on two CPU cores: ``steps`` AdamW steps (betas 0.9/0.98 as CLIP)
of ``batch`` random frames, each against the distinct descriptions of its batch (identical descriptions
are merged, so a frame never has its own description as a negative), ``CE(λ·cos(img, text))`` with a
learned λ as CLIP's logit scale, 10 % linear warm-up then cosine decay. Texts are encoded at
``TEXT_CONTEXT`` positions instead of 77 (every description fits), which makes a step about half as
costly; the checkpoint keeps all 77 positions, so it is an ordinary open_clip checkpoint. (A peak
learning rate of 3e-3 diverges early; at 1e-3, 150 steps reach ~54 % held-out R@1 and 240 steps ~85 %.)

The result (``safetensors`` state dict) loads with ``open_clip.create_model("DiscoVLA-Demo",
pretrained=path)``; it is cached next to the demo data, keyed by the generator version, recipe version,
seed and steps, with its held-out frame→description R@1 in a JSON file beside it.

    python -m training.pretrain_demo_clip [--steps 240]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from shared import demo_videos
from shared.frames import sample_frames
from training.model import register_model_configs

logger = logging.getLogger(__name__)

BACKBONE = "DiscoVLA-Demo"
PRETRAIN_VERSION = 3
STEPS = 240  # default recipe: about a minute on two idle CPU cores
TEXT_CONTEXT = 24  # token positions used while pretraining (the longest description has 21)


def frame_pairs(root: Path, split: str = "train", *, progress: bool = True) -> tuple[torch.Tensor, list[str]]:
    """Every frame of the split's videos [N, 3, 64, 64] (CLIP-normalised) and its description (N strings)."""
    n = demo_videos.FPS * demo_videos.SECONDS
    frames, texts = [], []
    videos = demo_videos.read_split(root, split)
    for video_id, story, look in tqdm(videos, desc=f"decoding demo frames ({split})", disable=not progress):
        sampled = sample_frames(root / "videos" / f"{video_id}.mp4", n)  # every frame of the clip
        frames.append(sampled.frames)
        texts += [story.describe(t, look) for t in sampled.timestamps]
    x = torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).float() / 255  # [N, 3, H, W]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std, texts


def encode_text(model, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's ``CLIP.encode_text`` at ``tokens.shape[1]`` positions (it always uses all 77)."""
    n = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:n]
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    return x[torch.arange(len(x)), tokens.argmax(dim=-1)] @ model.text_projection  # EOT token


def tokenize(texts: list[str]) -> torch.Tensor:
    tokens = open_clip.get_tokenizer(BACKBONE, context_length=TEXT_CONTEXT)(texts)
    too_long = [t for t, row in zip(texts, tokens, strict=True) if row[-1] != 0]
    if too_long:
        raise ValueError(f"descriptions longer than {TEXT_CONTEXT} tokens: {too_long[:3]}")
    return tokens


def pretrain(
    root: Path,
    out: Path,
    *,
    steps: int = STEPS,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train DiscoVLA-Demo on (frame, description) pairs; save ``out`` (safetensors); return its metrics."""
    torch.manual_seed(seed)
    register_model_configs()
    model = open_clip.create_model(BACKBONE, pretrained=None, force_quick_gelu=True)
    images, texts = frame_pairs(root, "train", progress=progress)
    vocab = sorted(set(texts))
    labels = torch.tensor([vocab.index(t) for t in texts])
    tokens = tokenize(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.1)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="pretraining demo CLIP", unit="step", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(images), (batch,), generator=gen)
        distinct, target = labels[idx].unique(return_inverse=True)  # merge identical descriptions
        img = F.normalize(model.encode_image(images[idx]), dim=-1)  # [b, D]
        txt = F.normalize(encode_text(model, tokens[distinct]), dim=-1)  # [distinct, D]
        loss = F.cross_entropy(model.logit_scale.exp() * img @ txt.T, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - t0
    metrics = {
        "frame_to_description_r1_test": frame_r1(model, root, "test", progress=progress),
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "steps_per_second": round(steps / seconds, 2),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.rename(out)
    return metrics


@torch.no_grad()
def frame_r1(model, root: Path, split: str, *, progress: bool = True) -> float:
    """Held-out frames → their description among all distinct descriptions of the split: R@1 in percent."""
    model.eval()
    images, texts = frame_pairs(root, split, progress=progress)
    vocab = sorted(set(texts))
    labels = torch.tensor([vocab.index(t) for t in texts])
    txt = F.normalize(encode_text(model, tokenize(vocab)), dim=-1)
    img = F.normalize(torch.cat([model.encode_image(c) for c in images.split(256)]), dim=-1)
    return float((img @ txt.T).argmax(1).eq(labels).float().mean() * 100)


def ensure_demo_clip(
    root: Path | None = None, *, steps: int = STEPS, seed: int = 0, progress: bool = True
) -> Path:
    """Path of the cached demo CLIP checkpoint, trained on first use."""
    root = demo_videos.ensure_demo_data(root)
    key = f"g{demo_videos.GENERATOR_VERSION}-p{PRETRAIN_VERSION}-s{seed}-n{steps}"
    out = root / f"demo-clip-{key}.safetensors"
    if not out.exists():
        metrics = pretrain(root, out, steps=steps, seed=seed, progress=progress)
        (root / f"demo-clip-{key}.json").write_text(json.dumps(metrics, indent=2))
        logger.info(
            "demo CLIP: %s (%d steps in %.0f s; held-out frame→description R@1 %.1f%%)",
            out,
            steps,
            metrics["train_seconds"],
            metrics["frame_to_description_r1_test"],
        )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.pretrain_demo_clip", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initialisation and batches")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(ensure_demo_clip(steps=args.steps, seed=args.seed, progress=not args.no_progress))


if __name__ == "__main__":
    main()
