"""Clip-consistent RandAugment and the CLIP frame transform."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from training.augment import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, TRAIN_RANDAUGMENT, VideoTransform


def _clip(n=3, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, 40, 56, 3))
    return np.clip(base + rng.integers(-40, 40, (n, 40, 56, 3)), 0, 255).astype(np.uint8)  # related frames


@pytest.mark.parametrize("seed", range(6))
def test_every_frame_of_a_clip_gets_the_same_ops(seed):
    t = VideoTransform(32, randaugment=TRAIN_RANDAUGMENT)
    frames = _clip(3, seed)
    out = t(frames, seed)
    reordered = t(frames[[2, 0, 1]].copy(), seed)
    # a frame's result does not depend on its position in the clip: same ops and magnitudes for all
    for src, dst in ((0, 1), (1, 2), (2, 0)):
        assert torch.equal(out[src], reordered[dst])
    assert torch.equal(t(frames[[1, 1]].copy(), seed)[0], t(frames[[1, 1]].copy(), seed)[1])


def test_augmentation_varies_between_clips_and_changes_pixels():
    t, plain = VideoTransform(32, randaugment=TRAIN_RANDAUGMENT), VideoTransform(32)
    frames = _clip(2)
    outs = [t(frames, s) for s in range(8)]
    assert len({o.numpy().tobytes() for o in outs}) > 4  # different draws per clip seed
    assert sum(not torch.equal(o, plain(frames)) for o in outs) >= 6
    assert torch.equal(t(frames, 3), t(frames, 3))  # a pure function of (frames, seed)


def test_global_random_states_are_untouched():
    t = VideoTransform(32, randaugment=TRAIN_RANDAUGMENT)
    random.seed(1)
    np.random.seed(1)
    py, npy = random.getstate(), np.random.get_state()[1].copy()
    t(_clip(2), 5)
    assert random.getstate() == py and np.array_equal(np.random.get_state()[1], npy)


def test_eval_transform_matches_open_clip_preprocessing():
    from open_clip.transform import image_transform
    from PIL import Image

    frames = _clip(2)
    ours = VideoTransform(24)
    out = ours.normalize(ours(frames))
    assert out.shape == (2, 3, 24, 24) and out.dtype == torch.float32
    reference = image_transform(24, is_train=False, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    for f in range(2):
        torch.testing.assert_close(out[f], reference(Image.fromarray(frames[f])), atol=1e-5, rtol=0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="randaugment='rand-zz'"):
        VideoTransform(32, randaugment="rand-zz")
    with pytest.raises(ValueError, match="uint8"):
        VideoTransform(32)(np.zeros((2, 8, 8, 3), np.float32))
