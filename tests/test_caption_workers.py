"""The engine actor's logic without Ray: batching across videos, isolating a bad video, a broken engine."""

from __future__ import annotations

import numpy as np
import pytest

import captioning.engines as engines
from captioning.config import EngineSpec
from captioning.engines.base import CaptionEngine, CaptionResult
from captioning.errors import EngineBrokenError, EngineStartError
from captioning.workers import MAX_CONSECUTIVE_ENGINE_FAILURES, Decoded, EngineWorker

F = 3


class FakeEngine(CaptionEngine):
    """Captions a frame with its mean pixel value; fails on frames whose value is 13."""

    name = "fake"
    calls: list[int] = []

    def caption(self, images):
        FakeEngine.calls.append(len(images))
        if any(int(np.asarray(im)[0, 0, 0]) == 13 for im in images):
            raise RuntimeError("engine choked on 13")
        return [CaptionResult(f"value {int(np.asarray(im)[0, 0, 0])}", "stop", 2) for im in images]

    def provenance(self):
        return {"engine": "fake"}


@pytest.fixture
def worker(monkeypatch):
    monkeypatch.setattr(engines, "make_engine", lambda spec: FakeEngine(spec))
    FakeEngine.calls = []
    w = EngineWorker(EngineSpec(backend="transformers", model="fake", prompt_text="q"), num_frames=F)
    FakeEngine.calls = []  # forget the warm-up call
    return w


def _video(video_id: str, value: int) -> Decoded:
    frames = np.full((F, 8, 8, 3), value, np.uint8)
    return Decoded(video_id, frames, np.arange(F) * 10, np.arange(F) * 1.0)


def test_videos_of_a_call_go_to_the_engine_as_one_batch(worker):
    rows = worker.caption_videos("ds", "test", _video("a", 1), _video("b", 2))
    assert FakeEngine.calls == [2 * F]
    assert [[r.caption for r in video] for video in rows] == [["value 1"] * F, ["value 2"] * F]
    assert [r.frame_index for r in rows[1]] == [0, 10, 20] and rows[1][2].frame_pos == 2


def test_a_video_that_breaks_the_batch_fails_alone(worker):
    missing = Decoded("gone", None, None, None, "decode: file not found")
    rows = worker.caption_videos("ds", "test", _video("a", 1), _video("bad", 13), missing, _video("c", 3))
    assert FakeEngine.calls == [3 * F, F, F, F]  # the batch, then one call per decodable video
    status = [{r.status for r in video} for video in rows]
    assert status == [{"ok"}, {"failed"}, {"failed"}, {"ok"}]
    assert rows[1][0].error == "caption: RuntimeError: engine choked on 13" and rows[1][0].frame_index == 0
    assert (
        len(rows[2]) == F and rows[2][0].error == "decode: file not found" and rows[2][0].frame_index is None
    )


def test_an_engine_failing_on_every_video_stops_the_run(worker):
    for i in range(MAX_CONSECUTIVE_ENGINE_FAILURES - 1):
        worker.caption_videos("ds", "test", _video(f"bad{i}", 13))
    worker.caption_videos("ds", "test", _video("ok", 1))  # a success resets the count
    for i in range(MAX_CONSECUTIVE_ENGINE_FAILURES - 1):
        worker.caption_videos("ds", "test", _video(f"bad{i}", 13))
    with pytest.raises(EngineBrokenError, match="failed on 5 videos in a row"):
        worker.caption_videos("ds", "test", _video("last", 13))


def test_an_engine_that_cannot_start_reports_its_cause_in_one_line(monkeypatch):
    def broken(spec):
        raise ValueError("max_model_len 8192 is larger than the model's 2048\n  (a long traceback follows)")

    monkeypatch.setattr(engines, "make_engine", broken)
    w = EngineWorker(EngineSpec(backend="transformers", model="some/model", prompt_text="q"), num_frames=F)
    with pytest.raises(EngineStartError) as err:
        w.ready()
    assert str(err.value) == (
        "the transformers engine for some/model could not start: ValueError: "
        "max_model_len 8192 is larger than the model's 2048"
    )
    with pytest.raises(EngineStartError):
        w.caption_videos("ds", "test", _video("a", 1))


def test_the_driver_gets_the_same_rows_as_one_arrow_table(worker):
    missing = Decoded("gone", None, None, None, "decode: file not found")
    videos = (_video("a", 1), missing, _video("b", 2))
    table, counts = worker.caption_call("ds", "test", list(videos[:2]), videos[2])  # a decode task's list too
    rows = worker.caption_videos("ds", "test", *videos)
    assert counts == [len(r) for r in rows] == [F, F, F]
    assert table.to_pylist() == [vars(r) for video in rows for r in video]
