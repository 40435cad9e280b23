"""Failures of parts, not of the run (one local Ray instance, the tiny LLaVA-NeXT, generated videos):
an engine process killed mid-run, a poison video that kills every engine it touches, engines that
cannot start, a video whose decode process dies. Rows are compared with an undisturbed run of the same
videos.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import replace

import pytest

from captioning.errors import EngineStartError
from captioning.tiny_model import save_tiny_llava_next
from shared.shards import read_caption_rows
from shared.shards.validate import validate_caption_set
from shared.synthetic import make_test_video
from tests.caption_runs import caption_folder, local_ray, tiny_caption_config
from tests.fault_decode import CRASH_PREFIX
from tests.ray_cluster import _cmdline, _with_descendants

pytestmark = pytest.mark.slow

F = 3
GOOD = [f"vid{i:02d}" for i in range(8)]
POISON = "zz_poison"


@pytest.fixture(scope="module")
def ray_session():
    # the fault engine and the fault decoder live in tests/
    with local_ray(4, engines_import_tests=True, setup_hook="tests.fault_decode.install"):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("failure_data")
    videos = root / "videos"
    videos.mkdir()
    for seed, video_id in enumerate(GOOD):
        make_test_video(videos / f"{video_id}.mp4", 2.0, 8.0, size=(64, 48), seed=seed)
    make_test_video(videos / f"{POISON}.mp4", 2.0, 8.0, size=(64, 40), seed=99)
    lines = [{"video_id": v, "text": f"clip {v}"} for v in [*GOOD, POISON]]
    (videos / "test.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"videos": videos, "model": save_tiny_llava_next(root / "tiny-llava")}


def _run(data, out, **changes):
    cfg = tiny_caption_config(data["model"], out, frames=F, max_tokens=5, shard_size=3, workers=2)
    return caption_folder(data["videos"] / "test.jsonl", replace(cfg, **changes))


def _rows(out) -> dict:
    rows = read_caption_rows(out).table.to_pylist()
    keyed = {(r["video_id"], r["frame_pos"]): r for r in rows}
    assert len(keyed) == len(rows), "duplicate (video_id, frame_pos) rows"
    return keyed


@pytest.fixture(scope="module")
def baseline(ray_session, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("undisturbed") / "captions"
    summary = _run(data, out)
    assert (summary.videos_captioned, summary.videos_failed, summary.engine_restarts) == (9, 0, 0)
    return _rows(out)


def _busy_engines() -> list[int]:
    """This driver's engine actors that are captioning now (Ray titles a worker with its running method)."""
    return sorted(
        pid
        for pid in _with_descendants({os.getpid()})
        if _cmdline(pid).startswith("ray::EngineWorker.caption_call")
    )


def test_an_engine_killed_mid_run_is_replaced_and_no_row_is_lost_or_doubled(baseline, data, tmp_path):
    out = tmp_path / "killed"
    killed: list[int] = []

    def kill_one_engine_after_the_first_shard():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((out / "_stats").glob("*.json")):
            time.sleep(0.05)
        while time.monotonic() < deadline and not (engines := _busy_engines()):
            time.sleep(0.01)
        if engines:
            os.kill(engines[0], signal.SIGKILL)  # as the out-of-memory killer would
            killed.append(engines[0])

    killer = threading.Thread(target=kill_one_engine_after_the_first_shard, daemon=True)
    killer.start()
    summary = _run(data, out)
    killer.join(timeout=5)
    assert killed, "no engine process was found to kill"
    assert summary.engine_restarts >= 1 and summary.requeued_videos >= 1
    assert (summary.videos_captioned, summary.videos_failed) == (9, 0)
    assert _rows(out) == baseline
    assert validate_caption_set(out).ok
    assert "engine restarts: " in summary.format()


def test_a_poison_video_becomes_failed_rows_and_the_run_goes_on(baseline, data, tmp_path):
    out = tmp_path / "poison"
    summary = _run(data, out, backend="tests.fault_engine:DiesOnTallFrames")
    assert (summary.videos_captioned, summary.videos_failed) == (8, 1)
    # one death among the first calls, then two deaths with the poison video alone on an engine
    assert summary.engine_restarts == 3
    rows = _rows(out)
    assert set(rows) == set(baseline)
    assert {k: r for k, r in rows.items() if k[0] != POISON} == {
        k: r for k, r in baseline.items() if k[0] != POISON
    }
    poison = [rows[(POISON, pos)] for pos in range(F)]
    assert all(r["status"] == "failed" for r in poison)
    assert poison[0]["error"].startswith("caption: the engine died 2 times on this video")
    assert validate_caption_set(out).ok


def test_engines_that_cannot_start_stop_the_run_before_any_video(ray_session, data, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(EngineStartError) as err:
        _run(data, out, backend="tests.fault_engine:NeverStarts")
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("the tests.fault_engine:NeverStarts engine for ")
    assert message.endswith(
        "could not start: ValueError: max_model_len 256 is longer than the model's context of 128 tokens"
    )
    assert not (out / "_stats").exists() and not (out / "data").exists()  # no failure rows for untried videos


def test_a_video_that_kills_its_decode_process_becomes_failed_rows_and_the_run_goes_on(
    baseline, data, tmp_path
):
    """A decoder crash (the process exits, no exception) on one video: that video is retried alone and then
    gets failed rows naming the decode process; every other video is captioned as in an undisturbed run."""
    videos = tmp_path / "videos"  # the module's videos plus one more, a valid file the decoder dies on
    shutil.copytree(data["videos"], videos)
    shutil.copy(videos / f"{GOOD[0]}.mp4", videos / f"{CRASH_PREFIX}.mp4")
    with (videos / "test.jsonl").open("a") as f:
        f.write(json.dumps({"video_id": CRASH_PREFIX, "text": "x"}) + "\n")
    out = tmp_path / "crash"
    cfg = tiny_caption_config(data["model"], out, frames=F, max_tokens=5, shard_size=3, workers=2)
    summary = caption_folder(videos / "test.jsonl", cfg)
    assert (summary.videos_captioned, summary.videos_failed) == (9, 1)
    assert summary.engine_restarts == 0 and summary.requeued_videos >= 1
    rows = _rows(out)

    def content(rows):  # the rows without their shard file: one more video moves zz_poison to another shard
        return {
            k: {f: v for f, v in r.items() if f != "_file"} for k, r in rows.items() if k[0] != CRASH_PREFIX
        }

    assert content(rows) == content(baseline)
    crashed = [rows[(CRASH_PREFIX, pos)] for pos in range(F)]
    assert all(r["status"] == "failed" for r in crashed)
    assert crashed[0]["error"].startswith("decode: the decode process died"), crashed[0]["error"]
    assert validate_caption_set(out).ok
