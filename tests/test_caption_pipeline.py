"""End to end through Ray: generated videos, the tiny LLaVA-NeXT, shards; bad videos, resume, retry, refusal.

One Ray session serves the in-process runs (``run_captioning``); the kill-and-resume test runs the CLI
in subprocesses (each starts its own local Ray) and compares with the in-process run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from captioning.config import CaptionConfig
from captioning.plan import RunRefusedError
from captioning.tiny_model import save_tiny_llava_next
from shared.shards import STATUS_FAILED, completed_shards, read_caption_rows, read_manifest
from shared.synthetic import make_broken_video, make_test_video
from tests.caption_runs import caption_folder, local_ray, tiny_caption_command, tiny_caption_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
F = 4
GOOD = [f"vid{i}" for i in range(6)]
IDS = GOOD + ["bad", "missing"]  # "bad": truncated file; "missing": no file (yet)
SHARD_SIZE = 2  # 8 videos -> 4 shards


@pytest.fixture(scope="module")
def ray_session():
    with local_ray(3):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("caption_data")
    videos = root / "videos"
    videos.mkdir()
    for seed, video_id in enumerate(GOOD):
        make_test_video(videos / f"{video_id}.mp4", 2.0 + seed % 3, 10.0, size=(64, 48), seed=seed)
    make_broken_video(videos / "bad.mp4", "truncated")
    annotations = videos / "test.jsonl"
    lines = [{"video_id": v, "text": f"clip {v}"} for v in IDS] + [{"video_id": "vid0", "text": "again"}]
    annotations.write_text("".join(json.dumps(line) + "\n" for line in lines))
    model = save_tiny_llava_next(root / "tiny-llava")
    return {"root": root, "videos": videos, "annotations": annotations, "model": model}


def _config(data, out, **changes) -> CaptionConfig:
    cfg = tiny_caption_config(data["model"], out, frames=F, max_tokens=6, shard_size=SHARD_SIZE)
    return replace(cfg, **changes)


def _run(data, out, **changes):
    return caption_folder(data["annotations"], _config(data, out, **changes))


def _rows(out) -> list[tuple]:
    table = read_caption_rows(out).table
    return sorted(tuple(r.values()) for r in table.to_pylist())


@pytest.fixture(scope="module")
def baseline(ray_session, data, tmp_path_factory):
    """An uninterrupted run: the reference for the other tests."""
    out = tmp_path_factory.mktemp("baseline") / "captions"
    return out, _run(data, out)


def test_end_to_end_captions_every_frame_and_records_bad_videos(baseline):
    out, summary = baseline
    assert (summary.videos_total, summary.videos_captioned, summary.videos_failed) == (8, 6, 2)
    assert summary.frames == 6 * F and summary.shards_written == 4  # captioned frames only
    assert summary.engine_restarts == 0 and summary.first_caption_s > 0
    table = read_caption_rows(out).table
    assert table.num_rows == 8 * F  # vid0 appears twice in the annotations but is captioned once
    rows = {(r["video_id"], r["frame_pos"]): r for r in table.to_pylist()}
    assert {v for v, _ in rows} == set(IDS)
    for video_id in GOOD:
        for pos in range(F):
            row = rows[(video_id, pos)]
            assert row["status"] == "ok" and row["caption"] and row["error"] is None
            assert row["finish_reason"] in ("stop", "length") and 1 <= row["n_tokens"] <= 6
            assert row["frame_index"] >= 0 and row["timestamp_s"] == pytest.approx(row["frame_index"] / 10.0)
    assert rows[("missing", 0)]["status"] == STATUS_FAILED and "not found" in rows[("missing", 0)]["error"]
    assert rows[("bad", 3)]["status"] == STATUS_FAILED and rows[("bad", 3)]["error"].startswith("decode:")
    manifest = read_manifest(out)
    assert manifest["splits"]["test"]["failed_videos"] == 2 and manifest["splits"]["test"]["complete"]
    prov = manifest["provenance"]
    assert prov["prompt_preset"] == "frame-caption-v1" and prov["sampler"]["num_frames"] == F
    assert prov["model_revision"].startswith("local-sha256:") and prov["engine"] == "transformers"
    assert "python -m pipelines.shards view" in summary.format()


def test_rerun_skips_finished_shards(baseline, data):
    out, _ = baseline
    before = {i: s.sha256 for i, s in completed_shards(out, "test").items()}
    summary = _run(data, out)
    assert summary.videos_captioned == 0 and summary.shards_written == 0
    assert {i: s.sha256 for i, s in completed_shards(out, "test").items()} == before


def test_changed_prompt_is_refused_and_nothing_is_written(baseline, data):
    out, _ = baseline
    before = sorted(p.stat().st_mtime_ns for p in (out / "_stats").iterdir())
    with pytest.raises(RunRefusedError, match="prompt_sha256"):
        _run(data, out, prompt="What is in this picture?")
    assert sorted(p.stat().st_mtime_ns for p in (out / "_stats").iterdir()) == before


def test_retry_failed_recaptions_only_failed_videos(baseline, data, tmp_path):
    out = tmp_path / "retry"
    shutil.copytree(baseline[0], out)
    before = completed_shards(out, "test")
    shutil.copy(data["videos"] / "vid1.mp4", data["videos"] / "missing.mp4")  # the missing file appears
    try:
        summary = _run(data, out, retry_failed=True)
    finally:
        (data["videos"] / "missing.mp4").unlink()
    assert summary.videos_captioned == 1 and summary.videos_failed == 1  # "bad" is still bad
    after = completed_shards(out, "test")
    untouched = [i for i, s in before.items() if s.failed_videos == 0]
    assert all(after[i].sha256 == before[i].sha256 for i in untouched)
    rows = {(r[2], r[3]): r for r in _rows(out)}
    base = {(r[2], r[3]): r for r in _rows(baseline[0])}
    assert len(rows) == len(base) == 8 * F
    assert all(rows[k] == base[k] for k in base if k[0] != "missing")  # other videos keep their rows
    assert rows[("missing", 0)][9] == "ok" and rows[("missing", 0)][6]


def test_kill_and_resume_gives_the_rows_of_an_uninterrupted_run(baseline, data, tmp_path):
    out = tmp_path / "killed"
    command = tiny_caption_command(
        data["annotations"],
        out,
        data["model"],
        frames=F,
        max_tokens=6,
        shard_size=SHARD_SIZE,
        options=["--gpus", "0", "--workers", "1", "--num-cpus", "3", "--videos-per-call", "2"],
    )  # the old flag names, still accepted
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "first_run.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 240
            while (
                not list((out / "_stats").glob("*.json"))
                and proc.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and the Ray processes it started
        except ProcessLookupError:
            pass  # it had already ended: the assertion below says so
        finally:
            proc.wait(timeout=60)
    done_at_kill = completed_shards(out, "test")
    assert 1 <= len(done_at_kill) < 4, (
        f"the run must be killed after its first shard:\n{log.read_text()[-3000:]}"
    )
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(done_at_kill)} already done" in resumed.stdout
    assert len(completed_shards(out, "test")) == 4
    rows = _rows(out)
    assert len(rows) == len({(r[2], r[3]) for r in rows}) == 8 * F  # none lost, none duplicated
    assert rows == _rows(baseline[0])
