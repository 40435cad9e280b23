"""The captions the trainer looks up (``CaptionSet.captions``, Arrow-backed) are the ones the caption set
holds, in the same order as the dict of Python lists it replaced: compared row by row with a plain
Python reading of the same Parquet files, on a set written with real annotation ids (DiDeMo, ActivityNet,
MSRVTT excerpts in tests/data) over several shards, with a failed video and non-ASCII ids."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pytest

from shared.shards import load_caption_set
from shared.shards.caption_table import CaptionTable
from shared.shards.example import example_provenance, write_example_set
from shared.shards.reader import read_caption_rows

DATA = Path(__file__).parent / "data"
F = 5


def _real_ids() -> list[str]:
    didemo = [e["video"] for e in json.loads((DATA / "didemo/shards_excerpt/test_data.json").read_text())]
    anet = list(json.loads((DATA / "activitynet/shards_excerpt/val_1.json").read_text()))
    with (DATA / "msrvtt/shards_excerpt/MSRVTT_JSFUSION_test.csv").open(newline="") as f:
        msrvtt = [row["video_id"] for row in csv.DictReader(f)]
    # ids whose UTF-8 byte order must agree with Python's str order (accents, CJK, case, '_' vs '-')
    unusual = ["vidéo-1", "vidz", "Video_A", "video-a", "視頻7", "Z_last"]
    return list(dict.fromkeys(didemo + anet + msrvtt + unusual))


def _reference(root) -> dict[str, list[str]]:
    """What the loader gave before: {video_id: its F captions by frame_pos} for the all-ok videos, by id."""
    rows = read_caption_rows(root).table.to_pylist()
    failed = {r["video_id"] for r in rows if r["status"] != "ok"}
    by_video: dict[str, dict[int, str]] = {}
    for r in rows:
        if r["video_id"] not in failed:
            by_video.setdefault(r["video_id"], {})[r["frame_pos"]] = r["caption"]
    return {vid: [caps[p] for p in sorted(caps)] for vid, caps in sorted(by_video.items())}


@pytest.fixture(scope="module")
def caption_set(tmp_path_factory) -> tuple[Path, list[str]]:
    ids = _real_ids()
    root = tmp_path_factory.mktemp("set")
    write_example_set(
        root, ids, F, num_shards=4, failed=ids[3:5], provenance=example_provenance(F), dataset="msrvtt"
    )
    return root, ids


def test_same_captions_same_order_as_the_dict(caption_set):
    root, ids = caption_set
    loaded = load_caption_set(root)
    reference = _reference(root)
    assert len(reference) == len(ids) - 2 > 40
    assert isinstance(loaded.captions, CaptionTable)
    assert list(loaded.captions.items()) == list(reference.items())  # same keys, same order, same lists
    assert loaded.failed == set(ids[3:5])
    for vid in ids[3:5]:
        assert vid not in loaded.captions
        with pytest.raises(KeyError):
            loaded.captions[vid]


def test_lookups_by_id(caption_set):
    root, ids = caption_set
    captions = load_caption_set(root).captions
    reference = _reference(root)
    for vid in reversed(ids):  # any order of access
        assert captions.get(vid) == reference.get(vid)
    for absent in ["", "video999999", "vidéo", "\uffff", ids[0] + " ", 7, None]:
        assert absent not in captions
        assert captions.get(absent) is None
    assert len(captions) == len(reference)
    assert captions == reference  # a Mapping equal to the dict it replaces


def test_chunks_are_kept_when_whole_videos_and_joined_otherwise():
    ids = [f"v{i:03d}" for i in range(30)]
    caps = [f"{v} {p}" for v in ids for p in range(2)]
    rows_ids = pa.chunked_array([[v for v in ids for _ in range(2)]])
    kept = CaptionTable.from_sorted_rows(rows_ids, pa.chunked_array([caps[:20], caps[20:50], caps[50:]]), 2)
    assert kept.captions.num_chunks == 3  # the shards' own buffers: no copy
    ragged = CaptionTable.from_sorted_rows(rows_ids, pa.chunked_array([caps[:21], caps[21:]]), 2)
    assert ragged.captions.num_chunks == 1  # video v010 spans the two chunks: joined into one
    for table in (kept, ragged):
        assert [table[v] for v in ids] == [caps[2 * i : 2 * i + 2] for i in range(30)]
        assert list(table) == ids
    with pytest.raises(ValueError, match="61 captions for 30 videos x 2 frames"):
        CaptionTable(kept.video_ids, pa.array(["x"] * 61), 2)
