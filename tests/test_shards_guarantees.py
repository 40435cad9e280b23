"""A caption set is whole or refused: real annotation ids, real Parquet files, manifests edited by hand.

Ids come from the excerpts in tests/data/<dataset>/shards_excerpt (DiDeMo test annotations, the MSRVTT 7k
and 9k training lists; see tests/data/README.md). Each test edits a set the way a person would (a text
editor on manifest.json, ``cp`` of a shard file) and checks that ``validate`` and the trainer's loader
both refuse it with a message that names the problem and the fix.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest

from pipelines.shards import main as cli
from shared.shards import CaptionSetError, load_caption_set, write_manifest, write_shard
from shared.shards.example import example_provenance, example_rows, write_example_set
from shared.shards.merge import merge_caption_sets
from shared.shards.validate import validate_caption_set

DATA = Path(__file__).parent / "data"
DIDEMO_IDS = list(
    dict.fromkeys(e["video"] for e in json.loads((DATA / "didemo/shards_excerpt/test_data.json").read_text()))
)
MSRVTT = DATA / "msrvtt/shards_excerpt"


def _csv_ids(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [row["video_id"] for row in csv.DictReader(f)]


@pytest.fixture
def didemo_set(tmp_path) -> Path:
    """10 real DiDeMo ids in 3 shards, one video failed."""
    root = tmp_path / "didemo"
    write_example_set(
        root,
        DIDEMO_IDS,
        num_frames=4,
        num_shards=3,
        dataset="didemo",
        failed=DIDEMO_IDS[:1],
        provenance=example_provenance(4, dataset="didemo"),
    )
    return root


def _edit_manifest(root: Path, edit) -> None:
    """Load manifest.json, change it, save it with the same formatting, as an editor would."""
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _refused(root: Path, capsys, *patterns: str) -> None:
    """The trainer's loader and `validate` both refuse the set, with every pattern in their messages."""
    with pytest.raises(CaptionSetError) as err:
        load_caption_set(root, num_frames=4)
    assert all(p in str(err.value) for p in patterns), str(err.value)
    assert cli(["validate", str(root)]) == 1
    stderr = capsys.readouterr().err
    assert all(p in stderr for p in patterns), stderr


def test_the_untouched_set_loads_and_validates(didemo_set, capsys):
    assert sorted(load_caption_set(didemo_set).captions) == sorted(DIDEMO_IDS[1:])
    assert cli(["validate", str(didemo_set), "--frames", "4"]) == 0


def test_a_manifest_that_lost_an_entry_is_refused(didemo_set, capsys):
    lost = []
    _edit_manifest(didemo_set, lambda m: lost.append(m["shards"].pop(1)))
    _refused(
        didemo_set,
        capsys,
        "so shards [1] are missing, but it says complete=True",
        "python -m pipelines.shards write-manifest ROOT",
    )

    # the editor also marks the split incomplete: the loader refuses an incomplete split, validate too,
    # and the shard file the manifest no longer lists is an error of its own
    def mark(m):
        m["splits"]["test"].update(complete=False, missing_shards=[1])
        for key in ("rows", "videos", "failed_rows", "failed_videos"):
            m["splits"]["test"][key] -= lost[0][key]

    _edit_manifest(didemo_set, mark)
    with pytest.raises(CaptionSetError, match=r"split 'test' lacks shards \[1\]"):
        load_caption_set(didemo_set)
    report = validate_caption_set(didemo_set)
    messages = [str(f) for f in report.findings]
    assert any("test-00001-of-00003.parquet: a shard file the manifest does not list" in m for m in messages)
    assert any("split 'test' lacks shards [1]" in m for m in messages)
    # the remedy the messages name restores the set
    assert cli(["write-manifest", str(didemo_set)]) == 0
    assert len(load_caption_set(didemo_set).captions) == len(DIDEMO_IDS) - 1


def test_edited_counts_are_refused(didemo_set, capsys):
    _edit_manifest(didemo_set, lambda m: m["splits"]["test"].update(videos=m["splits"]["test"]["videos"] + 1))
    _refused(didemo_set, capsys, "counts do not add up (videos 11, its shards add up to 10)")
    write_manifest(didemo_set)

    def entry_and_total(m):  # consistent inside the manifest, but not what the file holds
        m["shards"][0]["rows"] += 4
        m["splits"]["test"]["rows"] += 4

    _edit_manifest(didemo_set, entry_and_total)
    _refused(
        didemo_set,
        capsys,
        "test-00000-of-00003.parquet: the file is not the one the manifest describes",
        "rows: the manifest says 20, the file has 16",
    )


def test_a_file_swapped_in_with_its_checksum_is_refused(didemo_set, capsys):
    """cp shard 0 over shard 1, then 'fix' the checksum and size in the manifest."""
    data = didemo_set / "data"
    shutil.copy(data / "test-00000-of-00003.parquet", data / "test-00001-of-00003.parquet")
    entries = {e["file"]: e for e in json.loads((didemo_set / "manifest.json").read_text())["shards"]}
    source = entries["data/test-00000-of-00003.parquet"]

    def fix(m):
        m["shards"][1].update(sha256=source["sha256"], bytes=source["bytes"])

    _edit_manifest(didemo_set, fix)
    _refused(
        didemo_set,
        capsys,
        "test-00001-of-00003.parquet: the file is not the one the manifest describes",
        "shard_index: the manifest says 1, the file has 0",
    )


def test_files_under_data_that_the_manifest_does_not_list_are_errors(didemo_set, capsys):
    data = didemo_set / "data"
    loaded = sum(len(c) for c in load_caption_set(didemo_set).captions.values())
    ok_rows = len(pd.read_parquet(data).query("status == 'ok'"))
    assert ok_rows == loaded  # what third-party readers see is what the project sees
    shutil.copy(data / "test-00000-of-00003.parquet", data / "copy of test-00000.parquet")  # a copy
    write_shard(
        didemo_set,
        "test",
        0,
        1,
        example_rows(DIDEMO_IDS[:2], 4, dataset="didemo"),
        example_provenance(4, dataset="didemo"),
    )  # a leftover of a 1-shard layout (stats file too)
    (data / "old").mkdir()
    shutil.copy(
        data / "test-00002-of-00003.parquet", data / "old" / "part.parquet"
    )  # pyarrow reads subfolders
    (data / ".part.parquet.tmp-123").write_bytes(b"hidden: directory readers skip it")
    # the loader reads what the manifest lists; directory readers do not
    assert sum(len(c) for c in load_caption_set(didemo_set).captions.values()) == loaded
    assert len(pd.read_parquet(data)) > len(pd.read_parquet(data).query("status == 'ok'")) + 4 > ok_rows
    assert (
        len(pl.read_parquet(str(data / "*.parquet")))
        == duckdb.sql(f"select count(*) from '{data}/*.parquet'").fetchall()[0][0]
    )
    assert cli(["validate", str(didemo_set)]) == 1
    stderr = capsys.readouterr().err
    for name in (
        "copy of test-00000.parquet: a Parquet file the manifest does not list",
        "test-00000-of-00001.parquet: a shard file the manifest does not list",
        "old/part.parquet: a Parquet file the manifest does not list",
    ):
        assert name in stderr, stderr
    assert stderr.count("Move it out of data/") == 3 and ".part.parquet.tmp" not in stderr
    for extra in (data / "copy of test-00000.parquet", data / "test-00000-of-00001.parquet", data / "old"):
        shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    (didemo_set / "_stats" / "test-00000-of-00001.json").unlink()
    assert cli(["validate", str(didemo_set)]) == 0


def test_merge_refuses_a_video_in_two_splits_and_writes_nothing(tmp_path, capsys):
    """MSRVTT's train7k list is inside train9k: merging a caption set of each gives videos in two splits."""
    ids7, ids9 = _csv_ids(MSRVTT / "MSRVTT_train.7k.csv"), _csv_ids(MSRVTT / "MSRVTT_train.9k.csv")
    both = sorted(set(ids7) & set(ids9))
    assert len(both) == len(ids7) == 12  # the excerpt keeps that property of the real lists
    write_example_set(tmp_path / "a", ids7, 4, num_shards=1, split="train7k")
    write_example_set(tmp_path / "b", ids9, 4, num_shards=2, split="train9k")
    with pytest.raises(CaptionSetError) as err:
        merge_caption_sets([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    message = str(err.value)
    assert "12 videos appear in more than one split" in message and "keep one of the splits" in message
    assert f"{both[0]!r} in ['train7k', 'train9k']" in message, message
    assert str(tmp_path / "a") in message and str(tmp_path / "b") in message  # the inputs holding them
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # the same rule in validate and the loader, for a set built by hand with both splits
    hand = tmp_path / "hand"
    prov = example_provenance(4)
    write_shard(hand, "train7k", 0, 1, example_rows(ids7, 4, split="train7k"), prov)
    write_shard(hand, "train9k", 0, 1, example_rows(ids9, 4, split="train9k"), prov)
    write_manifest(hand)
    _refused(hand, capsys, "12 videos appear in more than one split")
    assert len(load_caption_set(hand, split="train9k").captions) == len(ids9)  # one split alone is fine


def test_merge_refuses_rows_of_two_datasets_before_writing(tmp_path):
    write_example_set(
        tmp_path / "a",
        DIDEMO_IDS[:3],
        4,
        num_shards=1,
        dataset="didemo",
        provenance=example_provenance(4, dataset="didemo"),
    )
    write_example_set(tmp_path / "b", _csv_ids(MSRVTT / "MSRVTT_train.7k.csv")[:3], 4, num_shards=1)
    with pytest.raises(CaptionSetError, match=r"rows of datasets \['didemo', 'msrvtt'\] cannot share one"):
        merge_caption_sets([tmp_path / "a", tmp_path / "b"], tmp_path / "out", allow_mismatch=("dataset",))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
