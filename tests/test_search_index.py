"""The video index and search (search/, pipelines.index, pipelines.search) on generated videos, tiny CLIP.

The adapters are non-zero (seeded noise on every adapter tensor) and saved/loaded through
``training.adapters`` like trained ones, so the adapted encoders differ from plain CLIP.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import training.evaluate as ev
from pipelines.index import main as index_cli
from pipelines.search import main as search_cli
from search import (
    EmptyQueryError,
    IndexFormatError,
    IndexMismatchError,
    NoVideosError,
    VideoIndex,
    build_index,
)
from search.ann import AnnIndexError
from shared.synthetic import make_broken_video
from tests.helpers import SEARCH_FRAMES, colour_videos, save_noise_adapters

FRAMES = SEARCH_FRAMES


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> Path:
    return save_noise_adapters(tmp_path_factory.mktemp("adapters") / "a", seed=0)


@pytest.fixture(scope="module")
def colour_items(tmp_path_factory):
    return colour_videos(tmp_path_factory.mktemp("colours") / "videos")


@pytest.fixture()
def folder(tmp_path, colour_items) -> Path:
    """A fresh copy of the 8 colour videos (2 s each), one in a sub-folder."""
    root = tmp_path / "videos"
    (root / "more").mkdir(parents=True)
    for item in colour_items:
        target = root / ("more" if item.video_id == "white" else "") / Path(item.path).name
        shutil.copy2(item.path, target)
    return root


def index_args(folder, adapters, out) -> list[str]:
    """``pipelines.index`` arguments for a folder, the tiny model's random CLIP weights, quiet."""
    return [
        "--videos",
        str(folder),
        "--adapters",
        str(adapters),
        "--out",
        str(out),
        "--pretrained",
        "none",
        "--num-workers",
        "0",
        "-q",
    ]


def index_command(folder, adapters, out, *extra: str) -> int:
    """``python -m pipelines.index`` in this process (:func:`index_args` + ``extra``)."""
    return index_cli([*index_args(folder, adapters, out), *extra])


def build(out, folder, adapters, **options):
    return build_index(out, videos=[folder], adapters=adapters, pretrained=None, progress=False, **options)


def assert_ranks_like_the_evaluator(
    out: Path, dataset: str, annotations: Path, root: Path, adapters: Path
) -> int:
    """Index ``dataset``/test; for every text, search's ranking is the evaluator's (returns the videos)."""
    model, data, _ = ev.build_evaluation(
        dataset, "test", adapters=adapters, annotations=annotations, video_root=root, pretrained=None
    )
    feats = ev.extract_features(model, data, batch_size=4, progress=False)
    sim = (feats["text_feats"].double() @ feats["video_feats"].double().t()).numpy()  # [texts, videos]
    columns, _ = ev.video_columns(data.items)
    column_of = {
        (data.items[c].video_id, data.items[c].start, data.items[c].end): j for j, c in enumerate(columns)
    }
    summary = build_index(
        out,
        dataset=dataset,
        split="test",
        annotations=annotations,
        video_root=root,
        adapters=adapters,
        pretrained=None,
        batch_size=3,
        progress=False,
    )
    assert summary.entries == len(columns) and summary.files_skipped == 0
    index = VideoIndex.open(out)
    stored = {
        column_of[(r.video_id, r.start, r.end)]: index.embeddings[r.entry]
        for r in (index.entry(i) for i in range(len(index)))
    }
    np.testing.assert_allclose(
        np.stack([stored[j] for j in range(len(columns))]), feats["video_feats"].numpy(), atol=1e-5
    )
    for t, item in enumerate(data.items):
        got = [column_of[(r.video_id, r.start, r.end)] for r in index.search(item.text, k=len(columns))]
        expected = np.argsort(-sim[t], kind="stable")
        assert sorted(got) == list(range(len(columns)))
        scores = sim[t][got]
        assert np.all(np.diff(scores) <= 1e-6), f"{item.text!r}: not in the evaluator's order"
        assert got[0] == expected[0] or sim[t][got[0]] - sim[t][expected[0]] > -1e-6
    return len(columns)


def test_search_ranks_like_the_evaluator(tmp_path, colour_items, adapters):
    """For every text of a folder dataset, the index ranks the videos as the evaluator's similarity matrix."""
    rows = [{"video_id": it.video_id, "text": it.text} for it in colour_items]
    rows += [
        {"video_id": "red", "text": "the start of a red video", "start": 0, "end": 1},
        {"video_id": "blue", "text": "blue again"},
    ]  # a window, and a second text for one video
    annotations = tmp_path / "test.jsonl"
    annotations.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = Path(colour_items[0].path).parent
    assert assert_ranks_like_the_evaluator(tmp_path / "index", "folder", annotations, root, adapters) == 9


def test_search_ranks_like_the_evaluator_on_demo_data(tmp_path, adapters):
    """The same on a small generated ``demo`` dataset (the demo's videos and texts, 4 frames, 16 words)."""
    from shared.demo_videos import generate

    data = generate(tmp_path / "demo", n_train=4, n_test=12, progress=False)
    assert assert_ranks_like_the_evaluator(tmp_path / "index", "demo", data, data / "videos", adapters) == 12


@pytest.mark.slow
def test_build_open_search_and_cli(tmp_path, folder, adapters, capsys):
    out = tmp_path / "index"
    assert index_command(str(folder), str(adapters), str(out), "--batch-size", "3", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["entries"] == 8 and summary["files_encoded"] == 8 and summary["ann"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    prov = manifest["provenance"]
    assert prov["backbone"] == "DiscoVLA-Tiny" and len(prov["adapters_sha256"]) == 64
    assert prov["sampler"]["num_frames"] == FRAMES and prov["created_at"]
    import pyarrow.parquet as pq

    table = pq.read_table(out / manifest["entries"])  # anyone can read it
    assert sorted(table.column("video_id").to_pylist()) == sorted(
        [
            "black.mp4",
            "blue.mp4",
            "green.mp4",
            "orange.mp4",
            "purple.mp4",
            "red.mp4",
            "yellow.mp4",
            "more/white.mp4",
        ]
    )
    assert table.column("thumbnail")[0].as_py()[:2] == b"\xff\xd8"  # JPEG

    index = VideoIndex.open(out)
    results = index.search("a red video", k=3)
    assert [r.rank for r in results] == [1, 2, 3] and results[0].score >= results[1].score >= results[2].score
    assert search_cli([str(out), "a red video", "-k", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in printed["results"]] == [r.path for r in results]
    assert search_cli([str(out), "a red video", "-k", "2"]) == 0
    assert results[0].path in capsys.readouterr().out


def test_windows_of_long_videos(tmp_path, folder, adapters):
    index = VideoIndex.build(
        tmp_path / "index", videos=[folder], adapters=adapters, pretrained=None, window=1, progress=False
    )
    windows = sorted((r.video_id, r.start, r.end) for r in (index.entry(i) for i in range(len(index))))
    assert len(windows) == 16 and windows[:2] == [("black.mp4", 0.0, 1.0), ("black.mp4", 1.0, 2.0)]
    assert {index.entry(i).duration for i in range(len(index))} == {2.0}

    rows = [
        {"video_id": "red", "text": "red"},
        {"video_id": "blue", "text": "blue", "start": 0.0, "end": 2.0},
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = VideoIndex.build(
        tmp_path / "dataset",
        dataset="folder",
        annotations=tmp_path / "test.jsonl",
        video_root=folder,
        adapters=adapters,
        pretrained=None,
        window=1,
        progress=False,
    )
    windows = sorted((r.video_id, r.start, r.end) for r in (dataset.entry(i) for i in range(len(dataset))))
    assert windows == [("blue", 0.0, 2.0), ("red", 0.0, 1.0), ("red", 1.0, 2.0)]  # annotated windows stay


def test_incremental_update_encodes_only_new_and_changed(tmp_path, folder, adapters):
    out = tmp_path / "index"
    first = build(out, folder, adapters)
    before = VideoIndex.open(out)
    blue = before.embeddings[[i for i in range(len(before)) if before.entry(i).video_id == "blue.mp4"][0]]
    shutil.copy2(folder / "red.mp4", folder / "red copy.mp4")  # new
    shutil.copy2(folder / "green.mp4", folder / "black.mp4")  # changed content, size and mtime
    (folder / "orange.mp4").unlink()  # deleted
    second = build(out, folder, adapters)
    assert (first.files_encoded, second.files_encoded, second.files_kept, second.files_removed) == (
        8,
        2,
        6,
        2,
    )
    after = VideoIndex.open(out)
    ids = [after.entry(i).video_id for i in range(len(after))]
    assert len(after) == 8 and "orange.mp4" not in ids and "red copy.mp4" in ids
    np.testing.assert_array_equal(after.embeddings[ids.index("blue.mp4")], blue)  # kept, not re-encoded
    np.testing.assert_allclose(
        after.embeddings[ids.index("black.mp4")], after.embeddings[ids.index("green.mp4")], atol=1e-6
    )
    assert sorted(p.name for p in out.iterdir()) == ["entries-2.parquet", "manifest.json"]
    assert build(out, folder, adapters).files_encoded == 0


def test_unreadable_videos_are_listed_skipped_and_counted(tmp_path, folder, adapters, capsys):
    make_broken_video(folder / "broken.mp4", "truncated")
    make_broken_video(folder / "audio.mp4", "no_video_stream")
    (folder / "notes.txt").write_text("not a video, not listed")
    out = tmp_path / "index"
    assert index_command(str(folder), str(adapters), str(out)) == 0
    printed = capsys.readouterr().out
    assert "skipped 2" in printed and "broken.mp4" in printed and "audio.mp4" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"broken.mp4", "audio.mp4"} and "no video stream" in reasons["audio.mp4"]
    assert manifest["count"] == 8
    again = build(out, folder, adapters)  # unchanged unreadable files are not retried
    assert again.files_encoded == 0 and again.files_skipped == 2


def test_bad_input_gives_clear_errors(tmp_path, folder, adapters, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoVideosError, match="no video files"):
        build(tmp_path / "i0", empty, adapters)
    assert index_command(str(empty), str(adapters), str(tmp_path / "i1")) == 1
    assert f"error: no video files ({'.3g2'}" in capsys.readouterr().err

    out = tmp_path / "index"
    build(out, folder, adapters)
    index = VideoIndex.open(out)
    for query in ("", "   "):
        with pytest.raises(EmptyQueryError, match="empty query"):
            index.search(query)
    assert search_cli([str(out), " "]) == 1 and "error: empty query" in capsys.readouterr().err

    other = save_noise_adapters(tmp_path / "other", seed=1)
    with pytest.raises(IndexMismatchError, match=r"built with adapters .*sha256.*query encoder has adapters"):
        VideoIndex.open(out).load_encoder(other)
    assert search_cli([str(out), "red", "--adapters", str(other)]) == 1
    err = capsys.readouterr().err
    assert str(adapters.resolve()) in err and str(other.resolve()) in err
    with pytest.raises(IndexMismatchError, match="--rebuild"):
        build(out, folder, other)

    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        VideoIndex.open(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / manifest["entries"]).write_bytes(b"PAR1 damaged")
    with pytest.raises(IndexFormatError, match=rf"{manifest['entries']}: not a readable Parquet"):
        VideoIndex.open(out)
    assert search_cli([str(out), "red"]) == 1 and "not a readable Parquet" in capsys.readouterr().err
    with pytest.raises(IndexFormatError, match="not found"):
        VideoIndex.open(tmp_path / "nowhere")


def test_ann_index_answers_like_exact_search(tmp_path, folder, adapters):
    index = VideoIndex.build(
        tmp_path / "index",
        videos=[folder],
        adapters=adapters,
        pretrained=None,
        window=1,
        exact_below=4,
        progress=False,
    )
    assert index.ann is not None and index.manifest["ann"].endswith(".faiss")
    query = index.encoder.encode_texts(["a green video"])[0]
    ann = index.search_vector(query, 5)
    exact = index.search_vector(query, 5, exact=True)
    assert [r.entry for r in ann] == [r.entry for r in exact]
    assert [r.score for r in ann] == pytest.approx([r.score for r in exact], abs=1e-5)
    (tmp_path / "index" / index.manifest["ann"]).write_bytes(b"garbage")
    with pytest.raises(AnnIndexError, match="not a readable faiss index"):
        VideoIndex.open(tmp_path / "index")


@pytest.mark.slow
def test_resumes_after_kill_9(tmp_path, folder, adapters):
    """A build killed with SIGKILL after some chunks resumes from them and ends as a clean build."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "index"
    cmd = [sys.executable, "-m", "pipelines.index", *index_args(folder, adapters, out), "--chunk-videos", "1"]
    proc = subprocess.Popen(
        cmd, cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "partial").glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "partial").glob("part-*.parquet")))
    assert 3 <= done < 8 and not (out / "manifest.json").exists()
    resumed = build(out, folder, adapters)
    assert resumed.files_resumed >= done and resumed.files_encoded == 8 - resumed.files_resumed
    fresh = build(tmp_path / "fresh", folder, adapters)
    assert fresh.entries == resumed.entries == 8
    np.testing.assert_allclose(
        VideoIndex.open(out).embeddings, VideoIndex.open(tmp_path / "fresh").embeddings, atol=1e-6
    )


@pytest.mark.slow
def test_ray_workers_encode_the_same_index(tmp_path, folder, adapters):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        parallel = build(tmp_path / "ray", folder, adapters, ray_workers=2, chunk_files=3)
    finally:
        ray.shutdown()
    local = build(tmp_path / "local", folder, adapters)
    assert parallel.files_encoded == local.files_encoded == 8
    np.testing.assert_allclose(
        VideoIndex.open(tmp_path / "ray").embeddings,
        VideoIndex.open(tmp_path / "local").embeddings,
        atol=1e-5,
    )
