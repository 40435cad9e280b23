"""The frame sampler: which frames of a video the caption stage and the trainer both use.

The rule is docs/method.md "Frame sampling" and must never differ between the two stages, because
caption ``i`` of a video belongs to sampled frame ``i`` (``frame_pos``). Everything that decides
the indices lives in :func:`sample_indices`, a pure function of the video's frame count and
average frame rate; :func:`sample_frames` only decodes those indices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shared.errors import VideoDecodeError  # noqa: F401  (defined there; imported from here too)

SAMPLER_NAME = "discovla-1fps-linspace"
SAMPLER_VERSION = 1


@dataclass(frozen=True)
class SamplerConfig:
    """Parameters of the frame sampler; recorded in caption provenance and checked by the trainer."""

    num_frames: int = 12  # F: frames per video, the same in captioning and training
    candidate_fps: float = 1.0  # candidates are taken at this rate before linspace down to F

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.candidate_fps <= 0:
            raise ValueError(f"candidate_fps must be > 0, got {self.candidate_fps}")

    def provenance(self) -> dict:
        """What makes two runs' frames identical: name, version and parameters of the rule."""
        return {"name": SAMPLER_NAME, "version": SAMPLER_VERSION, **asdict(self)}


def sample_indices(
    n_video_frames: int,
    fps: float,
    num_frames: int,
    window: tuple[float, float] | None = None,
    candidate_fps: float = 1.0,
) -> np.ndarray:
    """Frame indices (int64, length ``num_frames``) by the rule of docs/method.md "Frame sampling".

    window [s, e] (seconds): s, e = int(s), int(e); clamp at 0; swap if reversed; e = s + 1 if equal.
    f_start = int(s·fps) (0 without window);  f_end = min(int(e·fps), n − 1) (n − 1 without window)
    candidates = range(f_start, f_end + 1, round(fps / candidate_fps))
    |candidates| > F: candidates[linspace(0, |c| − 1, F)];  = F: all;  < F: linspace(f_start, f_end, F)
    """
    if n_video_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {n_video_frames}")
    if not fps > 0:
        raise ValueError(f"average frame rate must be > 0, got {fps}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not candidate_fps > 0:
        raise ValueError(f"candidate_fps must be > 0, got {candidate_fps}")
    last = n_video_frames - 1
    if window is None:
        f_start, f_end = 0, last
    else:
        s, e = max(int(window[0]), 0), max(int(window[1]), 0)
        if s > e:
            s, e = e, s
        if s == e:
            e = s + 1
        f_start, f_end = int(s * fps), min(int(e * fps), last)
        f_start = min(f_start, f_end)  # a window starting past the end keeps the last frame
    stride = max(int(round(fps / candidate_fps)), 1)
    candidates = np.arange(f_start, f_end + 1, stride, dtype=np.int64)
    if len(candidates) > num_frames:
        return candidates[np.linspace(0, len(candidates) - 1, num_frames).astype(np.int64)]
    if len(candidates) == num_frames:
        return candidates
    return np.linspace(f_start, f_end, num_frames).astype(np.int64)


@dataclass
class SampledFrames:
    """F sampled frames of one video, position f holding frame ``indices[f]``."""

    frames: np.ndarray  # [F, H, W, 3] uint8 RGB
    indices: np.ndarray  # [F] int64 frame indices in the decoded stream
    timestamps: np.ndarray  # [F] float64 seconds (index / average fps)
    fps: float  # the decoder's average frame rate
    n_video_frames: int

    @property
    def positions(self) -> np.ndarray:
        """frame_pos 0..F-1: the join key between captions and frames."""
        return np.arange(len(self.indices), dtype=np.int64)


@dataclass(frozen=True)
class FramePlan:
    """Which frames :func:`sample_frames` would decode, without decoding any pixels."""

    indices: np.ndarray  # [F] int64 frame indices
    timestamps: np.ndarray  # [F] float64 seconds (index / average fps)
    fps: float  # the decoder's average frame rate
    n_video_frames: int

    @property
    def positions(self) -> np.ndarray:
        """frame_pos 0..F-1, as in :class:`SampledFrames`."""
        return np.arange(len(self.indices), dtype=np.int64)


def _plan(video, num_frames: int, window, candidate_fps: float) -> FramePlan:
    """The sampling rule on an opened video: n = the decoder's frame count, fps = its average rate."""
    indices = sample_indices(video.n_frames, video.fps, num_frames, window, candidate_fps)
    return FramePlan(indices, indices / video.fps, video.fps, video.n_frames)  # t_f = index_f / fps


def plan_frames(
    path: str | Path,
    num_frames: int,
    window: tuple[float, float] | None = None,
    timeout_s: float | None = 60.0,
    *,
    candidate_fps: float = 1.0,
) -> FramePlan:
    """Indices, timestamps, fps and frame count of the sample, from the container index alone.

    Opening reads the whole packet index (no pixels), so this costs a fraction of a decode. Raises
    ``VideoDecodeError`` like :func:`sample_frames`.
    """
    from shared.decoder import run_with_deadline

    def plan() -> FramePlan:
        with _opened(path) as video:
            return _plan(video, num_frames, window, candidate_fps)

    return run_with_deadline(plan, timeout_s, _name(path))


def sample_frames(
    path: str | Path,
    num_frames: int,
    window: tuple[float, float] | None = None,
    resize_short: int | None = None,
    timeout_s: float | None = 60.0,
    *,
    candidate_fps: float = 1.0,
    num_threads: int = 1,
) -> SampledFrames:
    """Decode the ``num_frames`` frames that :func:`sample_indices` picks from the video at ``path``
    (a local file, or an object-store URI that ``shared.video_source`` copies for the decoder).

    ``window``: (start, end) seconds, or ``None`` for the whole video. ``resize_short``: resize so the
    short side has this many pixels (aspect kept) before returning, so frames are small before they
    cross a process boundary. ``timeout_s``: deadline for opening + decoding + resizing (``None``: no
    deadline; see ``shared.decoder`` for how overruns are handled). ``num_threads``: decord's decoder
    threads (1 suits many parallel workers; 0 lets FFmpeg choose).

    Raises ``VideoDecodeError(path, cause)`` for missing, empty, truncated, non-video and zero-duration
    files, for decode errors and for overrunning the deadline; for a URI also for a missing object or
    bucket, denied access and an unreachable endpoint (``shared.storage_errors``), naming the URI.
    """
    from shared.decoder import resize_short_side, run_with_deadline

    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if resize_short is not None and resize_short < 1:
        raise ValueError(f"resize_short must be a positive number of pixels or None, got {resize_short}")

    def decode() -> SampledFrames:
        with _opened(path, num_threads) as video:
            plan = _plan(video, num_frames, window, candidate_fps)
            frames = video.get_batch(plan.indices)  # [F, H, W, 3] uint8
        if resize_short is not None:
            frames = resize_short_side(frames, resize_short)
        return SampledFrames(frames, plan.indices, plan.timestamps, plan.fps, plan.n_video_frames)

    return run_with_deadline(decode, timeout_s, _name(path))


def _name(path: str | Path) -> str:
    """What errors call the video: the path, or the URI without secrets."""
    from shared.storage_errors import display_uri

    return display_uri(str(path))


@contextlib.contextmanager
def _opened(path: str | Path, num_threads: int = 1) -> Iterator:
    """The video at a local path or a URI (``shared.video_source``), opened by the decoder."""
    from shared.decoder import DecordVideo
    from shared.video_source import local_video

    with local_video(path) as local:
        named = {} if local == str(path) else {"name": _name(path)}  # a copy is named for its URI
        yield DecordVideo(local, num_threads=num_threads, **named)
