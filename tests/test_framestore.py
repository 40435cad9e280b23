"""Frame store: stored frames equal decoded ones, the trainer's tensors match, refusals, completion
protocol and resume, damage detection, caption-set shard layout, and the CLI."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipelines import framestore as cli_module
from shared.datasets import VideoItem
from shared.frames import SamplerConfig, sample_frames
from shared.framestore import (
    Codec,
    FrameStore,
    FrameStoreError,
    build_frame_store,
    completed_frame_shards,
    failed_video_rows,
    make_frame_provenance,
    validate_frame_store,
    video_rows,
    write_frame_manifest,
    write_frame_shard,
)
from shared.shards.example import write_example_set
from shared.synthetic import make_test_video
from training.augment import TRAIN_RANDAUGMENT, VideoTransform
from training.data import EpochBatchSampler, RetrievalDataset, clip_tokenizer, make_loader, open_frame_store

F, SHORT = 4, 32


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("fs_videos")
    paths = {
        f"v{i}": make_test_video(root / f"v{i}.mp4", seconds=3, fps=8, size=(64, 48), seed=i)
        for i in range(5)
    }
    (root / "broken.mp4").write_bytes(b"not a video")
    paths["broken"] = root / "broken.mp4"
    return paths


def _item(vid, path, window=(None, None)):
    return VideoItem(vid, path, window[0], window[1], f"text of {vid}", "train", f"{vid}_0", True)


def _build(videos, out, ids=("v0", "v1", "v2", "v3"), codec=Codec("png"), **kw):
    kw = {
        "dataset": "folder",
        "split": "train",
        "num_frames": F,
        "short_side": SHORT,
        "shard_size": 2,
        "progress": False,
        **kw,
    }
    return build_frame_store([_item(v, videos[v]) for v in ids], out, codec=codec, **kw)


def _test_split_store(videos, tmp_path, n: int, **kw) -> Path:
    """The folder dataset's test split of v0..v{n-1} (tmp_path/test.jsonl, returned) and its frame store
    at tmp_path/store, as the evaluator sees them (video ids are the file names)."""
    ann = tmp_path / "test.jsonl"
    ann.write_text(
        "".join(json.dumps({"video_id": f"v{i}.mp4", "text": f"clip {i}"}) + "\n" for i in range(n))
    )
    items = [VideoItem(f"v{i}.mp4", videos[f"v{i}"], None, None, "t", "test") for i in range(n)]
    build_frame_store(
        items,
        tmp_path / "store",
        dataset="folder",
        split="test",
        num_frames=F,
        short_side=SHORT,
        progress=False,
        **kw,
    )
    return ann


def _dataset(items, store=None, randaugment=TRAIN_RANDAUGMENT, **kw):
    return RetrievalDataset(
        items,
        num_frames=F,
        transform=VideoTransform(SHORT, randaugment=randaugment),
        tokenizer=clip_tokenizer("DiscoVLA-Tiny", 16),
        normalize=False,
        frame_store=store,
        **kw,
    )


def _open(root, frames=F, short=SHORT):
    return FrameStore(root, expect_sampler=SamplerConfig(frames).provenance(), short_side=short)


def test_lossless_store_gives_exactly_the_decoded_frames_and_trainer_tensors(videos, tmp_path):
    summary = _build(videos, tmp_path / "store")
    assert (summary.videos_written, summary.shards_written, summary.videos_failed) == (4, 2, 0)
    store = _open(tmp_path / "store")
    decoded = sample_frames(videos["v1"], F, resize_short=SHORT).frames
    assert store.frames("v1").shape == (F, SHORT, 43, 3) and np.array_equal(store.frames("v1"), decoded)
    items = [_item(v, videos[v]) for v in ("v0", "v1", "v2", "v3")]
    for randaugment in (TRAIN_RANDAUGMENT, None):  # training (same augmentation draws) and evaluation
        from_store = _dataset(items, store, randaugment)
        from_video = _dataset(items, None, randaugment, decode_short_side=SHORT)
        for key in [(i, 1234 + i) for i in range(4)]:
            assert torch.equal(from_store[key]["frames"], from_video[key]["frames"])
    # DataLoader workers open their own files: same batch with 0 and 2 workers
    ds = _dataset(items, store)
    runs = [
        next(iter(make_loader(ds, EpochBatchSampler(4, 4, seed=1, epoch=0), num_workers=w)))["frames"]
        for w in (0, 2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_jpeg_store_matches_decoding_up_to_the_codec_error(videos, tmp_path):
    _build(videos, tmp_path / "jpeg", ids=("v0", "v1"), codec=Codec("jpeg", 95))
    store = _open(tmp_path / "jpeg")
    items = [_item(v, videos[v]) for v in ("v0", "v1")]
    a = _dataset(items, store, None)[(1, 0)]["frames"].float()
    b = _dataset(items, None, None, decode_short_side=SHORT)[(1, 0)]["frames"].float()
    err = (a - b).abs()
    psnr = 10 * torch.log10(255**2 / (err**2).mean())
    assert 0 < err.mean() < 3 and psnr > 30, (err.mean(), psnr)  # lossy, but close
    assert (
        json.loads((tmp_path / "jpeg" / "manifest.json").read_text())["provenance"]["codec"]["quality"] == 95
    )


def test_videos_without_files_are_served_and_others_decoded(videos, tmp_path):
    _build(videos, tmp_path / "store", ids=("v0", "v1"))
    gone = tmp_path / "gone.mp4"
    shutil.copy(videos["v0"], gone)
    store = _open(tmp_path / "store")
    items = [_item("v0", gone), _item("v2", videos["v2"]), _item("v1", videos["v1"], window=(0, 2))]
    gone.unlink()  # v0 is only in the store; v2 is not stored; v1 is stored for the whole video only
    ds = _dataset(items, store, None)
    assert [i.video_id for i in ds.items] == ["v0", "v2", "v1"] and not ds.skipped["missing_file"]
    assert store.frames("v1", (0, 2)) is None
    windowed = sample_frames(videos["v1"], F, window=(0, 2), resize_short=SHORT).frames
    assert torch.equal(ds[(2, 0)]["frames"], VideoTransform(SHORT)(windowed))
    assert torch.equal(
        ds[(1, 0)]["frames"], VideoTransform(SHORT)(sample_frames(videos["v2"], F, resize_short=SHORT).frames)
    )
    without = _dataset(items, None, None)
    assert without.skipped["missing_file"] == ["v0_0"]


def test_store_made_with_another_sampler_or_resolution_is_refused(videos, tmp_path):
    _build(videos, tmp_path / "store", ids=("v0",))
    with pytest.raises(FrameStoreError, match="num_frames: store 4, trainer 8"):
        open_frame_store(tmp_path / "store", 8, {"size": SHORT})
    with pytest.raises(FrameStoreError, match="short side 32 px, the trainer decodes at 224"):
        open_frame_store(tmp_path / "store", F, {"size": (224, 224)})
    assert open_frame_store(tmp_path / "store", F, {"size": 224}, decode_short_side=SHORT).short_side == SHORT
    with pytest.raises(ValueError, match="decode_short_side=40"):
        _dataset([_item("v0", videos["v0"])], _open(tmp_path / "store"), decode_short_side=40)
    with pytest.raises(FrameStoreError, match="cannot share a store"):  # adding other frames to a store
        _build(videos, tmp_path / "store", ids=("v0",), short_side=48)


def test_completion_protocol_resume_and_damage(videos, tmp_path, caplog):
    root = tmp_path / "store"
    _build(videos, root)
    (root / "_stats" / "train-00001-of-00002.json").unlink()  # crash before the marker of shard 1
    assert sorted(completed_frame_shards(root, "train")) == [0]
    again = _build(videos, root)
    assert again.shards_written == 1 and sorted(completed_frame_shards(root, "train")) == [0, 1]
    data = root / "data" / "train-00000-of-00002.parquet"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, other bytes
    data.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING):
        assert sorted(completed_frame_shards(root, "train")) == [1]
    report = validate_frame_store(root)
    assert not report.ok and "checksum mismatch" in " ".join(report.problems)
    data.write_bytes(bytes(blob[:-100]))  # truncated: the cheap size check of the reader sees it
    with pytest.raises(FrameStoreError, match="truncated or replaced"):
        _open(root)


def test_failed_videos_and_damaged_frames(videos, tmp_path, caplog):
    summary = _build(videos, tmp_path / "store", ids=("v0", "broken"))
    assert summary.videos_failed == 1 and "broken" in summary.failures[0]
    store = _open(tmp_path / "store")
    assert (
        store.failed == {"broken"} and "broken" not in store and validate_frame_store(tmp_path / "store").ok
    )
    # a shard whose JPEG bytes are damaged: validate names it, the dataset decodes the video instead
    root, codec = tmp_path / "damaged", Codec("jpeg")
    prov = make_frame_provenance(sampler=SamplerConfig(F).provenance(), short_side=SHORT, codec=codec)
    s = sample_frames(videos["v3"], F, resize_short=SHORT)
    rows = video_rows("folder", "train", "v3", None, s.indices, s.timestamps, s.frames, codec)
    rows = rows.set_column(rows.schema.get_field_index("frame"), "frame", pa.array([b"\xff\xd8junk"] * F))
    write_frame_shard(
        root, "train", 0, 1, [rows, failed_video_rows("folder", "train", "x", None, F, "gone")], prov
    )
    write_frame_manifest(root)
    assert "v3 frame 0" in " ".join(validate_frame_store(root).problems)
    ds = _dataset([_item("v3", videos["v3"])], _open(root), None)
    with caplog.at_level(logging.WARNING):
        frames = ds[(0, 0)]["frames"]
    assert "damaged" in caplog.text and torch.equal(frames, VideoTransform(SHORT)(s.frames))


def test_frames_follow_the_caption_sets_shards(videos, tmp_path):
    write_example_set(
        tmp_path / "caps", ["v3", "v0", "v2", "v1"], F, num_shards=2, dataset="folder", split="train"
    )
    _build(videos, tmp_path / "caps" / "frames", ids=("v0", "v1", "v2", "v3"), caption_set=tmp_path / "caps")
    caps = json.loads((tmp_path / "caps" / "manifest.json").read_text())["shards"]
    frames = json.loads((tmp_path / "caps" / "frames" / "manifest.json").read_text())
    assert [e["file"] for e in frames["shards"]] == [e["file"] for e in caps]
    assert [e["videos"] for e in frames["shards"]] == [e["videos"] for e in caps]
    assert frames["provenance"]["caption_set"]["root"] == str(tmp_path / "caps")


def test_cli_build_info_validate(videos, tmp_path, capsys):
    ann = tmp_path / "train.jsonl"
    ann.write_text(
        "".join(json.dumps({"video_id": f"v{i}.mp4", "text": f"clip {i}"}) + "\n" for i in range(3))
    )
    root = videos["v0"].parent
    args = ["--dataset", "folder", "--split", "train", "--annotations", str(ann), "--video-root", str(root)]
    store = str(tmp_path / "store")
    assert (
        cli_module.main(
            [
                "build",
                *args,
                "--out",
                store,
                "--frames",
                "4",
                "--image-size",
                "32",
                "--num-workers",
                "0",
                "-q",
            ]
        )
        == 0
    )
    assert "3 videos" in capsys.readouterr().out
    assert cli_module.main(["info", store]) == 0
    assert "short side 32 px, codec jpeg q95" in capsys.readouterr().out
    assert cli_module.main(["validate", store, *args]) == 0
    (tmp_path / "store" / "data" / "train-00000-of-00001.parquet").write_bytes(b"x")
    assert cli_module.main(["validate", store]) == 1
    assert cli_module.main(["info", str(tmp_path / "nowhere")]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_train_config_frame_store_reaches_the_dataset(videos, tmp_path):
    from training.config import TrainConfig
    from training.data import build_dataset

    _build(videos, tmp_path / "store", ids=("v0", "v1"))
    cfg = TrainConfig(
        dataset="folder",
        frames=F,
        backbone="DiscoVLA-Tiny",
        use_pimgalign=False,
        use_aligndistill=False,
        frame_store=str(tmp_path / "store"),
    )
    items = [_item(v, videos[v]) for v in ("v0", "v1")]
    ds = build_dataset(cfg, {"size": SHORT}, train=True, items=items)
    assert ds.frame_store is not None and ds.decode_short_side == SHORT
    with pytest.raises(FrameStoreError, match="trainer decodes at 64"):
        build_dataset(cfg.replace(decode_short_side=64), {"size": SHORT}, train=True, items=items)


def test_evaluator_metrics_from_a_lossless_store_equal_decoding(videos, tmp_path):
    from training.evaluate import build_evaluation, evaluate

    ann = _test_split_store(videos, tmp_path, 4, codec=Codec("png"))
    root = videos["v0"].parent
    common = dict(
        adapters=None,
        annotations=ann,
        video_root=root,
        backbone="DiscoVLA-Tiny",
        pretrained=None,
        frames=F,
        words=16,
    )
    copies = tmp_path / "copies"
    shutil.copytree(root, copies)
    model, data, _ = build_evaluation(
        "folder", "test", **{**common, "video_root": copies}, frame_store=tmp_path / "store"
    )
    shutil.rmtree(copies)  # from here on only the store has these videos' frames
    from_store = evaluate(model, data, batch_size=4, progress=False)
    model, data, _ = build_evaluation("folder", "test", **common, decode_short_side=SHORT)
    decoded = evaluate(model, data, batch_size=4, progress=False)
    assert from_store["decode_failed"] == decoded["decode_failed"] == []
    assert from_store["t2v"] == decoded["t2v"] and from_store["v2t"] == decoded["v2t"]
    with pytest.raises(FrameStoreError, match="trainer decodes at 64"):
        build_evaluation("folder", "test", **common, frame_store=tmp_path / "store", decode_short_side=64)


def test_evaluate_cli_takes_a_frame_store(videos, tmp_path, capsys):
    from pipelines import evaluate as evaluate_cli

    ann = _test_split_store(videos, tmp_path, 2)
    args = [
        "--dataset",
        "folder",
        "--annotations",
        str(ann),
        "--video-root",
        str(videos["v0"].parent),
        "--adapters",
        "none",
        "--backbone",
        "DiscoVLA-Tiny",
        "--pretrained",
        "none",
        "--frames",
        str(F),
        "--words",
        "16",
        "--num-workers",
        "0",
        "--cache-dir",
        "none",
        "--out",
        str(tmp_path / "eval"),
        "-q",
        "--frame-store",
        str(tmp_path / "store"),
    ]
    assert evaluate_cli.main([*args, "--image-size", "64"]) == 1
    assert "frames are stored at short side 32 px, the trainer decodes at 64 px" in capsys.readouterr().err
    assert evaluate_cli.main(args) == 0
