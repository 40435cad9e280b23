"""The two kinds of Ray work: decoding a video (a CPU task) and captioning videos (an engine actor).

Neither raises for a bad video: decoding returns the error, and the actor turns errors into F failed
rows (``status="failed"`` with the cause). A decode task's frames are resized before they are
returned, so only small arrays cross process boundaries. Decode tasks run in worker processes that Ray
replaces after :data:`DECODE_MAX_CALLS` tasks (a task decodes the videos of one engine call), so a decode abandoned at its deadline (a thread that
cannot be killed, see ``shared.decoder``) does not stay behind for the rest of the run.

An engine actor never raises for its start-up either: :meth:`EngineWorker.ready` reports it, as
:class:`captioning.errors.EngineStartError` with the cause in one line, or as the engine's provenance
and start-up time. An engine that fails on :data:`MAX_CONSECUTIVE_ENGINE_FAILURES` videos in a row is
considered broken and raises :class:`captioning.errors.EngineBrokenError`, which stops the run
(finished shards stay; a re-run resumes). The driver (``captioning.pipeline``) handles actors that die.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from captioning.config import EngineSpec
from captioning.errors import EngineBrokenError, EngineStartError, one_line
from captioning.models import local_revision
from shared.frames import VideoDecodeError, sample_frames
from shared.shards import CaptionRow, failed_rows, make_rows, rows_to_table

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_ENGINE_FAILURES = 5
DECODE_MAX_CALLS = 32  # decode tasks (calls) per decode worker process before Ray starts a fresh one


@dataclass
class Decoded:
    video_id: str
    frames: np.ndarray | None  # [F, H, W, 3] uint8, None when decoding failed
    indices: np.ndarray | None  # [F] frame indices
    timestamps: np.ndarray | None  # [F] seconds
    error: str | None = None


@dataclass(frozen=True)
class DecodeOptions:
    num_frames: int
    resize_short: int | None
    timeout_s: float
    candidate_fps: float = 1.0


def decode_video(video_id: str, path: str, window, options: DecodeOptions) -> Decoded:
    """The sampled frames of one video, or its decode error (never raises for a bad video)."""
    try:
        sampled = sample_frames(
            path,
            options.num_frames,
            window=window,
            resize_short=options.resize_short,
            timeout_s=options.timeout_s,
            candidate_fps=options.candidate_fps,
        )
    except VideoDecodeError as err:
        return Decoded(
            video_id, None, None, None, f"decode: {err.cause}: {err.path}"
        )  # names the file looked for
    except Exception as err:  # noqa: BLE001  (any decoder failure is this video's failure)
        return Decoded(video_id, None, None, None, f"decode: {type(err).__name__}: {err}")
    return Decoded(video_id, sampled.frames, sampled.indices, sampled.timestamps)


def decode_videos(videos: list[tuple[str, str, object]], options: DecodeOptions) -> list[Decoded]:
    """:func:`decode_video` for each ``(video_id, path, window)`` of one engine call, in order: one Ray
    task per call, not per video, so the driver submits and tracks ``videos_per_call`` times fewer tasks."""
    return [decode_video(video_id, path, window, options) for video_id, path, window in videos]


decode_task = ray.remote(num_cpus=1, max_retries=1, max_calls=DECODE_MAX_CALLS)(decode_videos)


class EngineWorker:
    """Holds one engine for its life; captions whole videos into caption rows."""

    def __init__(self, spec: EngineSpec, num_frames: int):
        from captioning.engines import make_engine

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        started = time.perf_counter()
        self.engine, self.start_error = None, None
        try:
            self.engine = make_engine(spec)
            self.engine.caption([np.full((64, 64, 3), 128, np.uint8)])  # warm-up: a broken engine fails here
            self.engine.busy_seconds = 0.0  # count captioning only
        except Exception as err:  # noqa: BLE001  (reported by ready(), in one line, as EngineStartError)
            logger.debug("the %s engine could not start", spec.backend, exc_info=True)
            self.start_error = f"the {spec.backend} engine for {spec.model} could not start: {one_line(err)}"
        self.start_seconds = time.perf_counter() - started
        self.num_frames = num_frames  # F rows for a video that could not be decoded
        self.consecutive_failures = 0

    def ready(self) -> dict:
        """Where this engine runs and what it loaded; raises :class:`EngineStartError` if it did not start."""
        if self.start_error is not None:
            raise EngineStartError(self.start_error)
        spec = self.engine.spec
        revision = local_revision(spec.model) if Path(spec.model).is_dir() else spec.revision
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "start_seconds": self.start_seconds,
            "provenance": self.engine.provenance(),
            "model_revision": revision,
        }

    def stats(self) -> dict:
        """The engine's busy time so far (seconds spent computing captions)."""
        return {"busy_seconds": getattr(self.engine, "busy_seconds", 0.0)}

    def caption_videos(
        self, dataset: str, split: str, *decoded: Decoded | list[Decoded]
    ) -> list[list[CaptionRow]]:
        """F rows per video, in input order (an argument is one video's :class:`Decoded`, or the list
        :func:`decode_videos` gave for several). All frames of the call go to the engine as one batch;
        if that batch fails, each video of this call is retried alone so one bad video cannot fail the
        others (the next call is batched again)."""
        if self.engine is None:
            raise EngineStartError(self.start_error)
        decoded = [d for arg in decoded for d in (arg if isinstance(arg, list) else [arg])]
        ok = [d for d in decoded if d.error is None]
        results: dict[str, list] = {}
        if len(ok) > 1:
            try:
                flat = self.engine.caption([frame for d in ok for frame in d.frames])
                self.consecutive_failures = 0
                for k, d in enumerate(ok):
                    results[d.video_id] = flat[k * len(d.frames) : (k + 1) * len(d.frames)]
            except Exception as err:  # noqa: BLE001
                logger.warning("a batch of %d videos failed (%s); captioning them one by one", len(ok), err)
        return [self._rows(dataset, split, d, results.get(d.video_id)) for d in decoded]

    def caption_call(
        self, dataset: str, split: str, *decoded: Decoded | list[Decoded]
    ) -> tuple[pa.Table, list[int]]:
        """:meth:`caption_videos` for the driver: the rows of every video of the call in one Arrow table
        (video after video, in input order) and each video's row count, so that no Python object per
        row is pickled here and unpickled and converted in the driver."""
        per_video = self.caption_videos(dataset, split, *decoded)
        return rows_to_table([row for rows in per_video for row in rows]), [len(rows) for rows in per_video]

    def _rows(self, dataset: str, split: str, d: Decoded, results) -> list[CaptionRow]:
        if d.error is not None:
            return failed_rows(dataset, split, d.video_id, self.num_frames, d.error)
        if results is None:
            try:
                results = self.engine.caption(list(d.frames))
            except Exception as err:  # noqa: BLE001  (counted; a run of them means a broken engine)
                self._engine_failed(d.video_id, err)
                return failed_rows(
                    dataset,
                    split,
                    d.video_id,
                    len(d.indices),
                    f"caption: {one_line(err, 500)}",
                    d.indices,
                    d.timestamps,
                )
            self.consecutive_failures = 0
        return make_rows(
            dataset,
            split,
            d.video_id,
            d.indices,
            d.timestamps,
            [r.text for r in results],
            [r.finish_reason for r in results],
            [r.n_tokens for r in results],
        )

    def _engine_failed(self, video_id: str, err: Exception) -> None:
        self.consecutive_failures += 1
        logger.warning("%s: captioning failed: %s", video_id, err)
        if self.consecutive_failures >= MAX_CONSECUTIVE_ENGINE_FAILURES:
            raise EngineBrokenError(
                f"the {self.engine.name} engine failed on {self.consecutive_failures} videos "
                f"in a row (last: {video_id}: {one_line(err)}); stopping"
            )


def engine_actor(
    spec: EngineSpec,
    num_frames: int,
    *,
    num_cpus: float,
    num_gpus: float,
    concurrency: int = 1,
):
    """A Ray actor handle running :class:`EngineWorker` with the given resources.

    ``concurrency`` > 1 lets calls overlap inside the actor (the vLLM engine batches their frames
    together). Ray does not restart the actor (``max_restarts=0``): the driver replaces a dead engine
    and gives its calls to the others, so that it knows exactly which videos were in flight.
    """
    actor_cls = ray.remote(EngineWorker)
    options = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_restarts": 0,
        "max_concurrency": concurrency,
        "scheduling_strategy": "SPREAD",  # one engine per node where possible: a lost node loses fewer
    }
    return actor_cls.options(**options).remote(spec, num_frames)
