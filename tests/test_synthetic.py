"""shared.synthetic: the generated videos are real H.264 files whose frames say which frame they are.

Read back with PyAV here (not decord), so these tests do not depend on the decoder under test elsewhere.
"""

from __future__ import annotations

import hashlib

import av
import numpy as np
import pytest

from shared.synthetic import (
    BROKEN_KINDS,
    CODE_BITS,
    make_broken_video,
    make_test_video,
    make_vfr_test_video,
    pattern_frame,
    read_frame_index,
    write_video,
)


def _decode_all(path) -> tuple[list[np.ndarray], list[float], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return [f.to_ndarray(format="rgb24") for f in frames], [float(f.time) for f in frames], stream


@pytest.mark.parametrize("index", [0, 1, 2, 255, 256, 1234, 2**CODE_BITS - 1])
def test_pattern_frame_carries_its_index(index):
    frame = pattern_frame(index, size=(64, 48), seed=7)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert read_frame_index(frame) == index


def test_pattern_frame_is_deterministic_and_differs_by_frame_and_seed():
    assert np.array_equal(pattern_frame(5, seed=1), pattern_frame(5, seed=1))
    assert not np.array_equal(pattern_frame(5, seed=1), pattern_frame(6, seed=1))
    assert not np.array_equal(pattern_frame(5, seed=1), pattern_frame(5, seed=2))


@pytest.mark.parametrize("size", [(63, 48), (64, 47), (32, 48)])
def test_pattern_frame_rejects_sizes_that_cannot_hold_the_code(size):
    with pytest.raises(ValueError, match="size"):
        pattern_frame(0, size=size)


def test_pattern_frame_rejects_index_out_of_range():
    with pytest.raises(ValueError, match="frame index"):
        pattern_frame(2**CODE_BITS)


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 30.0])
def test_make_test_video_is_h264_yuv420p_with_every_frame_in_order(tmp_path, fps):
    path = make_test_video(tmp_path / "clip.mp4", seconds=2.0, fps=fps, size=(96, 64), seed=3)
    frames, times, stream = _decode_all(path)
    assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert (stream.codec_context.width, stream.codec_context.height) == (96, 64)
    assert float(stream.average_rate) == pytest.approx(fps, rel=1e-4)
    assert len(frames) == round(2.0 * fps)
    assert [read_frame_index(f) for f in frames] == list(range(len(frames)))
    assert times == pytest.approx([i / fps for i in range(len(frames))], abs=1e-3)


def test_same_seed_gives_identical_files(tmp_path):
    """Byte-identical output even with other decoding in between (x264's mbtree broke this once)."""

    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    other = make_test_video(tmp_path / "other.mp4", 1.0, fps=25, size=(96, 64), seed=1)
    kept, digests = [], set()
    for i in range(4):
        kept.append(_decode_all(other)[0])  # live frames from another decoder change the heap layout
        digests.add(digest(make_test_video(tmp_path / f"same_{i}.mp4", 1.0, size=(160, 96), seed=11)))
    assert len(digests) == 1
    assert digest(make_test_video(tmp_path / "c.mp4", 1.0, size=(160, 96), seed=12)) not in digests


def test_vfr_video_presents_each_frame_at_its_timestamp(tmp_path):
    timestamps = [0.0, 0.04, 0.08, 0.5, 1.0, 1.1, 2.5, 2.52, 4.0]
    path = make_vfr_test_video(tmp_path / "vfr.mp4", timestamps, seed=2)
    frames, times, _ = _decode_all(path)
    assert [read_frame_index(f) for f in frames] == list(range(len(timestamps)))
    assert times == pytest.approx(timestamps, abs=1e-4)


def test_write_video_accepts_a_generator_and_keeps_pixels_close(tmp_path):
    source = [pattern_frame(i, size=(64, 48), seed=5) for i in range(10)]
    path = write_video(tmp_path / "gen.mp4", (f for f in source), fps=10)
    frames, _, _ = _decode_all(path)
    assert len(frames) == 10
    mean_abs_error = np.mean(
        [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, source, strict=True)]
    )
    assert mean_abs_error < 8  # lossy but faithful (crf 18)


@pytest.mark.parametrize(
    "frames, timestamps, message",
    [
        ([], None, "no frames"),
        ([np.zeros((47, 64, 3), np.uint8)], None, "even"),
        ([pattern_frame(i) for i in range(3)], [0.0, 0.1], "timestamps"),
        ([pattern_frame(i) for i in range(2)], [0.0, 0.1, 0.2], "timestamps"),
        ([pattern_frame(i) for i in range(3)], [0.0, 0.2, 0.1], "increasing"),
    ],
)
def test_write_video_rejects_bad_input(tmp_path, frames, timestamps, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "bad.mp4", frames, fps=10, timestamps_s=timestamps)


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_videos_cannot_be_decoded(tmp_path, kind):
    path = make_broken_video(tmp_path / f"{kind}.mp4", kind)
    assert path.exists()
    decoded = 0
    with pytest.raises((av.error.FFmpegError, IndexError, ValueError)):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]  # IndexError when there is no video stream
            for _ in container.decode(stream):
                decoded += 1
            if decoded < 2:  # a still image decodes as one picture: not a video
                raise ValueError(f"{kind}: only {decoded} frame(s)")
    assert decoded < 60  # the truncated files never yield all 60 frames they were written with


def test_unknown_broken_kind_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="truncated"):
        make_broken_video(tmp_path / "x.mp4", "corrupt")


@pytest.mark.parametrize("faststart", [False, True])
def test_faststart_puts_the_index_before_the_media(tmp_path, faststart):
    path = write_video(tmp_path / "f.mp4", (pattern_frame(i) for i in range(5)), fps=5, faststart=faststart)
    data = path.read_bytes()
    assert (data.find(b"moov") < data.find(b"mdat")) == faststart
    frames, _, _ = _decode_all(path)
    assert [read_frame_index(f) for f in frames] == list(range(5))
