"""The evaluator's teacher report (retrieval by S_img of the pseudo captions) and its groups of queries.

The teacher's similarity is recomputed here one video pair at a time, straight from the model's encoders
and ``training.losses.pimg_similarity``; ranks come from a brute-force count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import training.evaluate as ev
from shared.shards import load_caption_set
from tests.helpers import colour_captions, colour_videos, randomize_trainables
from training.augment import VideoTransform
from training.data import RetrievalDataset, clip_tokenizer
from training.losses import pimg_similarity
from training.model import DiscoVLAConfig, build_model

FRAMES, WORDS = 4, 16


def _brute_ranks(sim: np.ndarray, target: np.ndarray) -> np.ndarray:
    """How many candidates score at least as high as the true one, itself excluded (pessimistic ties)."""
    return np.array(
        [
            sum(sim[i, j] >= sim[i, target[i]] for j in range(sim.shape[1]) if j != target[i])
            for i in range(len(sim))
        ]
    )


def test_group_metrics_rank_a_group_of_queries_against_the_whole_gallery():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(9, 6, generator=g, dtype=torch.float64)  # 9 texts, 6 videos
    owner = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2, 4])  # videos 0, 2, 4 have a second text
    texts = [1, 2, 7]  # texts of videos 1 and 2
    got = ev.group_metrics(sim, owner, texts)
    r = _brute_ranks(sim.numpy()[texts], owner.numpy()[texts])
    assert got["t2v"]["R1"] == pytest.approx(100 * np.mean(r < 1)) and got["t2v"]["MnR"] == pytest.approx(
        r.mean() + 1
    )
    best = np.stack(
        [sim.numpy()[owner.numpy() == u].max(0) for u in range(6)], axis=1
    )  # [video, video's texts]
    r = _brute_ranks(best[[1, 2]], np.array([1, 2]))
    assert got["v2t"]["MnR"] == pytest.approx(r.mean() + 1)
    assert (got["num_texts"], got["num_videos"]) == (3, 2)


@pytest.fixture(scope="module")
def colour_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    items = colour_videos(root / "videos")
    captions = load_caption_set(colour_captions(root / "captions", items, frames=FRAMES))
    torch.manual_seed(0)
    model = build_model(
        DiscoVLAConfig(
            backbone="DiscoVLA-Tiny", pretrained=None, num_frames=FRAMES, max_words=WORDS, h_v=2, h_l=1
        )
    )
    randomize_trainables(model)  # non-zero adapters, so that they matter
    data = RetrievalDataset(
        items,
        num_frames=FRAMES,
        transform=VideoTransform.from_model(model.preprocess_cfg),
        tokenizer=clip_tokenizer("DiscoVLA-Tiny", WORDS),
        on_decode_error="blank",
        normalize=False,
    )
    return model, data, captions


def test_teacher_report_ranks_s_img_of_the_pseudo_captions(colour_set):
    model, data, captions = colour_set
    tokenizer = clip_tokenizer("DiscoVLA-Tiny", WORDS)
    groups = {"first half": [0, 1, 2, 3], "second half": [4, 5, 6, 7]}
    metrics = ev.evaluate(
        model,
        data,
        batch_size=3,
        captions=captions,
        caption_tokenizer=tokenizer,
        groups=groups,
        progress=False,
    )
    with torch.no_grad():  # one video at a time, straight through the encoders
        z = [
            model.encode_video(data.transform.normalize(data[i]["frames"][None]))[0] for i in range(len(data))
        ]
        p = [
            model.encode_pseudo_captions(tokenizer(captions.captions[it.video_id])[None]) for it in data.items
        ]
        sim = torch.tensor(
            [[float(pimg_similarity(pi, zj, model.logit_scale_value)) for zj in z] for pi in p]
        ).numpy()
    s_img = ev.teacher_similarity(model, data, captions, tokenizer, batch_size=3, progress=False)
    np.testing.assert_allclose(s_img.numpy(), sim, atol=1e-5)  # batched = one pair at a time
    n = len(data)
    for direction, s in (("t2v", s_img.numpy()), ("v2t", s_img.numpy().T)):  # ranks of that same matrix
        r = _brute_ranks(s, np.arange(n))
        assert metrics["teacher"][direction]["R1"] == pytest.approx(100 * np.mean(r < 1)), direction
        assert metrics["teacher"][direction]["MnR"] == pytest.approx(r.mean() + 1), direction
        half = _brute_ranks(s[4:], np.arange(4, 8))
        assert metrics["teacher"]["groups"]["second half"][direction]["MnR"] == pytest.approx(half.mean() + 1)
    assert metrics["teacher"]["num_videos"] == n
    assert set(metrics["groups"]) == set(groups) and metrics["groups"]["first half"]["num_texts"] == 4
    assert "R1" in metrics["t2v"]  # the student's video-level metrics stay where they were


def test_no_teacher_report_when_the_caption_set_misses_a_video(colour_set):
    model, data, captions = colour_set
    partial = type(captions)(**{**vars(captions), "captions": dict(list(captions.captions.items())[1:])})
    metrics = ev.evaluate(
        model,
        data,
        captions=partial,
        caption_tokenizer=clip_tokenizer("DiscoVLA-Tiny", WORDS),
        progress=False,
    )
    assert "teacher" not in metrics and "t2v" in metrics
