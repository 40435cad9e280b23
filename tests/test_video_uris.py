"""Videos on an object store (moto's S3 server on 127.0.0.1): listing, decoding, the four one-line storage
errors, and a caption run from an s3:// video root that writes the same rows as the run from local files."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from shared.datasets import get_dataset
from shared.frames import VideoDecodeError, plan_frames, sample_frames
from shared.paths import UnsafeVideoIdError, clear_index_cache, resolve_video, video_index
from shared.storage_errors import StorageError, display_uri, storage_error_line
from shared.video_source import join_uri, local_video
from tests.s3_server import S3Server

BUCKET = "videos"


@pytest.fixture(scope="module")
def bucket(s3, video_dir):
    """The session's test clips under s3://videos/clips/, one of them in a sub-folder with a space."""
    s3.make_bucket(BUCKET)
    s3.upload_dir(video_dir, BUCKET, "clips")
    s3.client().upload_file(str(video_dir / "short_5s.mp4"), BUCKET, "clips/sub dir/short copy.mp4")
    clear_index_cache()
    return s3


def test_frames_from_an_object_equal_the_local_file(bucket, video_dir):
    for name in ("long_30fps.mp4", "vfr.mp4"):
        uri = bucket.uri(BUCKET, f"clips/{name}")
        local = sample_frames(video_dir / name, 12, window=(1, 4), resize_short=32)
        remote = sample_frames(uri, 12, window=(1, 4), resize_short=32)
        np.testing.assert_array_equal(remote.frames, local.frames)
        np.testing.assert_array_equal(remote.indices, local.indices)
        assert (remote.fps, remote.n_video_frames) == (local.fps, local.n_video_frames)
        assert plan_frames(uri, 12).indices.tolist() == plan_frames(video_dir / name, 12).indices.tolist()


def test_the_temporary_copy_is_deleted_after_the_decode(bucket):
    with local_video(bucket.uri(BUCKET, "clips/short_5s.mp4")) as local:
        assert os.path.getsize(local) > 0 and "discovla-videos-" in local
    assert not os.path.exists(local)
    sample_frames(bucket.uri(BUCKET, "clips/short_5s.mp4"), 4)
    assert os.listdir(os.path.dirname(local)) == []


def test_a_uri_root_is_listed_once_and_ids_stay_inside_it(bucket):
    root = bucket.uri(BUCKET, "clips")
    index = video_index(root)
    assert index.n_files == 6
    found = index.resolve("short_5s")
    assert found.exists and found.path == join_uri(root, "short_5s.mp4") == bucket.uri(
        BUCKET, "clips/short_5s.mp4"
    )
    spaced = index.resolve("sub dir/short copy")
    assert spaced.exists and "sub%20dir/short%20copy.mp4?endpoint_override=" in spaced.path
    assert sample_frames(spaced.path, 2).n_video_frames == 150  # pyarrow decodes the escapes
    missing = index.resolve("nope")
    assert not missing.exists and missing.path == bucket.uri(BUCKET, "clips/nope.mp4")
    for unsafe in ("../secrets/x.mp4", "/clips/short_5s.mp4", "sub dir/../../x", "s3://other/x.mp4"):
        with pytest.raises(UnsafeVideoIdError):
            resolve_video(root, unsafe)


def test_a_folder_dataset_with_a_uri_video_root(bucket, tmp_path):
    annotations = tmp_path / "test.jsonl"
    rows = [{"video_id": v, "text": f"clip {v}"} for v in ("pal_25fps", "vfr", "gone")]
    annotations.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = bucket.uri(BUCKET, "clips")
    adapter = get_dataset("folder", "test", annotations=annotations, video_root=root)
    items = adapter.items()
    assert [(i.video_id, i.exists) for i in items] == [("pal_25fps", True), ("vfr", True), ("gone", False)]
    assert items[0].path == bucket.uri(BUCKET, "clips/pal_25fps.mp4")
    assert adapter.video_source()["video_root"] == root  # provenance: the URI as given (no secrets in it)


def test_annotations_on_the_object_store_beside_the_videos(bucket, video_dir):
    """``--annotations s3://.../test.jsonl`` without --video-root: the videos are looked for beside it, in
    the bucket, as for a local annotation file; a missing annotation object is one line naming it."""
    rows = [{"video_id": v, "text": f"clip {v}"} for v in ("pal_25fps", "gone")]
    bucket.client().upload_file(str(video_dir / "pal_25fps.mp4"), BUCKET, "annotated/pal_25fps.mp4")
    bucket.client().put_object(
        Bucket=BUCKET, Key="annotated/test.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows).encode()
    )
    for given in (
        bucket.uri(BUCKET, "annotated/test.jsonl"),
        bucket.uri(BUCKET, "annotated"),
    ):  # the file, its folder
        adapter = get_dataset("folder", "test", annotations=given)
        items = adapter.items()
        assert [(i.video_id, i.exists) for i in items] == [("pal_25fps", True), ("gone", False)]
        assert items[0].path == bucket.uri(BUCKET, "annotated/pal_25fps.mp4")
        assert adapter.describe()["annotations"] == bucket.uri(BUCKET, "annotated/test.jsonl")
    with pytest.raises(StorageError) as caught:
        get_dataset("folder", "test", annotations=bucket.uri(BUCKET, "nowhere/test.jsonl"))
    assert (
        str(caught.value)
        == f"{bucket.uri(BUCKET, 'nowhere/test.jsonl')}: no such object (nothing is stored at this key)"
    )


def test_display_uri_keeps_endpoint_options_and_drops_secrets():
    given = "s3://AKIA:s3cr3t@bucket/v?endpoint_override=10.0.0.1:9000&secret_key=s3cr3t&scheme=http"
    shown = display_uri(given)
    assert "s3cr3t" not in shown and "AKIA" not in shown
    assert shown == "s3://bucket/v?endpoint_override=10.0.0.1:9000&scheme=http"
    assert display_uri("/data/videos") == "/data/videos"


def _decode_error(uri: str) -> str:
    with pytest.raises(VideoDecodeError) as caught:
        sample_frames(uri, 4, timeout_s=120)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_missing_object_and_a_missing_bucket_are_one_line_naming_the_uri(bucket):
    uri = bucket.uri(BUCKET, "clips/absent.mp4")
    assert _decode_error(uri) == f"{uri}: no such object (nothing is stored at this key)"
    uri = bucket.uri("no-such-bucket", "clips/a.mp4")
    assert _decode_error(uri) == (
        f"{uri}: the bucket 'no-such-bucket' does not exist (check the bucket name and the endpoint)"
    )
    with pytest.raises(
        StorageError, match="^s3://no-such-bucket/clips.*: the bucket 'no-such-bucket' does not exist"
    ):
        video_index(bucket.uri("no-such-bucket", "clips"))


def test_an_unreachable_endpoint_is_one_line_naming_the_uri_and_endpoint():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"s3://videos/a.mp4?endpoint_override=127.0.0.1:{port}&scheme=http"
    assert _decode_error(uri) == (
        f"{uri}: the endpoint 127.0.0.1:{port} cannot be reached (check endpoint_override= in the URI or "
        "AWS_ENDPOINT_URL, that the server is up, and the network)"
    )


def test_a_stalled_object_store_fails_the_decode_at_its_deadline():
    """An endpoint that accepts connections and never answers: the copy runs inside the decode's
    deadline, so the decode fails on time like a stalled local decode, naming the URI."""
    import time

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # connections complete in the backlog; nothing is ever read or answered
        uri = f"s3://videos/stalled.mp4?endpoint_override=127.0.0.1:{server.getsockname()[1]}&scheme=http"
        started = time.monotonic()
        with pytest.raises(VideoDecodeError) as caught:
            sample_frames(uri, 4, timeout_s=1.0)
        assert time.monotonic() - started < 5
    assert str(caught.value) == f"{uri}: decoding did not finish within timeout_s=1 s"


def test_denied_access_is_one_line_naming_the_uri(s3, monkeypatch):
    """A second server that checks credentials (moto: INITIAL_NO_AUTH_ACTION_COUNT=0): the session's
    AWS_* test keys are not known to it, as unknown keys are not to a real S3."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with S3Server() as strict:
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        uri = strict.uri(BUCKET, "clips/a.mp4")
        message = _decode_error(uri)
        assert message.startswith(f"{uri}: access denied (check the credentials: AWS_ACCESS_KEY_ID")
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(uri)
        with pytest.raises(OSError) as caught:
            fs.get_file_info(pafs.FileSelector(path.rsplit("/", 1)[0], recursive=True))
        assert storage_error_line(uri, caught.value, fs) == message  # the listing's error reads the same


# ---- a caption run from the object store -----------------------------------------------------------

F = 3


@pytest.fixture(scope="module")
def caption_data(bucket, tmp_path_factory):
    from captioning.tiny_model import save_tiny_llava_next
    from shared.synthetic import make_test_video

    root = tmp_path_factory.mktemp("s3_caption")
    videos = root / "videos"
    videos.mkdir()
    ids = ["a", "b", "c"]
    for seed, video_id in enumerate(ids):
        make_test_video(videos / f"{video_id}.mp4", 2.0 + seed, 10.0, size=(64, 48), seed=seed)
    annotations = root / "test.jsonl"
    lines = [{"video_id": v, "text": f"clip {v}"} for v in [*ids, "missing"]]
    annotations.write_text("".join(json.dumps(line) + "\n" for line in lines))
    bucket.upload_dir(videos, BUCKET, "run")
    return {"videos": videos, "annotations": annotations, "model": save_tiny_llava_next(root / "tiny-llava")}


@pytest.mark.slow
def test_captions_from_an_s3_video_root_equal_those_from_local_files(caption_data, bucket, tmp_path):
    from shared.shards import read_caption_rows, read_manifest
    from tests.caption_runs import caption_folder, local_ray, tiny_caption_config

    def run(video_root, out):
        cfg = tiny_caption_config(caption_data["model"], out, frames=F, max_tokens=4, shard_size=2)
        caption_folder(caption_data["annotations"], cfg, video_root=video_root)
        table = read_caption_rows(out).table.drop_columns(["_file"])
        return {(r["video_id"], r["frame_pos"]): r for r in table.to_pylist()}, read_manifest(out)[
            "provenance"
        ]

    remote_root = bucket.uri(BUCKET, "run")
    with local_ray(2):
        local_rows, local_prov = run(caption_data["videos"], tmp_path / "local")
        remote_rows, remote_prov = run(remote_root, tmp_path / "remote")
    missing_uri = bucket.uri(BUCKET, "run/missing.mp4")
    for pos in range(F):
        row = remote_rows.pop(("missing", pos))
        assert row["status"] == "failed"
        assert row["error"] == f"decode: no such object (nothing is stored at this key): {missing_uri}"
        assert "file not found" in local_rows.pop(("missing", pos))["error"]
    assert len(remote_rows) == 3 * F and remote_rows == local_rows
    assert remote_prov["video_source"]["video_root"] == remote_root
    assert local_prov["video_source"]["video_root"] == str(Path(caption_data["videos"]))


def test_a_frame_store_built_from_an_s3_video_root_equals_the_local_build(
    bucket, video_dir, tmp_path, capsys
):
    """``pipelines.framestore build --video-root s3://...`` stores the frames of the local build; a second
    build of the same store is refused while the first holds its lease."""
    from pipelines import framestore as cli_module
    from shared.frames import SamplerConfig
    from shared.framestore import FrameStore
    from shared.lease import OutputLease

    annotations = tmp_path / "train.jsonl"
    ids = ["long_30fps", "pal_25fps", "vfr"]
    annotations.write_text("".join(json.dumps({"video_id": v, "text": v}) + "\n" for v in ids))
    common = ["--dataset", "folder", "--split", "train", "--annotations", str(annotations), "--frames", "4"]
    common += ["--image-size", "32", "--codec", "raw", "--num-workers", "0", "-q"]
    stores = {}
    for name, root in (("local", str(video_dir)), ("s3", bucket.uri(BUCKET, "clips"))):
        stores[name] = str(tmp_path / name)
        assert cli_module.main(["build", *common, "--video-root", root, "--out", stores[name]]) == 0
    opened = {
        k: FrameStore(v, expect_sampler=SamplerConfig(4).provenance(), short_side=32)
        for k, v in stores.items()
    }
    for video_id in ids:
        np.testing.assert_array_equal(opened["s3"].frames(video_id), opened["local"].frames(video_id))
    capsys.readouterr()
    with OutputLease(stores["s3"], what="framestore build"):
        assert cli_module.main(["build", *common, "--video-root", str(video_dir), "--out", stores["s3"]]) == 1
    assert "is being written by another framestore build run on host" in capsys.readouterr().err


def test_an_index_of_an_s3_folder_equals_the_local_index(bucket, video_dir, tmp_path):
    """``pipelines.index --videos s3://...``: one listing, the objects' sizes and times as identity, and
    the embeddings of the local index."""
    from search import VideoIndex, build_index
    from tests.helpers import save_noise_adapters

    bucket.upload_dir(video_dir, BUCKET, "index")
    adapters = save_noise_adapters(tmp_path / "adapters", seed=0)
    embeddings = {}
    for name, root in (("local", str(video_dir)), ("s3", bucket.uri(BUCKET, "index"))):
        summary = build_index(
            tmp_path / name, videos=[root], adapters=adapters, pretrained=None, progress=False
        )
        assert summary.files_skipped == 0
        index = VideoIndex.open(tmp_path / name)
        entries = [index.entry(i) for i in range(len(index))]
        embeddings[name] = {e.video_id: index.embeddings[e.entry] for e in entries}
    assert (
        sorted(embeddings["s3"]) == sorted(embeddings["local"]) == sorted(p.name for p in video_dir.iterdir())
    )
    for video_id, vector in embeddings["local"].items():
        np.testing.assert_allclose(embeddings["s3"][video_id], vector, atol=1e-6)


def test_an_index_of_a_dataset_with_an_s3_video_root_lists_its_objects(bucket, tmp_path):
    """``pipelines.index --dataset ... --video-root s3://...``: the dataset's videos, their relative keys
    (escapes decoded) and the listing's sizes; a video without an object is skipped as not found."""
    from search.sources import list_dataset

    annotations = tmp_path / "test.jsonl"
    ids = ["pal_25fps", "sub dir/short copy", "gone"]
    annotations.write_text("".join(json.dumps({"video_id": v, "text": "x"}) + "\n" for v in ids))
    root = bucket.uri(BUCKET, "clips")
    files, roots, skipped = list_dataset("folder", "test", annotations, root)
    assert roots == [root] and [f.rel_path for f in files] == ["pal_25fps.mp4", "sub dir/short copy.mp4"]
    sizes = {
        k.removeprefix("clips/"): bucket.client().head_object(Bucket=BUCKET, Key=k)["ContentLength"]
        for k in bucket.keys(BUCKET, "clips/")
    }
    assert [f.size for f in files] == [sizes[f.rel_path] for f in files]
    assert files[1].path == bucket.uri(BUCKET, "clips/sub%20dir/short%20copy.mp4")
    assert [(s["rel_path"], s["reason"]) for s in skipped] == [("gone.mp4", "file not found")]


def test_the_trainer_decodes_the_same_tensors_from_an_s3_video_root(bucket, video_dir, tmp_path):
    """training.data decodes through shared.frames: items of an s3:// root (kept by skip-missing, as
    listed) give the local items' tensors, also from DataLoader worker processes."""
    import torch

    from training.augment import TRAIN_RANDAUGMENT, VideoTransform
    from training.data import EpochBatchSampler, RetrievalDataset, clip_tokenizer, make_loader

    annotations = tmp_path / "train.jsonl"
    ids = ["long_30fps", "ntsc_2997fps", "pal_25fps", "vfr"]
    annotations.write_text("".join(json.dumps({"video_id": v, "text": f"clip {v}"}) + "\n" for v in ids))
    batches = {}
    for name, root in (("local", video_dir), ("s3", bucket.uri(BUCKET, "clips"))):
        items = get_dataset("folder", "train", annotations=annotations, video_root=root).items()
        data = RetrievalDataset(
            items,
            num_frames=4,
            transform=VideoTransform(32, randaugment=TRAIN_RANDAUGMENT),
            tokenizer=clip_tokenizer("DiscoVLA-Tiny", 16),
            normalize=False,
            skip_missing_files=True,
        )
        assert len(data.items) == 4
        batches[name] = next(iter(make_loader(data, EpochBatchSampler(4, 4, seed=1, epoch=0), num_workers=2)))
    assert torch.equal(batches["s3"]["frames"], batches["local"]["frames"])
    assert batches["s3"]["video_id"] == batches["local"]["video_id"]
