"""RetrievalDataset: caption join and skip report, token layout, decode-failure policies, batching order."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from shared.datasets import VideoItem
from shared.frames import VideoDecodeError
from shared.shards import load_caption_set
from shared.shards.example import write_example_set
from shared.synthetic import make_broken_video, make_test_video
from training import data as data_module
from training.augment import TRAIN_RANDAUGMENT, VideoTransform
from training.data import EpochBatchSampler, RetrievalDataset, clip_tokenizer, collate, make_loader

F = 4


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {f"v{i}": make_test_video(root / f"v{i}.mp4", seconds=3, fps=8, seed=i) for i in range(5)}


def _item(vid, path, text=None, k=0, window=(None, None)):
    return VideoItem(vid, path, window[0], window[1], text or f"text of {vid}", "train", f"{vid}_{k}", True)


def _dataset(items, captions=None, **kwargs):
    kwargs.setdefault("transform", VideoTransform(32))
    return RetrievalDataset(
        items,
        num_frames=F,
        tokenizer=clip_tokenizer("DiscoVLA-Tiny", 16),
        captions=captions,
        caption_tokenizer=clip_tokenizer("DiscoVLA-Tiny", 32),
        **kwargs,
    )


def _decode(tokens: torch.Tensor) -> str:
    from open_clip.tokenizer import SimpleTokenizer

    ids = [int(t) for t in tokens if t != 0]
    return SimpleTokenizer().decode(ids[1:-1]).strip()  # drop SOT and EOT


def _squash(text: str) -> str:
    return "".join(text.lower().split())


def test_captions_are_joined_on_video_id_and_frame_pos(videos, tmp_path):
    write_example_set(tmp_path / "caps", ["v0", "v1", "v2"], num_frames=F, split="train")
    captions = load_caption_set(tmp_path / "caps", num_frames=F)
    items = [
        _item("v2", videos["v2"]),
        _item("v0", videos["v0"]),
        _item("v0", videos["v0"], "second text", k=1),
    ]
    ds = _dataset(items, captions)
    assert len(ds) == 3 and ds.skipped == {"missing_file": [], "no_captions": [], "failed_captions": []}
    for index, item in enumerate(items):
        sample = ds[index]
        assert (
            sample["video_id"] == item.video_id
            and sample["item_id"] == item.item_id
            and sample["index"] == index
        )
        assert sample["caption_tokens"].shape == (F, 32)
        decoded = [_squash(_decode(row)) for row in sample["caption_tokens"]]  # BPE decoding spaces digits
        assert [d.split(":")[0] for d in decoded] == [f"{item.video_id}frame{f}" for f in range(F)]
        assert decoded == [_squash(c) for c in captions.captions[item.video_id]]
        assert _squash(_decode(sample["text_tokens"])) == _squash(item.text)


def test_items_without_captions_or_files_are_skipped_and_reported_once(videos, tmp_path, caplog):
    write_example_set(tmp_path / "caps", ["v0", "v1", "v3"], num_frames=F, failed=["v1"], split="train")
    captions = load_caption_set(tmp_path / "caps", num_frames=F)
    items = [
        _item("v0", videos["v0"]),
        _item("v1", videos["v1"]),
        _item("v2", videos["v2"]),
        _item("v3", videos["v3"]),
        _item("v9", tmp_path / "v9.mp4"),
        _item("v2", videos["v2"], k=1),
    ]
    with caplog.at_level(logging.WARNING, logger="training.data"):
        ds = _dataset(items, captions)
    assert [i.item_id for i in ds.items] == ["v0_0", "v3_0"]
    assert ds.skipped == {
        "missing_file": ["v9_0"],
        "no_captions": ["v2_0", "v2_1"],
        "failed_captions": ["v1_0"],
    }
    reports = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert (
        len(reports) == 1
        and "2 no captions" in reports[0]
        and "v1_0" in reports[0]
        and "kept 2 of 6" in reports[0]
    )
    assert [ds[i]["video_id"] for i in range(len(ds))] == [
        "v0",
        "v3",
    ]  # positions never shift onto other captions


def test_caption_count_must_match_the_frames(videos, tmp_path):
    write_example_set(tmp_path / "caps", ["v0"], num_frames=6, split="train")
    with pytest.raises(ValueError, match="num_frames=4"):
        _dataset([_item("v0", videos["v0"])], load_caption_set(tmp_path / "caps"))


def test_sample_layout_window_and_truncation(videos, monkeypatch):
    long_text = " ".join(["word"] * 40)
    calls = []
    real = data_module.sample_frames
    monkeypatch.setattr(data_module, "sample_frames", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    ds = _dataset([_item("v0", videos["v0"], long_text, window=(1.0, 2.0))], normalize=False)
    s = ds[0]
    assert calls[0][1]["window"] == (1.0, 2.0) and calls[0][0][1] == F
    assert s["frames"].shape == (F, 3, 32, 32) and s["frames"].dtype == torch.uint8
    assert s["frame_mask"].tolist() == [1] * F and "caption_tokens" not in s
    tokens = s["text_tokens"]
    assert (
        tokens.shape == (16,) and tokens[0] == 49406 and tokens[-1] == 49407 and (tokens != 0).all()
    )  # SOT..EOT
    normalized = _dataset(list(ds.items))[0]["frames"]
    torch.testing.assert_close(normalized, ds.transform.normalize(s["frames"]))


def test_decode_failures_substitute_blank_or_raise(videos, tmp_path, caplog):
    broken = make_broken_video(tmp_path / "bad.mp4", "truncated")
    items = [_item("bad", broken), _item("v0", videos["v0"])]
    with caplog.at_level(logging.WARNING):
        sub = _dataset(items, skip_missing_files=False)[0]
    assert sub["video_id"] == "v0" and sub["decode_failed"] == ["bad"] and sub["index"] == 1
    blank = _dataset(items, on_decode_error="blank")[0]
    assert blank["video_id"] == "bad" and blank["frame_mask"].sum() == 0 and blank["decode_failed"] == ["bad"]
    with pytest.raises(VideoDecodeError):
        _dataset(items, on_decode_error="raise")[0]
    batch = collate([sub, blank])
    assert batch["decode_failed"] == ["bad", "bad"] and batch["frames"].shape == (2, F, 3, 32, 32)


def test_sampler_slices_global_batches_by_rank_and_depends_on_seed_and_epoch_only():
    def batches(**kw):
        return list(EpochBatchSampler(22, 8, seed=3, **kw))

    single = batches(epoch=0)
    assert len(single) == 2 and all(len(b) == 8 for b in single)  # the incomplete last batch is dropped
    ranks = [batches(epoch=0, rank=r, world_size=2) for r in (0, 1)]
    assert [ranks[0][k] + ranks[1][k] for k in range(2)] == single  # rank order = gathered order
    assert batches(epoch=0) == single and batches(epoch=1) != single
    assert batches(epoch=0, start_batch=1) == single[1:]
    assert len({i for b in single for i, _ in b}) == 16
    with pytest.raises(ValueError, match="divisible"):
        EpochBatchSampler(22, 8, seed=0, epoch=0, world_size=3)
    with pytest.raises(ValueError, match="one global batch"):
        EpochBatchSampler(5, 8, seed=0, epoch=0)


def test_worker_processes_give_the_same_augmented_batches(videos):
    ds = _dataset(
        [_item(v, p) for v, p in videos.items()],
        transform=VideoTransform(32, randaugment=TRAIN_RANDAUGMENT),
        normalize=False,
    )
    runs = []
    for workers in (0, 2):
        loader = make_loader(ds, EpochBatchSampler(len(ds), 4, seed=1, epoch=2), num_workers=workers)
        runs.append([b["frames"] for b in loader])
    assert len(runs[0]) == 1 and torch.equal(runs[0][0], runs[1][0])
    assert not np.array_equal(
        runs[0][0].numpy(), _dataset(list(ds.items), normalize=False)[0]["frames"].numpy()
    )
