"""Small real video files, generated with PyAV, for tests, benchmarks and the demo.

Every frame written by :func:`make_test_video` carries its own frame number as a row of black and
white bars (``CODE_BITS`` bits, most significant first) in the top third of the picture, so a test can
tell exactly which frame a decoder returned with :func:`read_frame_index`. The rest of the picture is a
seeded colour background with a square that moves from frame to frame. Everything is deterministic
from ``seed``; the H.264 encoder itself is deterministic for the same input and settings.

Public API (stable: other modules build their test data on it)::

    pattern_frame(index, size=(64, 48), seed=0) -> np.ndarray         # [H, W, 3] uint8
    read_frame_index(frame) -> int                                    # inverse of the bar code
    write_video(path, frames, fps=30.0, timestamps_s=None, faststart=False) -> Path  # H.264 mp4
    make_test_video(path, seconds, fps=30.0, size=(64, 48), seed=0) -> Path
    make_vfr_test_video(path, timestamps_s, size=(64, 48), seed=0) -> Path
    make_broken_video(path, kind, seed=0) -> Path                     # kind in BROKEN_KINDS

``size`` is ``(width, height)``; both must be even (yuv420p) and the width at least ``4 * CODE_BITS``
so every bar stays a few pixels wide after compression.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import av

logger = logging.getLogger(__name__)

CODE_BITS = 16  # frame numbers up to 65,535 (36 min at 30 fps)
BROKEN_KINDS = (
    "zero_byte",
    "text",
    "truncated",
    "truncated_faststart",
    "truncated_tail",
    "no_frames",
    "no_video_stream",
    "still_image",
)
_DARK, _LIGHT = 16, 235  # video-range luma, so yuv420p conversion never clips the code bars
# mbtree off: x264's macroblock-tree rate control made the bytes (and pixels, by a few levels) differ
# between runs for identical input; without it the output is a pure function of the frames.
_X264_OPTIONS = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
_VFR_TIME_BASE = Fraction(1, 90_000)  # the MPEG clock; fine enough for any real frame timing


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width % 2 or height % 2 or width < 4 * CODE_BITS or height < 16:
        raise ValueError(
            f"size must be (width, height), both even, width >= {4 * CODE_BITS} and height >= 16; got {size}"
        )
    return width, height


def pattern_frame(index: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """Frame ``index`` of the synthetic clip: [H, W, 3] uint8 RGB with ``index`` bar-coded on top."""
    if not 0 <= index < 2**CODE_BITS:
        raise ValueError(f"frame index must be in [0, {2**CODE_BITS}), got {index}")
    width, height = _check_size(size)
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=3)
    square_rgb = rng.integers(0, 256, size=3)
    ramp = (np.arange(width) * 64 // width + index) % 64  # a gradient that scrolls by one step per frame
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = (base[None, None, :] + ramp[None, :, None] - 32).clip(0, 255).astype(np.uint8)
    # the moving square, in the lower two thirds
    band = height // 3
    side = max(min(width, height - band) // 4, 2)
    x0 = (index * 3) % max(width - side, 1)
    y0 = band + (index * 2) % max(height - band - side, 1)
    frame[y0 : y0 + side, x0 : x0 + side] = square_rgb
    # the bar code: bit b (most significant first) fills bar b with light (1) or dark (0)
    bar = width // CODE_BITS
    for b in range(CODE_BITS):
        bit = (index >> (CODE_BITS - 1 - b)) & 1
        frame[:band, b * bar : (b + 1) * bar] = _LIGHT if bit else _DARK
    return frame


def read_frame_index(frame: np.ndarray) -> int:
    """Decode the frame number from a (possibly compressed or mildly resized) synthetic frame."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] frame, got shape {frame.shape}")
    height, width = frame.shape[:2]
    band = height // 3
    bar = width / CODE_BITS
    rows = frame[band // 4 : max(3 * band // 4, band // 4 + 1)].astype(np.float64).mean(axis=2)
    index = 0
    for b in range(CODE_BITS):
        lo, hi = int(b * bar + bar / 4), int((b + 1) * bar - bar / 4)
        level = rows[:, lo : max(hi, lo + 1)].mean()
        index = (index << 1) | int(level > (_DARK + _LIGHT) / 2)
    return index


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    timestamps_s: Sequence[float] | None = None,
    faststart: bool = False,
) -> Path:
    """Encode RGB frames ([H, W, 3] uint8, even sizes) as an H.264 yuv420p mp4 at ``path``.

    Constant frame rate by default. With ``timestamps_s`` (one per frame, strictly increasing) every
    frame gets that presentation time instead: a variable-frame-rate file (``fps`` is then only the
    nominal rate written in the stream header). ``faststart`` puts the index (moov) before the media
    data, as web-ready files have it.
    """
    import av  # lazy: importing av costs ~0.7 s, and every CLI imports the dataset registry

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    pts = None if timestamps_s is None else _vfr_pts(timestamps_s)
    n_written = 0
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        stream = None
        for i, rgb in enumerate(frames):
            if stream is None:
                stream = _add_h264_stream(container, rgb.shape, rate, variable=pts is not None)
            frame = _yuv_frame(rgb)
            if pts is None:
                frame.pts, frame.time_base = i, 1 / rate
            else:
                if i >= len(pts):
                    raise ValueError(f"{path}: more frames than timestamps_s ({len(pts)})")
                frame.pts, frame.time_base = pts[i], _VFR_TIME_BASE
            container.mux(stream.encode(frame))
            n_written += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        if pts is not None and n_written != len(pts):
            raise ValueError(f"{path}: {n_written} frames but {len(pts)} timestamps_s")
        container.mux(stream.encode(None))  # flush the encoder
    return path


def _yuv_frame(rgb: np.ndarray) -> av.VideoFrame:
    """RGB [H, W, 3] uint8 -> a yuv420p frame (FFmpeg's swscale, BT.601, as decoders assume)."""
    import av  # lazy: importing av costs ~0.7 s, and every CLI imports the dataset registry

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
    return frame.reformat(format="yuv420p")


def _vfr_pts(timestamps_s: Sequence[float]) -> list[int]:
    pts = [round(Fraction(t).limit_denominator(10**6) / _VFR_TIME_BASE) for t in timestamps_s]
    if any(b <= a for a, b in zip(pts, pts[1:], strict=False)) or (pts and pts[0] < 0):
        raise ValueError(
            f"timestamps_s must be >= 0 and strictly increasing, got {list(timestamps_s)[:8]}..."
        )
    return pts


def _add_h264_stream(container, shape: tuple[int, ...], rate: Fraction, variable: bool):
    height, width = shape[0], shape[1]
    if len(shape) != 3 or shape[2] != 3 or width % 2 or height % 2:
        raise ValueError(f"frames must be [H, W, 3] uint8 with even H and W, got shape {shape}")
    stream = container.add_stream("libx264", rate=rate, options=dict(_X264_OPTIONS))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if variable:
        stream.time_base = _VFR_TIME_BASE
        stream.codec_context.time_base = _VFR_TIME_BASE
    return stream


def make_test_video(
    path: str | Path,
    seconds: float,
    fps: float = 30.0,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> Path:
    """A constant-frame-rate clip of ``round(seconds * fps)`` frames (at least 1), frame i showing i."""
    n = max(int(round(seconds * fps)), 1)
    return write_video(path, (pattern_frame(i, size, seed) for i in range(n)), fps=fps)


def make_vfr_test_video(
    path: str | Path,
    timestamps_s: Sequence[float],
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> Path:
    """A variable-frame-rate clip: frame i (showing i) is presented at ``timestamps_s[i]`` seconds."""
    frames = (pattern_frame(i, size, seed) for i in range(len(timestamps_s)))
    return write_video(path, frames, fps=30.0, timestamps_s=timestamps_s)


def make_broken_video(path: str | Path, kind: str, seed: int = 0) -> Path:
    """A file named like a video that no decoder can sample. ``kind`` is one of ``BROKEN_KINDS``:

    - ``zero_byte``: an empty file;
    - ``text``: a text file (not a media container at all);
    - ``truncated``: the first half of a valid mp4 whose index (moov) sits at the end;
    - ``truncated_faststart``: a valid mp4 with the index first, cut after a few frames' data, so the
      container promises frames that are not there;
    - ``truncated_tail``: the same file missing only its last 16 bytes: it opens, but its last frame
      (always among the sampled ones without a window) cannot be decoded;
    - ``no_frames``: what an encoder that died before its first frame leaves: a valid mp4 header, no
      frames (the muxer then drops the empty track, so the file has no stream at all);
    - ``no_video_stream``: a valid mp4 holding only an audio track;
    - ``still_image``: a PNG picture saved under a video name: one image, no frame rate or duration.
    """
    import av  # lazy: importing av costs ~0.7 s, and every CLI imports the dataset registry

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video, only text in a file named like one\n" * 20)
    elif kind.startswith("truncated"):
        _write_truncated(path, kind, seed=seed)
    elif kind == "no_frames":
        with av.open(str(path), mode="w", format="mp4") as container:
            _add_h264_stream(container, (48, 64, 3), Fraction(30), variable=False)
            container.start_encoding()  # write the header and index although no frame follows
    elif kind == "no_video_stream":
        _write_audio_only(path)
    elif kind == "still_image":
        Image.fromarray(pattern_frame(0, seed=seed)).save(path, format="PNG")
    else:
        raise ValueError(f"unknown broken-video kind {kind!r}; expected one of {BROKEN_KINDS}")
    return path


def _write_truncated(path: Path, kind: str, seed: int) -> None:
    tmp = write_video(
        path.with_name(path.name + ".full.tmp"),
        (pattern_frame(i, (64, 48), seed) for i in range(60)),
        fps=30,
        faststart=kind != "truncated",
    )
    try:
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    if kind == "truncated":  # half the file: the index at the end is lost
        keep = len(data) // 2
    elif kind == "truncated_faststart":  # the index plus ~20 % of the media data
        keep = _moov_end(data) + (len(data) - _moov_end(data)) // 5
    else:  # truncated_tail: all but the last 16 bytes, inside the last frame's data
        keep = len(data) - 16
    path.write_bytes(data[:keep])


def _moov_end(data: bytes) -> int:
    """Byte offset just after the top-level moov box of an mp4 (its index)."""
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        if data[offset + 4 : offset + 8] == b"moov":
            return offset + size
        if size < 8:
            break
        offset += size
    raise ValueError("no moov box found in the generated mp4")


def _write_audio_only(path: Path) -> None:
    import av  # lazy: importing av costs ~0.7 s, and every CLI imports the dataset registry

    sample_rate = 16_000
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(sample_rate) / sample_rate)).astype(np.float32)
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, sample_rate, frame_size):
            chunk = tone[None, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
