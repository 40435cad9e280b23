"""Shard planning: deterministic shards, skipping finished ones, --retry-failed work, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioning.plan import RunRefusedError, check_output_dir, inputs_record, plan_shards, shard_videos
from shared.datasets import VideoItem
from shared.frames import SamplerConfig
from shared.shards import failed_rows, make_provenance, make_rows, write_shard

F = 2


def _item(video_id: str, k: int = 0) -> VideoItem:
    return VideoItem(
        video_id, Path(f"/v/{video_id}.mp4"), None, None, f"text {k}", "test", f"{video_id}_{k}", True
    )


ITEMS = [_item(v) for v in ("v3", "v1", "v4", "v0", "v2")] + [_item("v1", 1), _item("v3", 1)]


def _provenance(shards, prompt="Describe this image in one short sentence.", shard_size=2):
    return make_provenance(
        model="tiny",
        prompt_text=prompt,
        sampler=SamplerConfig(F).provenance(),
        dataset="folder",
        shard_inputs=inputs_record("test", shards, shard_size),
    )


def _write(out, shards, index, prov, failed=()):
    rows = []
    for video in shards[index]:
        if video.video_id in failed:
            rows += failed_rows("folder", "test", video.video_id, F, "decode: file not found")
        else:
            rows += make_rows(
                "folder", "test", video.video_id, [0, 5], [0.0, 0.5], ["a", "b"], ["stop"] * F, [2, 2]
            )
    return write_shard(out, "test", index, len(shards), rows, prov)


def test_shards_are_unique_sorted_videos_cut_in_order():
    shards = shard_videos(ITEMS, 2)
    assert [[v.video_id for v in s] for s in shards] == [["v0", "v1"], ["v2", "v3"], ["v4"]]
    assert shard_videos(list(reversed(ITEMS)), 2)[1][1].video_id == "v3"  # input order does not matter
    with pytest.raises(ValueError, match="shard_size"):
        shard_videos(ITEMS, 0)


def test_finished_shards_are_skipped_and_broken_ones_redone(tmp_path):
    shards = shard_videos(ITEMS, 2)
    prov = _provenance(shards)
    assert [w.index for w in plan_shards(tmp_path, "test", shards, retry_failed=False)] == [0, 1, 2]
    _write(tmp_path, shards, 0, prov)
    _write(tmp_path, shards, 2, prov)
    work = plan_shards(tmp_path, "test", shards, retry_failed=False)
    assert [(w.index, [v.video_id for v in w.todo]) for w in work] == [(1, ["v2", "v3"])]
    # a data file changed after its stats were written is not done
    data = tmp_path / "data" / "test-00002-of-00003.parquet"
    data.write_bytes(data.read_bytes()[:-10])
    assert [w.index for w in plan_shards(tmp_path, "test", shards, retry_failed=False)] == [1, 2]


def test_retry_failed_plans_only_failed_videos_and_keeps_other_rows(tmp_path):
    shards = shard_videos(ITEMS, 2)
    prov = _provenance(shards)
    _write(tmp_path, shards, 0, prov, failed={"v1"})
    _write(tmp_path, shards, 1, prov)
    assert [w.index for w in plan_shards(tmp_path, "test", shards, retry_failed=False)] == [2]
    work = plan_shards(tmp_path, "test", shards, retry_failed=True)
    assert [w.index for w in work] == [0, 2]
    retry = work[0]
    assert retry.is_retry and [v.video_id for v in retry.todo] == ["v1"]
    assert [v.video_id for v in retry.videos] == ["v0", "v1"]
    assert set(retry.kept_rows["video_id"].to_pylist()) == {"v0"} and retry.kept_rows.num_rows == F
    assert not work[1].is_retry


def test_changed_prompt_is_refused_with_the_differences(tmp_path):
    shards = shard_videos(ITEMS, 2)
    _write(tmp_path, shards, 0, _provenance(shards))
    check_output_dir(tmp_path, "test", _provenance(shards))  # same settings: fine
    with pytest.raises(RunRefusedError) as err:
        check_output_dir(tmp_path, "test", _provenance(shards, prompt="What is shown?"))
    message = str(err.value)
    assert "prompt_sha256" in message and "'What is shown?'" in message and "another --out" in message


def test_other_shard_size_or_video_list_is_refused(tmp_path):
    shards = shard_videos(ITEMS, 2)
    _write(tmp_path, shards, 0, _provenance(shards))
    resized = shard_videos(ITEMS, 3)
    with pytest.raises(RunRefusedError, match="--shard-size 2"):
        check_output_dir(tmp_path, "test", _provenance(resized, shard_size=3))
    fewer = shard_videos([i for i in ITEMS if i.video_id != "v4"], 2)
    with pytest.raises(RunRefusedError, match="video_ids_sha256"):
        check_output_dir(tmp_path, "test", _provenance(fewer))
    # another split of the same set may have its own videos and shard size
    other_split = {**_provenance(resized, shard_size=3), "shard_inputs": inputs_record("train", resized, 3)}
    check_output_dir(tmp_path, "train", other_split)
