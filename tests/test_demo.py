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
    return demo_videos.generate(tmp_path_factory.mktemp("demo"), seed=0, n_train=24, n_test=12)


def test_generation_is_deterministic_and_cached(demo_root, tmp_path):
    again = demo_videos.generate(tmp_path / "again", seed=0, n_train=24, n_test=12)
    for name in ("train.jsonl", "test.jsonl", "frame_captions_train.json"):
        assert (again / name).read_text() == (demo_root / name).read_text()
    first = sample_frames(demo_root / "videos" / "demo-test-0000.mp4", 4).frames
    assert np.array_equal(first, sample_frames(again / "videos" / "demo-test-0000.mp4", 4).frames)
    stamp = (demo_root / "DONE.json").stat().st_mtime_ns
    demo_videos.generate(demo_root, seed=0, n_train=24, n_test=12)  # cached: nothing rewritten
    assert (demo_root / "DONE.json").stat().st_mtime_ns == stamp
    other = demo_videos.generate(tmp_path / "other", seed=1, n_train=24, n_test=12)
    assert (other / "test.jsonl").read_text() != (demo_root / "test.jsonl").read_text()


def test_adapter_items_and_unique_texts(demo_root):
    test = get_dataset("demo", "test", annotations=demo_root).items()
    train = get_dataset("demo", "train", annotations=demo_root).items()
    assert (len(train), len(test)) == (24, 12)
    assert all(item.exists and item.start is None for item in test + train)
    texts = [item.text for item in test + train]
    assert len(set(texts)) == len(texts)  # every story once: retrieval has one right answer
    with pytest.raises(ValueError, match="splits"):
        get_dataset("demo", "val", annotations=demo_root)


def test_frame_descriptions_match_the_sampled_pixels(demo_root):
    captions = json.loads((demo_root / "frame_captions_test.json").read_text())
    for key, descriptions in captions.items():
        video_id, text = key.split("_", 1)
        assert len(descriptions) == demo_videos.NUM_FRAMES
        frames = sample_frames(demo_root / "videos" / f"{video_id}.mp4", demo_videos.NUM_FRAMES).frames
        for frame, description in zip(frames, descriptions, strict=True):
            colours = [c for c in demo_videos.COLOURS if f" {c} " in description]
            if not colours:
                assert description == "an empty dark background"
                assert frame.astype(int).max() < 80, f"{video_id}: expected an empty frame"
                continue
            place = description.rsplit(" ", 1)[-1]
            x, y = demo_videos.PLACES[place]
            pixel = frame[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
            assert np.abs(pixel - demo_videos.COLOURS[colours[0]]).max() < 40, f"{video_id}: {description}"
        assert len({d for d in descriptions}) > 1  # the story changes within the clip


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    """The real pipelines chained by `python -m pipelines.demo --quick`; the method beats zero-shot."""
    env = {**os.environ, "DISCOVLA_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.demo", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results" / "demo_results.json").read_text())
    assert len(results) == 5
    zero_shot = results["zero-shot CLIP (mean pooling)"]["t2v"]["R1"]
    adapted = max(m["t2v"]["R1"] for name, m in results.items() if name != "zero-shot CLIP (mean pooling)")
    assert adapted > zero_shot
    assert (out / "captions-llava" / "manifest.json").exists()
    assert (out / "captions-llava-view" / "index.html").exists()
    assert (out / "results" / "recall_table.html").exists()
    assert "Demo results" in proc.stdout
