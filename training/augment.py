"""Frame transforms of the trainer: clip-consistent RandAugment, resize, centre crop, CLIP normalisation.

docs/method.md "Input and augmentation": train = RandAugment ``rand-m7-n4-mstd0.5-inc1`` with the **same ops and magnitudes
for every frame of a clip**, then resize short side to S bicubic, centre crop S×S, CLIP mean/std.
Test = the same without RandAugment.

Clip consistency: timm's RandAugment draws its ops with ``np.random`` and each op's probability,
magnitude (``N(m, mstd)``), sign and fill with Python's ``random``. Before each frame both generators
are put in the same state, derived from one per-clip seed, so every frame gets the identical draw;
the caller's global RNG states are restored afterwards. Because the seed is a pure function of
(run seed, epoch, item), augmentation does not depend on worker processes or on resuming.

Frames leave :meth:`VideoTransform.__call__` as uint8 ``[F, 3, S, S]`` (4x smaller to pass between
processes); :meth:`VideoTransform.normalize` turns them into CLIP's float input, on any device.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from torchvision.transforms import InterpolationMode

from training.config import RANDAUGMENT_SECTION, TRAIN_RANDAUGMENT  # defined once, with the config

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_rand_augment(config_str: str, image_size: int):
    """timm's RandAugment with the video-retrieval convention: translate 45 % of the crop, bicubic."""
    hparams = {"translate_const": int(image_size * 0.45), "interpolation": Image.BICUBIC}
    sections = config_str.split("-")
    if sections[0] != "rand" or not all(
        RANDAUGMENT_SECTION.match(s) for s in sections[1:]
    ):  # timm ignores typos
        raise ValueError(
            f"randaugment={config_str!r}: expected 'rand' followed by -m<magnitude>, -n<ops>, "
            f"-mstd<std>, -mmax<max>, -inc<0|1>, -p<prob>, -w<weights> sections, "
            f"e.g. {TRAIN_RANDAUGMENT!r}"
        )
    try:
        return rand_augment_transform(config_str, hparams)
    except Exception as e:  # timm raises assertion/value errors on malformed strings
        raise ValueError(
            f"randaugment={config_str!r}: not a timm RandAugment string ({e}); "
            f"expected e.g. {TRAIN_RANDAUGMENT!r}"
        ) from e


def apply_consistently(augment, images: Sequence[Image.Image], seed: int) -> list[Image.Image]:
    """``augment`` on every image with identical random draws (seeded by ``seed``); global RNGs untouched."""
    saved_py, saved_np = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        draw_py, draw_np = random.getstate(), np.random.get_state()
        out = []
        for image in images:
            random.setstate(draw_py)  # the same ops, magnitudes and signs for every frame
            np.random.set_state(draw_np)
            out.append(augment(image))
        return out
    finally:
        random.setstate(saved_py)
        np.random.set_state(saved_np)


class VideoTransform:
    """uint8 frames [F, H, W, 3] -> uint8 [F, 3, S, S]; ``normalize`` -> float CLIP input.

    ``image_size``: S (the model's ``preprocess_cfg["size"]``); ``randaugment``: a timm string for
    training, ``None`` or ``""`` for evaluation.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        randaugment: str | None = None,
    ):
        size = image_size if isinstance(image_size, int) else image_size[0]
        if not isinstance(image_size, int) and len(set(image_size)) != 1:
            raise ValueError(f"image_size={image_size}: expected a square crop size")
        if size < 1:
            raise ValueError(f"image_size must be >= 1 pixel, got {size}")
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.randaugment = randaugment or None
        self._augment = clip_rand_augment(self.randaugment, self.size) if self.randaugment else None

    @classmethod
    def from_model(cls, preprocess_cfg: dict, randaugment: str | None = None) -> VideoTransform:
        """Size, mean and std from open_clip's ``get_model_preprocess_cfg`` (``model.preprocess_cfg``)."""
        return cls(
            preprocess_cfg["size"],
            preprocess_cfg.get("mean", OPENAI_CLIP_MEAN),
            preprocess_cfg.get("std", OPENAI_CLIP_STD),
            randaugment,
        )

    def __call__(self, frames: np.ndarray, seed: int = 0) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
        images = [Image.fromarray(frame) for frame in frames]
        if self._augment is not None:
            images = apply_consistently(self._augment, images, seed)
        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.uint8)
        for f, image in enumerate(images):
            image = TF.resize(image, self.size, interpolation=InterpolationMode.BICUBIC)  # short side = S
            image = TF.center_crop(image, [self.size, self.size])
            out[f] = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)  # [3, S, S]
        return out

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S, S] -> float32 (x/255 − mean) / std, on the frames' device."""
        mean, std = self.mean.to(frames.device), self.std.to(frames.device)
        return (frames.float() / 255.0 - mean) / std

    def __repr__(self) -> str:
        return f"VideoTransform(size={self.size}, randaugment={self.randaugment!r})"
