"""The one place that talks to the video decoder (decord), plus the deadline that keeps it from hanging.

It raises :class:`shared.errors.VideoDecodeError` (also importable from ``shared.frames``); it imports
nothing of ``shared.frames``, which calls it.

decord is fast but unmaintained, and users report hangs and leaks on some long, UHD or damaged files.
Every call therefore runs under :func:`run_with_deadline`.

Why a thread and not a subprocess: decord calls into C through ``ctypes``, which releases the GIL, so a
worker thread decodes while the caller waits on an event with a deadline. Measured on the 2-core dev
machine: the thread plus file checks cost 0.06 ms per video, while a forked child sending the frames back
through a pipe added ~55 ms to a 107 ms decode (12 frames, 640x360; spawn, or fork with torch and Ray
loaded, costs more and fork is unsafe beside their threads). The price: a thread cannot
be killed, so a decode that overruns is *abandoned*: the caller gets ``VideoDecodeError`` at once, the
daemon thread runs on (or sits stuck) in the background and never blocks interpreter exit. Nothing
restarts a process because of it: an abandoned thread lives until its process ends, so a long-lived
process (a caption actor) keeps one stuck thread, and its memory, per video that hung.
:func:`abandoned_decodes` counts them for logging or for a caller that wants to recycle the process.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from shared.errors import VideoDecodeError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_abandoned = 0
_abandoned_lock = threading.Lock()


def abandoned_decodes() -> int:
    """How many decodes in this process overran their deadline and were left running."""
    return _abandoned


def run_with_deadline(fn: Callable[[], T], timeout_s: float | None, path: str | Path) -> T:
    """``fn()`` in a daemon thread; ``VideoDecodeError(path, ...)`` if it takes over ``timeout_s``.

    Exceptions raised by ``fn`` are re-raised in the caller. ``timeout_s=None`` runs ``fn`` inline,
    with no deadline.
    """
    if timeout_s is None:
        return fn()
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds or None, got {timeout_s}")
    outcome: dict = {}
    done = threading.Event()

    def work():
        try:
            outcome["value"] = fn()
        except BaseException as err:  # handed to the caller, which re-raises it
            outcome["error"] = err
        finally:
            done.set()

    threading.Thread(target=work, name=f"decode:{Path(path).name}", daemon=True).start()
    if not done.wait(timeout_s):
        global _abandoned
        with _abandoned_lock:
            _abandoned += 1
        logger.warning("%s: decode overran %.1f s and was abandoned (%d so far)", path, timeout_s, _abandoned)
        raise VideoDecodeError(path, f"decoding did not finish within timeout_s={timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class DecordVideo:
    """An opened video: its frame count, average frame rate and random access to frames.

    Opening reads the container index but no pixels. Any failure becomes ``VideoDecodeError`` naming
    the file and the cause.
    """

    def __init__(self, path: str | Path, num_threads: int = 1, *, name: str | None = None):
        """``path``: the local file; ``name``: what errors call it (default ``path``), e.g. the URI of
        the object that ``path`` is a temporary copy of (``shared.video_source.local_video``)."""
        self.path = name or str(path)
        file = str(path)
        _check_file(file, self.path)
        from decord import VideoReader, cpu  # imported here: the module loads libav* once, on first use

        try:
            self._reader = VideoReader(file, ctx=cpu(0), num_threads=num_threads)
            self.n_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as err:  # decord raises RuntimeError, DECORDError and AssertionError
            raise VideoDecodeError(self.path, _open_failure_cause(file, err)) from err
        if self.n_frames < 1:
            raise VideoDecodeError(
                self.path, f"zero-duration video: the decoder reports {self.n_frames} frames"
            )
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise VideoDecodeError(self.path, f"zero-duration video: average frame rate is {self.fps}")

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as [T, H, W, 3] uint8 RGB."""
        indices = [int(i) for i in indices]
        if indices and not 0 <= min(indices) <= max(indices) < self.n_frames:
            raise VideoDecodeError(self.path, f"frame indices {indices} outside [0, {self.n_frames})")
        try:
            batch = self._reader.get_batch(indices)
            # decord.bridge may be set to torch/mxnet elsewhere in the process
            frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
        except Exception as err:
            raise VideoDecodeError(self.path, f"decoding frames {indices} failed: {_short(err)}") from err
        if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
            raise VideoDecodeError(
                self.path, f"decoder returned shape {frames.shape} for {len(indices)} frames"
            )
        return frames


def _check_file(path: str, name: str | None = None) -> None:
    """Cheap checks before decord sees the file: it only says 'Error reading' for all of these."""
    name = name or path
    if not os.path.exists(path):
        raise VideoDecodeError(name, "file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(name, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(name, "empty file (0 bytes)")


def _open_failure_cause(path: str, err: BaseException) -> str:
    """Why decord could not open ``path``; asks PyAV (error path only) because decord's message is terse."""
    reason = _short(err)
    try:
        import av

        with av.open(path) as container:
            if not container.streams.video:
                reason = "no video stream in the file (audio only, or the encoder wrote no frames)"
            else:
                reason = f"the video stream cannot be indexed (truncated or broken metadata): {reason}"
    except Exception as probe_err:  # PyAV's message names ffmpeg's reason, e.g. "Invalid data found"
        reason = f"not a readable video container (truncated or not a video): {_short(probe_err)}"
    return f"cannot open: {reason} [{os.path.getsize(path)} bytes]"


_DECORD_LOCATION = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?\.cc:\d+: ")  # "[05:34:59] src/video/x.cc:486: "


def _short(err: BaseException, limit: int = 300) -> str:
    """One line of an exception's message, without decord's source locations."""
    text = _DECORD_LOCATION.sub("", " ".join(str(err).split())) or type(err).__name__
    if "1094995529" in text:  # AVERROR_INVALIDDATA, as decord prints it
        text += " (FFmpeg: invalid data found when processing input)"
    return text if len(text) <= limit else text[:limit] + "..."


def resize_short_side(frames: np.ndarray, short: int) -> np.ndarray:
    """Resize [T, H, W, 3] frames so min(H, W) == ``short``, keeping the aspect ratio.

    The long side becomes round(long · short / min(H, W)). PIL's bilinear filter widens its support
    when it shrinks, so downscaling is antialiased (close to area averaging).
    """
    if short < 1:
        raise ValueError(f"resize_short must be a positive number of pixels, got {short}")
    height, width = frames.shape[1:3]
    scale = short / min(height, width)
    size = (max(round(width * scale), 1), max(round(height * scale), 1))  # PIL wants (W, H)
    if size == (width, height):
        return frames
    out = np.empty((frames.shape[0], size[1], size[0], 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        out[t] = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
    return out
