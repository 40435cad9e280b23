"""shared.frames: the sampling rule of docs/method.md (hand-computed cases) and decoding the right frames."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared import decoder
from shared.frames import (
    SamplerConfig,
    VideoDecodeError,
    plan_frames,
    sample_frames,
    sample_indices,
)
from shared.synthetic import BROKEN_KINDS, make_test_video, read_frame_index

from .conftest import CLIPS, VFR_TIMESTAMPS

# ---------------------------------------------------------------- the rule, by hand (docs/method.md)
# Each case: (n_video_frames, fps, F, window) -> indices worked out on paper from the rule:
# candidates = range(f_start, f_end + 1, round(fps)); > F: candidates[int(linspace(0, len-1, F))];
# == F: all; < F: int(linspace(f_start, f_end, F)).
RULE_CASES = {
    # 20 candidates 0, 30, ..., 570; positions int(k * 19/11) = 0 1 3 5 6 8 10 12 13 15 17 19
    "long video": ((600, 30.0, 12, None), [0, 30, 90, 150, 180, 240, 300, 360, 390, 450, 510, 570]),
    # exactly 12 candidates 0, 25, ..., 275: all kept
    "exactly F candidates": ((300, 25.0, 12, None), list(range(0, 300, 25))),
    # stride round(29.97) = 30; 15 candidates 0..420; positions int(k * 14/11)
    "29.97 fps": ((450, 30000 / 1001, 12, None), [0, 30, 60, 90, 150, 180, 210, 240, 300, 330, 360, 420]),
    # 5 candidates < 12: int(linspace(0, 149, 12)), step 13.545
    "shorter than F seconds": ((150, 30.0, 12, None), [0, 13, 27, 40, 54, 67, 81, 94, 108, 121, 135, 149]),
    # fewer frames than F: int(linspace(0, 4, 12)) repeats frames
    "fewer frames than F": ((5, 30.0, 12, None), [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]),
    # window (2.7, 9.2) -> (2, 9) -> frames 60..270, 8 candidates: int(linspace(60, 270, 12))
    "fractional window": (
        (600, 30.0, 12, (2.7, 9.2)),
        [60, 79, 98, 117, 136, 155, 174, 193, 212, 231, 250, 270],
    ),
    "reversed window": (
        (600, 30.0, 12, (9.2, 2.7)),
        [60, 79, 98, 117, 136, 155, 174, 193, 212, 231, 250, 270],
    ),
    # (5, 5) -> (5, 6) -> frames 150..180: int(linspace(150, 180, 12))
    "equal bounds": ((600, 30.0, 12, (5, 5)), [150, 152, 155, 158, 160, 163, 166, 169, 171, 174, 177, 180]),
    "equal after truncation": (
        (600, 30.0, 12, (5.2, 5.9)),
        [150, 152, 155, 158, 160, 163, 166, 169, 171, 174, 177, 180],
    ),
    # (-3, 2) -> clamped (0, 2) -> frames 0..60
    "negative start": ((600, 30.0, 12, (-3, 2)), [0, 5, 10, 16, 21, 27, 32, 38, 43, 49, 54, 60]),
    # 25 fps, window (1, 3) -> frames 25..75
    "25 fps window": ((300, 25.0, 12, (1, 3)), [25, 29, 34, 38, 43, 47, 52, 56, 61, 65, 70, 75]),
    # window beyond the end: f_end = n - 1 = 149, f_start clipped to it
    "window past the end": ((150, 30.0, 12, (10, 20)), [149] * 12),
    # window (0, 31) on a 12 s 30 fps video (DiDeMo): f_end = 359, 12 candidates 0..330
    "window longer than video": ((360, 30.0, 12, (0, 31)), list(range(0, 360, 30))),
    # F = 4 of 20 candidates: positions int(k * 19/3) = 0 6 12 19
    "F = 4": ((600, 30.0, 4, None), [0, 180, 360, 570]),
}


@pytest.mark.parametrize("case", RULE_CASES, ids=list(RULE_CASES))
def test_sample_indices_follows_the_method_rule(case):
    (n, fps, num_frames, window), expected = RULE_CASES[case]
    indices = sample_indices(n, fps, num_frames, window)
    assert indices.dtype == np.int64
    assert indices.tolist() == expected


def test_sample_indices_is_sorted_and_in_range_for_many_videos():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, fps, f = (
            int(rng.integers(1, 5000)),
            float(rng.choice([23.976, 25, 29.97, 30, 59.94])),
            int(rng.integers(1, 65)),
        )
        window = None if rng.random() < 0.3 else tuple(rng.uniform(-5, 200, size=2))
        indices = sample_indices(n, fps, f, window)
        assert len(indices) == f and np.all(np.diff(indices) >= 0)
        assert 0 <= indices.min() and indices.max() <= n - 1


@pytest.mark.parametrize("n, fps", [(0, 30.0), (10, 0.0), (10, float("nan"))])
def test_sample_indices_rejects_impossible_videos(n, fps):
    with pytest.raises(ValueError):
        sample_indices(n, fps, 12)


def test_sampler_provenance_names_the_rule_and_its_parameters():
    assert SamplerConfig(num_frames=12).provenance() == {
        "name": "discovla-1fps-linspace",
        "version": 1,
        "num_frames": 12,
        "candidate_fps": 1.0,
    }
    with pytest.raises(ValueError, match="num_frames"):
        SamplerConfig(num_frames=0)


# ---------------------------------------------------------------- decoding real files
def _shown(frames: np.ndarray) -> list[int]:
    return [read_frame_index(f) for f in frames]


@pytest.mark.parametrize("name", list(CLIPS))
def test_sample_frames_decodes_exactly_the_sampled_frames(video_dir, name):
    seconds, fps = CLIPS[name]
    sampled = sample_frames(video_dir / name, 12)
    assert sampled.n_video_frames == round(seconds * fps)
    assert sampled.fps == pytest.approx(fps, rel=1e-6)  # decord's average frame rate
    assert sampled.indices.tolist() == sample_indices(sampled.n_video_frames, sampled.fps, 12).tolist()
    assert sampled.frames.shape == (12, 48, 64, 3) and sampled.frames.dtype == np.uint8
    assert _shown(sampled.frames) == sampled.indices.tolist()  # the pixels are those frames
    assert np.allclose(sampled.timestamps, sampled.indices / fps)
    assert sampled.positions.tolist() == list(range(12))


def test_short_clip_repeats_frames(tmp_path):
    path = make_test_video(tmp_path / "nine_frames.mp4", seconds=0.3, fps=30)  # 9 frames < F
    sampled = sample_frames(path, 12)
    assert sampled.indices.tolist() == [0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8]
    assert _shown(sampled.frames) == sampled.indices.tolist()


def test_window_selects_frames_inside_it(video_dir):
    sampled = sample_frames(video_dir / "long_30fps.mp4", 12, window=(2.7, 9.2))
    assert sampled.indices.tolist() == RULE_CASES["fractional window"][1]
    assert _shown(sampled.frames) == sampled.indices.tolist()
    assert sampled.timestamps.min() >= 2.0 and sampled.timestamps.max() <= 9.0


def test_variable_frame_rate_uses_average_fps_and_stream_order(video_dir):
    sampled = sample_frames(video_dir / "vfr.mp4", 12)
    n = len(VFR_TIMESTAMPS)
    assert sampled.n_video_frames == n
    # decord's average rate: frames over the stream's duration (~6 s), not any one section's rate
    assert 14 < sampled.fps < 18
    assert sampled.indices.tolist() == sample_indices(n, sampled.fps, 12).tolist()
    assert _shown(sampled.frames) == sampled.indices.tolist()
    assert np.allclose(sampled.timestamps, sampled.indices / sampled.fps)  # timestamp = index / average fps


def test_plan_matches_decoding_without_pixels(video_dir):
    path = video_dir / "ntsc_2997fps.mp4"
    plan = plan_frames(path, 12, window=(1, 11))
    sampled = sample_frames(path, 12, window=(1, 11))
    assert plan.indices.tolist() == sampled.indices.tolist()
    assert np.array_equal(plan.timestamps, sampled.timestamps)
    assert (plan.fps, plan.n_video_frames) == (sampled.fps, sampled.n_video_frames)


def test_sampling_is_deterministic(video_dir):
    a = sample_frames(video_dir / "pal_25fps.mp4", 12)
    b = sample_frames(video_dir / "pal_25fps.mp4", 12, num_threads=2)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.indices, b.indices)


@pytest.mark.parametrize(
    "size, short, expected_hw",
    [((64, 48), 24, (24, 32)), ((64, 96), 32, (48, 32)), ((96, 54), 32, (32, 57)), ((128, 96), 72, (72, 96))],
)
def test_resize_keeps_aspect_ratio(tmp_path, size, short, expected_hw):
    path = make_test_video(tmp_path / "clip.mp4", seconds=1.0, fps=10, size=size)
    sampled = sample_frames(path, 4, resize_short=short)
    assert sampled.frames.shape == (4, *expected_hw, 3) and sampled.frames.dtype == np.uint8
    width, height = size
    assert expected_hw[1] / expected_hw[0] == pytest.approx(width / height, abs=1 / short)


def test_mild_downscale_keeps_the_frames_recognisable(tmp_path):
    path = make_test_video(tmp_path / "clip.mp4", seconds=2.0, fps=10, size=(128, 96))
    sampled = sample_frames(path, 6, resize_short=72)
    assert _shown(sampled.frames) == sampled.indices.tolist()  # resized, not reordered or blended


def test_decord_torch_bridge_elsewhere_does_not_change_the_output(video_dir):
    import decord

    decord.bridge.set_bridge("torch")
    try:
        sampled = sample_frames(video_dir / "short_5s.mp4", 3)
    finally:
        decord.bridge.set_bridge("native")
    assert isinstance(sampled.frames, np.ndarray) and sampled.frames.shape == (3, 48, 64, 3)


# ---------------------------------------------------------------- failures: one error type, fast
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [*BROKEN_KINDS, "missing", "directory"])
def test_broken_files_raise_video_decode_error_quickly(broken_videos, tmp_path, kind):
    path = {"missing": tmp_path / "missing.mp4", "directory": tmp_path}.get(kind) or broken_videos[kind]
    before = decoder.abandoned_decodes()
    with pytest.raises(VideoDecodeError) as info:
        sample_frames(path, 12, timeout_s=20)
    # failed on its own, not by running into the 20 s deadline (which abandons the decode and says so)
    assert decoder.abandoned_decodes() == before and "timeout_s" not in str(info.value)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert info.value.cause  # says why, e.g. "file not found", "no video stream"
    if kind != "truncated_tail":  # its index is intact: only decoding the last frame fails
        with pytest.raises(VideoDecodeError):
            plan_frames(path, 12)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing", "not found"),
        ("zero_byte", "empty"),
        ("no_video_stream", "no video stream"),
        ("text", "not a readable video container"),
        ("truncated_tail", "decoding frames"),
    ],
)
def test_error_cause_names_the_problem(broken_videos, tmp_path, kind, expected):
    path = tmp_path / "missing.mp4" if kind == "missing" else broken_videos[kind]
    with pytest.raises(VideoDecodeError, match=expected):
        sample_frames(path, 12)


@pytest.mark.timeout(30)
def test_a_hanging_decoder_is_abandoned_at_the_deadline(video_dir, monkeypatch):
    release = threading.Event()

    finished = threading.Event()

    class HangingVideo:
        def __init__(self, path, num_threads=1):
            release.wait(20)  # like decord stuck inside FFmpeg
            finished.set()

    monkeypatch.setattr(decoder, "DecordVideo", HangingVideo)
    before = decoder.abandoned_decodes()
    try:
        with pytest.raises(VideoDecodeError, match="timeout_s=0.2"):
            sample_frames(video_dir / "short_5s.mp4", 12, timeout_s=0.2)
        assert not finished.is_set()  # the caller got its error while the decoder still hung
        assert decoder.abandoned_decodes() == before + 1
    finally:
        release.set()


@pytest.mark.parametrize("length, fps", [(0, 30.0), (10, 0.0), (10, float("nan"))])
def test_zero_duration_reported_by_the_decoder_raises(video_dir, monkeypatch, length, fps):
    class FakeReader:
        def __init__(self, *args, **kwargs):
            pass

        def __len__(self):
            return length

        def get_avg_fps(self):
            return fps

    monkeypatch.setattr("decord.VideoReader", FakeReader)
    with pytest.raises(VideoDecodeError, match="zero-duration"):
        sample_frames(video_dir / "short_5s.mp4", 12)


# ---------------------------------------------------------------- python -m pipelines.frames
def test_cli_prints_the_plan_as_json(video_dir, capsys):
    from pipelines.frames import main

    path = video_dir / "long_30fps.mp4"
    assert main([str(path), "--frames", "6", "--start", "2", "--end", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = sample_indices(600, 30.0, 6, (2, 8))
    assert (report["video"], report["fps"], report["n_video_frames"]) == (str(path), 30.0, 600)
    assert report["window"] == [2.0, 8.0] and report["sampler"]["num_frames"] == 6
    assert [f["frame_pos"] for f in report["frames"]] == list(range(6))
    assert [f["frame_index"] for f in report["frames"]] == expected.tolist()
    assert [f["timestamp_s"] for f in report["frames"]] == pytest.approx((expected / 30.0).tolist())


def test_cli_contact_sheet_holds_the_sampled_frames_in_a_grid(video_dir, tmp_path, capsys):
    from pipelines.frames import GUTTER, LABEL_HEIGHT, main

    out = tmp_path / "sheets" / "long.png"
    args = [
        str(video_dir / "long_30fps.mp4"),
        "--contact-sheet",
        str(out),
        "--image-size",
        "48",
        "--columns",
        "5",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["contact_sheet"] == str(out)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    cell_w, cell_h = 64 + GUTTER, 48 + LABEL_HEIGHT + GUTTER  # 64x48 frames, short side already 48
    assert sheet.shape == (3 * cell_h, 5 * cell_w, 3)  # 12 frames in 5 columns -> 3 rows
    for entry in report["frames"]:
        row, col = divmod(entry["frame_pos"], 5)
        tile = sheet[row * cell_h : row * cell_h + 48, col * cell_w : col * cell_w + 64]
        assert read_frame_index(tile) == entry["frame_index"]


def test_cli_reports_a_broken_video_on_stderr_with_status_1(broken_videos, capsys):
    from pipelines.frames import main

    assert main([str(broken_videos["text"])]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and str(broken_videos["text"]) in captured.err
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err


def test_cli_window_needs_both_ends(video_dir):
    from pipelines.frames import main

    with pytest.raises(SystemExit) as info:
        main([str(video_dir / "long_30fps.mp4"), "--start", "3"])
    assert info.value.code == 2


@pytest.mark.slow
def test_cli_runs_as_a_module(video_dir):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.frames", str(video_dir / "short_5s.mp4"), "--frames", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    frames = json.loads(result.stdout)["frames"]
    assert [f["frame_index"] for f in frames] == sample_indices(150, 30.0, 4).tolist()


def test_bad_arguments_are_value_errors_before_any_decoding(video_dir):
    with pytest.raises(ValueError, match="num_frames"):
        sample_frames(video_dir / "short_5s.mp4", 0)
    with pytest.raises(ValueError, match="resize_short"):
        sample_frames(video_dir / "short_5s.mp4", 12, resize_short=0)
    with pytest.raises(ValueError, match="num_frames"):
        sample_indices(100, 30.0, 0)


def test_parallel_callers_get_the_same_frames_as_serial_ones(video_dir):
    from concurrent.futures import ThreadPoolExecutor

    paths = sorted(video_dir.glob("*.mp4")) * 2
    serial = [sample_frames(p, 12).frames for p in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda p: sample_frames(p, 12).frames, paths))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel, strict=True))
