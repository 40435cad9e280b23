"""The embedded demo: its generated data, its local CLIP and a reduced end-to-end run of the real pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shared import demo_videos
from shared.datasets import get_dataset
from shared.frames import sample_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return demo_videos.generate(tmp_path_factory.mktemp("demo"), seed=0, n_train=24, n_val=8, n_test=12)


def test_generation_is_deterministic_and_cached(demo_root, tmp_path):
    again = demo_videos.generate(tmp_path / "again", seed=0, n_train=24, n_val=8, n_test=12)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "frame_captions_train.json"):
        assert (again / name).read_text() == (demo_root / name).read_text()
    first = sample_frames(demo_root / "videos" / "demo-test-0000.mp4", 4).frames
    assert np.array_equal(first, sample_frames(again / "videos" / "demo-test-0000.mp4", 4).frames)
    stamp = (demo_root / "DONE.json").stat().st_mtime_ns
    demo_videos.generate(demo_root, seed=0, n_train=24, n_val=8, n_test=12)  # cached: nothing rewritten
    assert (demo_root / "DONE.json").stat().st_mtime_ns == stamp
    other = demo_videos.generate(tmp_path / "other", seed=1, n_train=24, n_val=8, n_test=12)
    assert (other / "test.jsonl").read_text() != (demo_root / "test.jsonl").read_text()


def test_adapter_items_and_unique_texts(demo_root):
    splits = {
        split: get_dataset("demo", split, annotations=demo_root).items() for split in demo_videos.SPLITS
    }
    assert {split: len(items) for split, items in splits.items()} == {"train": 24, "val": 8, "test": 12}
    every = [item for items in splits.values() for item in items]
    assert all(item.exists and item.start is None for item in every)
    texts = [item.text for item in every]
    assert len(set(texts)) == len(texts)  # every story once, across splits: retrieval has one right answer
    with pytest.raises(ValueError, match="splits"):
        get_dataset("demo", "validation", annotations=demo_root)


def test_every_split_mixes_the_kinds_at_the_measured_share(demo_root):
    """Each split has round(CHANGE_SHARE · n) change texts; the benchmark rule agrees with every kind."""
    from benchmarks.text_kinds import text_kind

    for split, n in (("train", 24), ("val", 8), ("test", 12)):
        rows = [json.loads(line) for line in (demo_root / f"{split}.jsonl").read_text().splitlines()]
        kinds = [row["kind"] for row in rows]
        assert kinds.count("change") == round(demo_videos.CHANGE_SHARE * n) and len(kinds) == n
        assert kinds != sorted(kinds), "static and change videos are interleaved"
    for story in demo_videos.all_stories():
        assert text_kind(story.text()) == story.kind, story.text()
    videos = [v for split in demo_videos.plan(np.random.default_rng(0), 240, 60, 60).values() for v in split]
    assert sum(story.kind == "change" for _, story, _ in videos) == 70 + 18 + 18
    for _, story, look in videos:
        if story.kind == "static":  # a static text names what every frame shows, background included
            assert story.background == look.background and story.text() in story.describe(0.0, look).replace(
                f"a {look.size} ", "a ", 1
            )


def test_frame_descriptions_match_the_sampled_pixels(demo_root):
    """Every reference description says what the sampled frame shows: shape colour, place, size, look."""
    captions = json.loads((demo_root / "frame_captions_test.json").read_text())
    videos = demo_videos.read_split(demo_root, "test")
    assert [f"{vid}_{story.text()}" for vid, story, _ in videos] == list(captions)
    for video_id, story, look in videos:
        sampled = sample_frames(demo_root / "videos" / f"{video_id}.mp4", demo_videos.NUM_FRAMES)
        descriptions = captions[f"{video_id}_{story.text()}"]
        assert descriptions == [story.describe(t, look) for t in sampled.timestamps]
        assert all(look.phrase() in d for d in descriptions)
        for frame, t in zip(sampled.frames.astype(int), sampled.timestamps, strict=True):
            background = demo_videos.BACKGROUNDS[look.background]
            free = next(c for c in demo_videos.CORNERS if c != look.dot)
            x, y = demo_videos.CORNERS[free]
            assert np.abs(frame[y - 2 : y + 2, x - 2 : x + 2].mean((0, 1)) - background).max() < 30, video_id
            if look.dot:
                x, y = demo_videos.CORNERS[look.dot]
                assert np.abs(frame[y - 1 : y + 1, x - 1 : x + 1].mean((0, 1)) - demo_videos.DOT).max() < 40
            colour, place = story.phase(t)
            shape_pixels = np.abs(frame - background).max(-1) > 60
            shape_pixels[:9, :9] = shape_pixels[:9, -9:] = shape_pixels[-9:, :9] = shape_pixels[-9:, -9:] = (
                False
            )
            if colour is None:
                assert shape_pixels.sum() < 10, f"{video_id}: expected no shape at {t} s"
                continue
            x, y = demo_videos.PLACES[place]
            pixel = frame[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
            assert np.abs(pixel - demo_videos.COLOURS[colour]).max() < 40, f"{video_id}: {colour} at {place}"
            small, large = (
                demo_videos.shape_mask(story.shape, size, (32, 32)).sum() for size in ("small", "large")
            )
            expected = {"small": small, "large": large}[look.size]
            assert abs(shape_pixels.sum() - expected) < 0.3 * expected, (
                f"{video_id}: {look.size} {story.shape}"
            )
        # a change story changes within the clip; a static one does not
        assert (len(set(descriptions)) > 1) == (story.kind == "change"), video_id


def test_frame_descriptions_are_particular_to_each_video():
    """Like an image captioner's captions of real videos, frame descriptions rarely repeat across videos."""
    videos = [v for split in demo_videos.plan(np.random.default_rng(0), 240, 60, 60).values() for v in split]
    times = [i / demo_videos.FPS for i in range(0, demo_videos.FPS * demo_videos.SECONDS, demo_videos.FPS)]
    owners: dict[str, set[str]] = {}
    for video_id, story, look in videos:
        for t in times:
            owners.setdefault(story.describe(t, look), set()).add(video_id)
    own = sum(len(vids) == 1 for vids in owners.values()) / len(owners)
    per_video = [sum(len(owners[story.describe(t, look)]) == 1 for t in times) for _, story, look in videos]
    assert own > 0.8  # most descriptions belong to one video
    assert np.mean([n > 0 for n in per_video]) > 0.9  # nearly every video has a description of its own
    # a change text tells the story only: it names no look
    for _, story, _ in (v for v in videos if v[1].kind == "change"):
        assert not any(bg in story.text() for bg in demo_videos.BACKGROUNDS)
        assert not any(size in story.text() for size in demo_videos.SIZES)


def test_every_description_fits_the_demo_clip_text_context():
    from training.pretrain_demo_clip import tokenize

    texts = {
        story.describe(t, look)
        for story in demo_videos.all_stories()
        for look in demo_videos.all_looks()
        for t in (0.0, demo_videos.SECONDS - 0.5)
    }
    longest = sorted(texts, key=len)[-200:]  # BPE tokens grow with characters here: check the longest
    assert tokenize(longest).shape[1] == 24  # raises, naming the text, when one does not fit


def test_ablation_summary_table_picture_and_page(tmp_path):
    from PIL import Image

    from training import ablation_report

    def metrics(r1):
        return {d: {"R1": r1, "R5": 90.0, "R10": 100.0, "MdR": 1.0, "MnR": 1.5} for d in ("t2v", "v2t")}

    runs = {
        0: {"zero-shot": metrics(20.0), "full": metrics(60.0)},
        1: {"zero-shot": metrics(20.0), "full": metrics(70.0)},
    }
    summary = ablation_report.summarize(runs)
    full = summary["full"]["t2v"]["R1"]
    assert (full["mean"], full["values"]) == (65.0, [60.0, 70.0])
    assert full["std"] == pytest.approx(np.std([60.0, 70.0], ddof=1))
    assert summary["zero-shot"]["v2t"]["R1"]["std"] == 0.0
    table = ablation_report.markdown_table(summary, 2)
    assert "| full | 65.0 ± 7.1 | 90.0 ± 0.0 |" in table and table.count("\n") == 3
    assert ablation_report.markdown_table(ablation_report.summarize({5: runs[0]}), 1).count("±") == 0
    png = ablation_report.plot_ablation(summary, tmp_path / "ablation.png", "title")
    assert Image.open(png).size[0] > Image.open(png).size[1]
    page = ablation_report.results_page(summary, 2, "ablation.png", "t", {"curves": "c.png"})
    assert "<img src='ablation.png'" in page and "over 2 seeds" in page and page.count("<tr>") == 3
    with pytest.raises(ValueError, match="seed 1 has models"):
        ablation_report.summarize({0: runs[0], 1: {"full": metrics(1.0)}})
    values = ablation_report.summarize_values(
        {0: {"full": {"a": 1.0, "b": float("nan")}}, 1: {"full": {"a": 3.0, "b": float("nan")}}}
    )
    assert values["full"]["a"]["mean"] == 2.0 and values["full"]["a"]["std"] == pytest.approx(np.sqrt(2))
    assert ablation_report.value_table(values, 2, ["a", "b"]).splitlines()[-1] == "| full | 2.0 ± 1.4 | – |"
    html_table = ablation_report.value_table(values, 2, ["a"], html_table=True)
    page = ablation_report.results_page(summary, 2, "ablation.png", "t", sections={"per kind": html_table})
    assert (
        "<h2>per kind</h2><table><tr><th>model</th><th>a</th></tr><tr><td>full</td><td>2.0 ± 1.4</td>" in page
    )


def test_demo_cli_refuses_zero_seeds(capsys):
    from pipelines import demo

    assert demo.main(["--seeds", "0"]) == 1
    assert "error: --seeds must be at least 1" in capsys.readouterr().err


def test_demo_outputs_made_from_other_data_are_made_again(tmp_path):
    """The demo owns its output folder: a step's output made from another data folder is removed, not mixed."""
    from demo import steps

    data = demo_videos.generate(tmp_path / "a", seed=0, n_train=4, n_val=0, n_test=4, progress=False)
    out, stamp_file = tmp_path / "out", tmp_path / "out" / "x.source.json"
    (out / "x").mkdir(parents=True)
    (out / "x" / "old").write_text("made from other data")
    assert not steps._fresh(stamp_file, steps.data_stamp(data), out / "x")
    assert not (out / "x").exists()  # removed: the step runs again
    (out / "x").mkdir()
    steps._done(stamp_file, steps.data_stamp(data))
    assert steps._fresh(stamp_file, steps.data_stamp(data), out / "x") and (out / "x").exists()
    moved = tmp_path / "moved"
    data.rename(moved)  # DISCOVLA_CACHE moved to a bigger disk
    assert not steps._fresh(stamp_file, steps.data_stamp(moved), out / "x") and not (out / "x").exists()


@pytest.mark.slow
def test_caption_step_runs_again_after_the_cache_moved(tmp_path):
    """Issue 21: `make demo` after DISCOVLA_CACHE changed re-captions the sample instead of refusing to mix."""
    from demo import steps
    from shared.shards import load_caption_set

    data = demo_videos.generate(
        tmp_path / "cache-a" / "demo", seed=0, n_train=4, n_val=0, n_test=4, progress=False
    )
    out = tmp_path / "out"
    first = steps.caption_sample(data, out, 2, quiet=True)
    moved = tmp_path / "cache-b" / "demo"
    moved.parent.mkdir()
    data.rename(moved)
    again = steps.caption_sample(
        moved, out, 2, quiet=True
    )  # refused before: "holds captions made with other settings"
    assert again == first and len(load_caption_set(again)) == 2
    assert str(moved) in (out / "captions-llava.source.json").read_text()


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    """The real pipelines chained by `python -m pipelines.demo --quick`: every step runs and reports.

    The quick settings (40 pretraining steps, 3 epochs) are far too small to learn the demo's retrieval task,
    so recall is not compared here: the full demo's measured table is in the README.
    """
    env = {**os.environ, "DISCOVLA_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.demo", "--quick", "--no-progress", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results" / "demo_results.json").read_text())
    assert results["seeds"] == [0] and len(results["summary"]) == 5
    for m in results["summary"].values():
        assert all(0 <= m[d][k]["mean"] <= 100 for d in ("t2v", "v2t") for k in ("R1", "R5", "R10"))
    from demo.results import KIND_COLUMNS

    for model, columns in results["kinds"].items():  # R@1 per kind and the teacher's, for every row
        assert set(columns) == set(KIND_COLUMNS), model
        assert all(0 <= c["mean"] <= 100 for c in columns.values()), model
    run = results["runs"]["0"]["+ AlignDistill (DiscoVLA)"]
    assert (
        run["groups"]["static"]["num_texts"] + run["groups"]["change"]["num_texts"] == run["num_texts"] == 60
    )
    for run in sorted((out / "seed-0").glob("train-*")):  # every training lowered its loss
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses = [row["total"] for row in logged if "total" in row]
        assert losses[-1] < losses[0], run
        assert "eval_split: val" in (run / "config.yaml").read_text()  # test is evaluated once, apart
    assert 0 <= results["demo_clip"]["frame_to_description_r1_test"] <= 100
    assert (out / "captions-llava" / "manifest.json").exists()
    assert (out / "captions-llava-view" / "index.html").exists()
    page = (out / "results" / "index.html").read_text()
    assert "ablation.png" in page and all(name in page for name in results["summary"])
    assert "diagnostics.png" in page and "teacher t2v R@1 change" in page
    assert (out / "results" / "ablation.png").stat().st_size > 0
    assert (out / "results" / "diagnostics.png").stat().st_size > 0
    steps = [s["step"] for s in json.loads((out / "results" / "timings.json").read_text())]
    assert steps[-2:] == ["ablation trainings, seeds [0]", "test evaluations"]
    assert "pretrain demo CLIP (cached)" in steps
    assert "Demo results" in proc.stdout and "total" in proc.stdout
