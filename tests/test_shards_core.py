"""Caption shards: writer, completion marker, manifest and reader round trips on a local disk."""

import json
import random

import pyarrow.parquet as pq
import pytest

from shared.frames import SamplerConfig
from shared.shards import (
    FOOTER_KEY,
    CaptionSetError,
    IncompatibleProvenanceError,
    ShardWriter,
    check_compatible,
    completed_shards,
    failed_rows,
    load_caption_set,
    make_provenance,
    make_rows,
    read_manifest,
    shard_name,
    write_manifest,
    write_shard,
)
from shared.shards.example import example_provenance, example_rows, write_example_set

IDS = [f"video{i}" for i in range(10)]


def test_round_trip_captions_in_frame_pos_order(tmp_path):
    prov = example_provenance(num_frames=4)
    rows = []
    for vid in ["video7010", "video3"]:
        rows += make_rows(
            "msrvtt",
            "test",
            vid,
            [0, 30, 60, 90],
            [0.0, 1.0, 2.0, 3.0],
            [f"{vid} says {p}" for p in range(4)],
            ["stop"] * 4,
            [3] * 4,
        )
    rows += failed_rows("msrvtt", "test", "video9", 4, "VideoDecodeError: moov atom not found")
    random.Random(0).shuffle(rows)  # the writer sorts; the reader must restore frame_pos order anyway
    stats = write_shard(tmp_path, "test", 0, 1, rows, prov)
    assert stats.file == "data/test-00000-of-00001.parquet"
    assert (stats.rows, stats.videos, stats.failed_rows, stats.failed_videos) == (12, 3, 4, 1)
    write_manifest(tmp_path)

    cs = load_caption_set(tmp_path, split="test", expect_sampler=SamplerConfig(4).provenance(), num_frames=4)
    assert cs.captions == {vid: [f"{vid} says {p}" for p in range(4)] for vid in ["video3", "video7010"]}
    assert cs.failed == {"video9"}
    assert cs.provenance["prompt_sha256"] == prov["prompt_sha256"]
    assert cs.num_frames == 4 and cs.splits == ["test"]


def test_same_rows_give_the_same_file(tmp_path):
    prov = example_provenance()
    rows = example_rows(IDS)
    write_shard(tmp_path / "a", "test", 0, 1, rows, prov)
    write_shard(tmp_path / "b", "test", 0, 1, rows.take(list(reversed(range(len(rows))))), prov)
    name = "data/" + shard_name("test", 0, 1)
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_footer_and_manifest_hold_provenance_and_checksums(tmp_path):
    manifest = write_example_set(tmp_path, IDS, num_shards=3, failed=["video4"])
    footer = json.loads(pq.read_metadata(tmp_path / manifest["shards"][0]["file"]).metadata[FOOTER_KEY])
    assert footer["schema_version"] == 1
    assert footer["provenance"]["sampler"]["num_frames"] == 4
    assert footer["provenance"] == manifest["provenance"]
    assert [s["file"] for s in manifest["shards"]] == [
        f"data/test-0000{i}-of-00003.parquet" for i in range(3)
    ]
    assert sum(s["rows"] for s in manifest["shards"]) == 40
    assert manifest["splits"]["test"]["failed_videos"] == 1 and manifest["splits"]["test"]["complete"]
    assert read_manifest(tmp_path / "manifest.json") == manifest


def test_stats_file_is_the_completion_marker(tmp_path):
    write_example_set(tmp_path, IDS, num_shards=3, manifest=False)
    assert set(completed_shards(tmp_path, "test")) == {0, 1, 2}
    (tmp_path / "_stats" / "test-00001-of-00003.json").unlink()  # crash between data file and marker
    data = tmp_path / "data" / "test-00002-of-00003.parquet"
    data.write_bytes(data.read_bytes()[:-100])  # data file damaged after its marker was written
    assert set(completed_shards(tmp_path, "test")) == {0}
    assert set(completed_shards(tmp_path, "test", verify=False)) == {0, 2}
    assert completed_shards(tmp_path, "train") == {}


def test_exception_inside_writer_writes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="engine died"):
        with ShardWriter(tmp_path, "test", 0, 2, example_provenance()) as writer:
            writer.write(example_rows(IDS[:2]))
            raise RuntimeError("engine died")
    assert not (tmp_path / "data").exists() and completed_shards(tmp_path, "test") == {}


def test_rerun_replaces_a_shard(tmp_path):
    prov = example_provenance()
    write_shard(tmp_path, "test", 0, 1, example_rows(IDS[:2], failed=["video1"]), prov)
    write_shard(tmp_path, "test", 0, 1, example_rows(IDS[:2]), prov)
    write_manifest(tmp_path)
    cs = load_caption_set(tmp_path)
    assert sorted(cs.captions) == ["video0", "video1"] and not cs.failed


def test_writer_rejects_incomplete_or_foreign_rows(tmp_path):
    prov = example_provenance(num_frames=4)
    rows = example_rows(IDS[:2], num_frames=3)
    with pytest.raises(CaptionSetError, match="missing frame positions"):
        write_shard(tmp_path, "test", 0, 1, rows, prov)
    with pytest.raises(CaptionSetError, match="split"):
        write_shard(tmp_path, "train", 0, 1, example_rows(IDS[:2]), prov)
    with pytest.raises(CaptionSetError, match="lacks"):
        write_shard(tmp_path, "test", 0, 1, example_rows(IDS[:2]), {"model": "m"})
    assert not (tmp_path / "data").exists()


def test_make_provenance_and_compatibility():
    base = example_provenance()
    assert len(base["prompt_sha256"]) == 64 and base["created_at"]
    check_compatible(base, {**base, "created_at": "later", "code_version": "other"})
    other = example_provenance(prompt_text="Say something.", sampling={"temperature": 0.7})
    with pytest.raises(IncompatibleProvenanceError) as err:
        check_compatible(base, other)
    assert set(err.value.differences) == {"prompt_sha256", "sampling"}
    assert "prompt_sha256" in str(err.value) and "sampling" in str(err.value)
    with pytest.raises(CaptionSetError, match="prompt_sha256 is not the sha256"):
        make_provenance(model="m", prompt_text="x", sampler={"num_frames": 4}, prompt_sha256="0" * 64)


def test_reader_refuses_a_different_sampler(tmp_path):
    write_example_set(tmp_path, IDS, num_frames=4)
    with pytest.raises(CaptionSetError, match="candidate_fps: captions 1.0, trainer 2.0"):
        load_caption_set(tmp_path, expect_sampler=SamplerConfig(4, candidate_fps=2.0).provenance())
    with pytest.raises(CaptionSetError, match="captions have 4 frames per video, the trainer samples 12"):
        load_caption_set(tmp_path, num_frames=12)
    assert len(load_caption_set(tmp_path, expect_sampler=SamplerConfig(4).provenance())) == 10


def test_reader_sources_manifest_file_single_shard_and_no_manifest(tmp_path):
    write_example_set(tmp_path, IDS, num_shards=2, manifest=False)
    with pytest.raises(CaptionSetError, match="no manifest.json: the caption set is being written"):
        load_caption_set(tmp_path)  # no manifest: refused, as validate refuses it
    cs = load_caption_set(tmp_path, allow_incomplete=True)  # the tools read the shards with stats files
    assert len(cs) == 10
    assert len(load_caption_set(tmp_path / "data" / "test-00001-of-00002.parquet")) == 5
    write_manifest(tmp_path)
    assert load_caption_set(tmp_path / "manifest.json").captions == cs.captions
    with pytest.raises(CaptionSetError, match="no split 'train'"):
        load_caption_set(tmp_path, split="train")


def test_reader_refuses_incomplete_sets(tmp_path):
    prov = example_provenance()
    write_shard(tmp_path, "test", 0, 3, example_rows(IDS[:3]), prov)
    write_shard(tmp_path, "test", 2, 3, example_rows(IDS[6:]), prov)
    with pytest.raises(CaptionSetError, match="no manifest.json"):
        load_caption_set(tmp_path)
    manifest = write_manifest(tmp_path)
    assert manifest["splits"]["test"]["missing_shards"] == [1]
    with pytest.raises(CaptionSetError, match=r"lacks shards \[1\]"):
        load_caption_set(tmp_path)
    assert len(load_caption_set(tmp_path, allow_incomplete=True)) == 7


def test_duplicates_across_shards_name_the_files(tmp_path):
    prov = example_provenance()
    write_shard(tmp_path, "test", 0, 2, example_rows(IDS[:3]), prov)
    write_shard(tmp_path, "test", 1, 2, example_rows(IDS[2:5]), prov)
    write_manifest(tmp_path)
    with pytest.raises(CaptionSetError, match="duplicate") as err:
        load_caption_set(tmp_path)
    assert "test-00000-of-00002.parquet" in str(err.value) and "test-00001-of-00002.parquet" in str(err.value)
    assert "video2" in str(err.value)


def test_manifest_refuses_shards_of_incompatible_runs(tmp_path):
    write_shard(tmp_path, "test", 0, 2, example_rows(IDS[:3]), example_provenance())
    write_shard(tmp_path, "test", 1, 2, example_rows(IDS[3:]), example_provenance(model="other/model"))
    with pytest.raises(IncompatibleProvenanceError, match="model"):
        write_manifest(tmp_path)
    assert not (tmp_path / "manifest.json").exists()
