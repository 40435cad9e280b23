"""The caption run on Ray: decode (CPU tasks) -> caption (engine actors) -> write by shard (driver).

::

    ray.init(...)                                    # the caller's job (the CLI does it)
    summary = run_captioning(items, CaptionConfig(out=..., model=...), dataset="didemo", split="test")

Flow: the driver resolves the model and prompt, builds the provenance, refuses an incompatible output
directory, and plans the shards still to write (``captioning.plan``). It starts the engine actors (one
per GPU; ``workers`` on CPU) and feeds them calls of ``videos_per_call`` videos, each call's videos
decoded by Ray tasks whose results go straight to the actor. At most ``max_in_flight_per_worker``
calls per actor are outstanding, so decoding runs ahead of captioning by a bounded amount and memory
stays flat on any dataset size. When every video of a shard is back, the driver writes the shard
(``shared.shards.write_shard``: data file, then stats file as completion marker) and, at the end,
the manifest.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace

import pyarrow as pa
import ray
from tqdm import tqdm

from captioning.config import CaptionConfig, EngineSpec
from captioning.engines import choose_backend
from captioning.models import resolve_model
from captioning.plan import ShardWork, check_output_dir, inputs_record, plan_shards, shard_videos
from captioning.prompts import resolve_prompt
from captioning.provenance import run_provenance, template_sha256
from captioning.workers import DecodeOptions, decode_task, engine_actor
from shared.datasets import VideoItem
from shared.shards import STATUS_OK, failed_rows, rows_to_table, write_manifest, write_shard

logger = logging.getLogger(__name__)

VLLM_VIDEOS_PER_CALL = 8  # default videos per call with vLLM: 8 x F frames in one generate()


@dataclass
class RunSummary:
    out: str
    split: str
    backend: str
    backend_reason: str
    videos_total: int = 0  # unique videos of the split
    videos_captioned: int = 0  # videos sent to the engines in this run (ok or failed)
    videos_failed: int = 0  # of those, videos with failed rows
    frames: int = 0  # frames of the videos sent this run (F each)
    shards_total: int = 0
    shards_written: int = 0
    seconds: float = 0.0  # the whole run, engine start-up included
    caption_seconds: float = 0.0  # from the first call sent to the last shard written
    failures: list[str] = field(default_factory=list)  # a few "video_id: error" examples
    video_root: str | None = None  # lets the view command show the frames beside the captions

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"captioned {self.videos_captioned} of {self.videos_total} videos ({self.frames} frames) with "
            f"{self.backend} in {self.seconds:.1f} s: {self.frames_per_s:.2f} frames/s overall, "
            f"{self.frames / max(self.caption_seconds, 1e-9):.2f} frames/s once the engines were up",
            f"failed videos: {self.videos_failed}" + (f" (e.g. {'; '.join(self.failures[:3])})" if self.failures else ""),
            f"shards: {self.shards_written} written, {self.shards_total - self.shards_written} already done, "
            f"{self.shards_total} in split {self.split!r} under {self.out}/data",
            f"view them: python -m pipelines.shards view {self.out} {self.out}-view --split {self.split}"
            + (f" --video-root {self.video_root}" if self.video_root else ""),
        ]
        if self.videos_failed:
            lines.append("re-run only the failed videos: add --retry-failed to the same command")
        return "\n".join(lines)


def engine_layout(cfg: CaptionConfig, backend: str) -> tuple[int, float, float]:
    """(workers, gpus per worker, cpus per worker) for the Ray cluster we are connected to."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    per_gpu = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = cfg.workers or (max(int(gpus // per_gpu), 1) if per_gpu else 1)
    if per_gpu and workers * per_gpu > gpus:
        raise ValueError(f"{workers} workers x {per_gpu:g} GPU need {workers * per_gpu:g} GPUs; the Ray "
                         f"cluster has {gpus:g}")
    num_cpus = 1.0 if per_gpu else float(cfg.cpus_per_worker)
    if workers * num_cpus + 1 > cpus:
        raise ValueError(f"{workers} engine workers x {num_cpus:g} CPU leave no CPU for decoding in a Ray "
                         f"cluster of {cpus:g} CPUs; use fewer --workers or start Ray with more num_cpus")
    if backend == "vllm" and not per_gpu:
        logger.info("vllm without a GPU: using vLLM's CPU build in-process")
    return workers, per_gpu, num_cpus


def run_captioning(items: list[VideoItem], cfg: CaptionConfig, *, dataset: str, split: str,
                   video_source: dict | None = None, progress: bool = True) -> RunSummary:
    """Caption every video of ``items`` into caption shards under ``cfg.out``; see the module docstring."""
    if not ray.is_initialized():
        raise RuntimeError("run_captioning needs a Ray connection: call ray.init(...) first (the CLI does)")
    started = time.perf_counter()
    prompt = resolve_prompt(cfg.prompt)
    resolved = resolve_model(cfg.model, cfg.revision)
    backend, reason = choose_backend(cfg.backend, ray.cluster_resources().get("GPU", 0.0))
    logger.info("backend: %s (%s)", backend, reason)
    workers, per_gpu, num_cpus = engine_layout(cfg, backend)
    if cfg.videos_per_call is None:  # vLLM gains from big batches; transformers batches by batch_size anyway
        cfg = replace(cfg, videos_per_call=VLLM_VIDEOS_PER_CALL if backend == "vllm" else 1)
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if per_gpu else "float32")
    spec = EngineSpec(backend=backend, model=resolved.model, prompt_text=prompt.text, sampling=cfg.sampling,
                      revision=cfg.revision, dtype=dtype, device="auto", max_model_len=cfg.max_model_len,
                      batch_size=cfg.batch_size, threads=0 if per_gpu else cfg.cpus_per_worker,
                      engine_kwargs=dict(cfg.engine_kwargs))
    shards = shard_videos(items, cfg.shard_size)
    provenance = run_provenance(
        cfg, spec, resolved, prompt, dataset=dataset, video_source=video_source or {}, dtype=dtype,
        shard_inputs=inputs_record(split, shards, cfg.shard_size),
        template_sha=template_sha256(resolved, cfg.revision),
    )
    check_output_dir(cfg.out, split, provenance)
    work = plan_shards(cfg.out, split, shards, retry_failed=cfg.retry_failed)
    summary = RunSummary(cfg.out, split, backend, reason, videos_total=sum(len(s) for s in shards),
                         shards_total=len(shards), video_root=(video_source or {}).get("video_root"))
    if work:
        actors = [engine_actor(spec, cfg.frames, num_cpus=num_cpus, num_gpus=per_gpu) for _ in range(workers)]
        try:
            _check_engines(actors, provenance)
            _Feeder(cfg, dataset, split, provenance, actors, summary).run(work, progress)
        finally:
            for actor in actors:
                ray.kill(actor)
    if shards:
        write_manifest(cfg.out)
    summary.seconds = time.perf_counter() - started
    return summary


def _check_engines(actors, provenance: dict) -> None:
    """Engines must have loaded what the driver recorded (same chat template, same dtype)."""
    for engine in ray.get([a.provenance.remote() for a in actors]):
        for key in ("chat_template_sha256", "dtype"):
            if engine.get(key) != provenance.get(key):
                raise RuntimeError(f"engine loaded {key}={engine.get(key)!r} but the run records "
                                   f"{provenance.get(key)!r}; check that every node has the same model files")


class _Feeder:
    """Keeps every engine actor fed with a bounded number of calls; collects rows; writes shards."""

    def __init__(self, cfg: CaptionConfig, dataset: str, split: str, provenance: dict, actors, summary):
        self.cfg, self.dataset, self.split, self.provenance = cfg, dataset, split, provenance
        self.actors, self.summary = actors, summary
        self.options = DecodeOptions(cfg.frames, cfg.image_size, cfg.decode_timeout_s, cfg.candidate_fps)
        self.in_flight: dict = {}  # call ref -> (actor index, [(shard, video)])
        self.load = [0] * len(actors)
        self.rows: dict[int, list] = {}  # shard index -> collected rows
        self.pending: dict[int, int] = {}  # shard index -> videos not back yet

    def run(self, work: list[ShardWork], progress: bool) -> None:
        queue = deque((shard, video) for shard in work for video in shard.todo)
        for shard in work:
            self.rows[shard.index] = []
            self.pending[shard.index] = len(shard.todo)
        by_index = {shard.index: shard for shard in work}
        bar = tqdm(total=len(queue) * self.cfg.frames, unit="frame", desc=f"caption {self.split}",
                   disable=not progress, dynamic_ncols=True)
        started = time.perf_counter()
        with bar:
            while queue or self.in_flight:
                self._submit(queue)
                done, _ = ray.wait(list(self.in_flight), num_returns=1)
                actor_index, batch = self.in_flight.pop(done[0])
                self.load[actor_index] -= 1
                results = self._result(done[0], batch, queue)
                for (shard, video), rows in zip(batch, results or (), strict=results is not None):
                    self._collect(shard.index, video, rows)
                    bar.update(len(rows))
                    if self.pending[shard.index] == 0:
                        self._write(by_index[shard.index])
                bar.set_postfix(videos=self.summary.videos_captioned, failed=self.summary.videos_failed)
        self.summary.caption_seconds = time.perf_counter() - started

    def _submit(self, queue: deque) -> None:
        """Fill every actor up to ``max_in_flight_per_worker`` calls (least loaded first)."""
        while queue:
            actor_index = min(range(len(self.actors)), key=self.load.__getitem__)
            if self.load[actor_index] >= self.cfg.max_in_flight_per_worker:
                return
            batch = [queue.popleft() for _ in range(min(self.cfg.videos_per_call, len(queue)))]
            decoded = [decode_task.remote(v.video_id, str(v.path), v.window, self.options) for _, v in batch]
            call = self.actors[actor_index].caption_videos.remote(self.dataset, self.split, *decoded)
            self.in_flight[call] = (actor_index, batch)
            self.load[actor_index] += 1

    def _result(self, call, batch: list, queue: deque) -> list:
        """The call's rows; if a decode task died (crashed decoder process), the video gets failed rows
        (a call of several videos is first split into single-video calls). Engine errors stop the run."""
        try:
            return ray.get(call)
        except ray.exceptions.RayActorError:
            raise
        except ray.exceptions.RayError as err:
            if isinstance(err, ray.exceptions.RayTaskError) and "caption_videos" in str(err.function_name):
                raise
            if len(batch) > 1:
                queue.extendleft(reversed(batch))
                self.cfg = replace(self.cfg, videos_per_call=1)
                return None  # requeued
            ((_, video),) = batch
            logger.warning("%s: decode task failed: %s", video.video_id, err)
            return [failed_rows(self.dataset, self.split, video.video_id, self.cfg.frames,
                                f"decode: {type(err).__name__}: {str(err)[:500]}")]

    def _collect(self, shard_index: int, video: VideoItem, rows: list) -> None:
        self.rows[shard_index].extend(rows)
        self.pending[shard_index] -= 1
        self.summary.videos_captioned += 1
        self.summary.frames += len(rows)
        failed = [r for r in rows if r.status != STATUS_OK]
        if failed:
            self.summary.videos_failed += 1
            if len(self.summary.failures) < 10:
                self.summary.failures.append(f"{video.video_id}: {failed[0].error}")

    def _write(self, shard: ShardWork) -> None:
        table = rows_to_table(self.rows.pop(shard.index))
        if shard.kept_rows is not None:  # --retry-failed: the shard's other videos keep their rows
            table = pa.concat_tables([rows_to_table(shard.kept_rows), table])
        write_shard(self.cfg.out, self.split, shard.index, shard.num_shards, table, self.provenance)
        self.summary.shards_written += 1

