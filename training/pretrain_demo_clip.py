"""A small "pretrained" image CLIP for the demo, made locally by contrastive training on single frames.

The method's premise is a frozen image-text model adapted to video. No weights can be downloaded here,
so the demo makes its own: ``DiscoVLA-Demo`` (training/model_configs) trained from scratch on every frame
of the demo's *train* videos paired with the description of what that frame shows ("a red circle on the
left"). It never sees a video-level text. Loss: cross-entropy of each frame against all distinct
descriptions, ``CE(λ·cos(img, text_all))`` with a learned λ (as CLIP's logit scale), since the ~90
descriptions repeat within a batch and in-batch negatives would contain false negatives.

The result is an ordinary open_clip checkpoint (``safetensors`` state dict) that
``open_clip.create_model("DiscoVLA-Demo", pretrained=path)`` loads; it is cached next to the demo data and
keyed by the generator version, seed and the training settings.

    python -m training.pretrain_demo_clip [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
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
PRETRAIN_VERSION = 1


def frame_pairs(root: Path, split: str = "train") -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Every frame of the split's videos [N, 3, 64, 64] (normalised), the distinct descriptions, labels [N]."""
    n = demo_videos.FPS * demo_videos.SECONDS
    captions = json.loads((root / f"frame_captions_{split}.json").read_text())
    stories = {s.text(): s for s in demo_videos.all_stories()}
    frames, texts = [], []
    for key in tqdm(captions, desc="decoding demo frames", unit="video"):
        video_id, text = key.split("_", 1)
        sampled = sample_frames(root / "videos" / f"{video_id}.mp4", n)  # every frame of the clip
        frames.append(sampled.frames)
        texts += [stories[text].describe(t) for t in sampled.timestamps]
    vocab = sorted(set(texts))
    labels = torch.tensor([vocab.index(t) for t in texts])
    x = torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).float() / 255  # [N, 3, H, W]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std, vocab, labels


def pretrain(
    root: Path, out: Path, *, steps: int = 300, batch: int = 128, lr: float = 1e-3, seed: int = 0
) -> dict:
    """Train DiscoVLA-Demo on (frame, description) pairs; save ``out`` (safetensors); return its metrics."""
    torch.manual_seed(seed)
    register_model_configs()
    model = open_clip.create_model(BACKBONE, pretrained=None, force_quick_gelu=True)
    tokenizer = open_clip.get_tokenizer(BACKBONE)
    images, vocab, labels = frame_pairs(root, "train")
    tokens = tokenizer(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc="pretraining demo CLIP", unit="step")
    for _ in bar:
        idx = torch.randint(len(images), (batch,), generator=gen)
        img = F.normalize(model.encode_image(images[idx]), dim=-1)  # [b, D]
        txt = F.normalize(model.encode_text(tokens), dim=-1)  # [V, D]
        loss = F.cross_entropy(model.logit_scale.exp() * img @ txt.T, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}")
    metrics = {"frame_to_description_r1_test": frame_r1(model, tokenizer, root, "test")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.rename(out)
    return metrics


@torch.no_grad()
def frame_r1(model, tokenizer, root: Path, split: str) -> float:
    """Held-out frames → their description among all distinct descriptions: R@1 in percent."""
    model.eval()
    images, vocab, labels = frame_pairs(root, split)
    txt = F.normalize(model.encode_text(tokenizer(vocab)), dim=-1)
    img = F.normalize(torch.cat([model.encode_image(c) for c in images.split(256)]), dim=-1)
    return float((img @ txt.T).argmax(1).eq(labels).float().mean() * 100)


def ensure_demo_clip(root: Path | None = None, *, steps: int = 300, seed: int = 0) -> Path:
    """Path of the cached demo CLIP checkpoint, trained on first use."""
    root = demo_videos.ensure_demo_data(root)
    key = f"g{demo_videos.GENERATOR_VERSION}-p{PRETRAIN_VERSION}-s{seed}-n{steps}"
    out = root / f"demo-clip-{key}.safetensors"
    if not out.exists():
        metrics = pretrain(root, out, steps=steps, seed=seed)
        (root / f"demo-clip-{key}.json").write_text(json.dumps(metrics, indent=2))
        logger.info(
            "demo CLIP: %s (held-out frame→description R@1 %.1f%%)",
            out,
            metrics["frame_to_description_r1_test"],
        )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(ensure_demo_clip(steps=args.steps, seed=args.seed))


if __name__ == "__main__":
    main()
