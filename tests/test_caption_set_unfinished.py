"""The trainer's loader and ``validate`` agree on a caption set being written: without its manifest.json
both refuse it, with the same message, which says how to finish it; a merge in progress is never loaded."""

from __future__ import annotations

import threading

import pytest

from shared.shards import (
    CaptionSetError,
    load_caption_set,
    write_manifest,
)
from shared.shards.example import write_example_set
from shared.shards.merge import merge_caption_sets
from shared.shards.validate import validate_caption_set

HINT = "python -m pipelines.shards write-manifest ROOT"


def _refusal(root) -> str:
    with pytest.raises(CaptionSetError) as caught:
        load_caption_set(root)
    return str(caught.value)


def test_without_a_manifest_loader_and_validate_refuse_with_the_same_message(tmp_path):
    write_example_set(tmp_path, [f"v{i}" for i in range(6)], num_shards=2, manifest=False)  # shards done
    loaded = _refusal(tmp_path)
    report = validate_caption_set(tmp_path)
    assert not report.ok and [str(f.where) + ": " + f.message for f in report.findings] == [loaded]
    assert "is being written, or the run writing it did not finish" in loaded and HINT in loaded
    write_manifest(tmp_path)  # what the message says to do: then both accept it
    assert validate_caption_set(tmp_path).ok and len(load_caption_set(tmp_path)) == 6


def test_a_merge_in_progress_is_refused_by_the_loader_never_loaded_in_part(tmp_path):
    """The issue's reproduction: the loader polls OUT while ``merge`` writes it; before the manifest it
    must refuse, after it it must load the whole merged set (it loaded 10 of 3,010 videos before)."""
    train = [f"t{i:04d}" for i in range(600)]
    test = [f"s{i:04d}" for i in range(10)]
    write_example_set(tmp_path / "a", test, num_shards=1, split="test")
    write_example_set(tmp_path / "b", train, num_shards=4, split="train")
    out = tmp_path / "merged"
    outcomes: list[object] = []
    done = threading.Event()

    def merge():
        try:
            merge_caption_sets([tmp_path / "a", tmp_path / "b"], out, num_shards=6)
        finally:
            done.set()

    worker = threading.Thread(target=merge)
    worker.start()
    while not done.is_set():
        if (out / "data").exists():
            try:
                outcomes.append(len(load_caption_set(out)))
            except CaptionSetError as err:
                outcomes.append(str(err))
    worker.join()
    refusals = [o for o in outcomes if isinstance(o, str)]
    assert refusals, "the loader never saw the merge in progress (poll faster or merge more)"
    assert all("no manifest.json: the caption set is being written" in r and HINT in r for r in refusals)
    assert all(o == 610 for o in outcomes if isinstance(o, int))  # never a partial set
    assert len(load_caption_set(out)) == 610 and validate_caption_set(out).ok


def test_a_caption_set_in_a_missing_bucket_is_one_line_in_both(s3):
    """Not "being written": the bucket is not there; the loader and validate say so alike."""
    uri = s3.uri("no-such-captions", "sets/a")
    loaded = _refusal(uri)
    report = validate_caption_set(uri)
    assert [str(f.where) + ": " + f.message for f in report.findings] == [loaded]
    assert loaded == (
        "s3://no-such-captions/sets/a: the bucket 'no-such-captions' does not exist "
        "(check the bucket name and the endpoint)"
    )
