"""The caption stage's --save-frames: frame shards beside the caption shards, same numbers and protocol."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from captioning.tiny_model import save_tiny_llava_next
from pipelines import framestore as framestore_cli
from shared.frames import SamplerConfig, sample_frames
from shared.framestore import FrameStore, validate_frame_store
from shared.shards import read_manifest
from shared.synthetic import make_broken_video, make_test_video
from tests.caption_runs import caption_folder, local_ray, tiny_caption_config

pytestmark = pytest.mark.slow
F, SHORT = 4, 32


@pytest.fixture(scope="module")
def ray_session():
    with local_ray(3):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("caption_frames")
    videos = root / "videos"
    videos.mkdir()
    for seed in range(3):
        make_test_video(videos / f"vid{seed}.mp4", 2.0 + seed, 10.0, size=(64, 48), seed=seed)
    make_broken_video(videos / "bad.mp4", "truncated")
    annotations = videos / "test.jsonl"
    ids = ["vid0", "vid1", "vid2", "bad", "late"]  # "late": its file appears before the retry
    annotations.write_text("".join(json.dumps({"video_id": v, "text": f"clip {v}"}) + "\n" for v in ids))
    return {
        "root": root,
        "videos": videos,
        "annotations": annotations,
        "model": save_tiny_llava_next(root / "tiny"),
    }


def _run(data, out, **changes):
    cfg = tiny_caption_config(
        data["model"],
        out,
        frames=F,
        max_tokens=4,
        shard_size=2,
        save_frames=str(out / "frames"),
        save_frames_size=SHORT,
        save_frames_codec="png",
        **changes,
    )
    return caption_folder(data["annotations"], cfg)


def test_save_frames_writes_the_trainers_frames_beside_the_captions(ray_session, data, tmp_path):
    out = tmp_path / "captions"
    _run(data, out)
    captions, frames = read_manifest(out), json.loads((out / "frames" / "manifest.json").read_text())
    assert [e["file"] for e in frames["shards"]] == [e["file"] for e in captions["shards"]]
    assert [e["videos"] for e in frames["shards"]] == [e["videos"] for e in captions["shards"]]
    assert frames["provenance"]["caption_set"]["root"] == str(out)
    assert frames["provenance"]["sampler"] == captions["provenance"]["sampler"]
    store = FrameStore(out / "frames", expect_sampler=SamplerConfig(F).provenance(), short_side=SHORT)
    assert sorted(store.failed) == ["bad", "late"] and len(store) == 3
    for vid in ("vid0", "vid2"):  # exactly what the trainer decodes at the store's short side
        expected = sample_frames(data["videos"] / f"{vid}.mp4", F, resize_short=SHORT).frames
        assert np.array_equal(store.frames(vid), expected)
    assert validate_frame_store(out / "frames").ok

    # a frame shard lost (or a caption set made without --save-frames): the build command fills it in
    before = {vid: store.frames(vid) for vid in ("vid0", "vid1")}  # the videos of shard 1
    (out / "frames" / "data" / "test-00001-of-00003.parquet").unlink()
    (out / "frames" / "_stats" / "test-00001-of-00003.json").unlink()
    args = [
        "build",
        "--dataset",
        "folder",
        "--split",
        "test",
        "--annotations",
        str(data["annotations"]),
        "--captions",
        str(out),
        "--frames",
        str(F),
        "--image-size",
        str(SHORT),
        "--codec",
        "png",
        "--num-workers",
        "0",
        "-q",
    ]
    assert framestore_cli.main(args) == 0
    refilled = json.loads((out / "frames" / "manifest.json").read_text())
    assert [e["file"] for e in refilled["shards"]] == [e["file"] for e in frames["shards"]]
    refilled_store = FrameStore(out / "frames", short_side=SHORT)
    assert all(np.array_equal(refilled_store.frames(vid), before[vid]) for vid in before)

    # --retry-failed: the late video's shard is rewritten, its other video keeps its frames
    shutil.copy(data["videos"] / "vid1.mp4", data["videos"] / "late.mp4")
    try:
        _run(data, out, retry_failed=True)
    finally:
        (data["videos"] / "late.mp4").unlink()
    store = FrameStore(out / "frames", short_side=SHORT)
    assert sorted(store.failed) == ["bad"] and len(store) == 4
    assert np.array_equal(store.frames("late"), store.frames("vid1"))
    assert validate_frame_store(out / "frames").ok
