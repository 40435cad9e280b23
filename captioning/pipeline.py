"""The caption run on Ray: decode (CPU tasks) -> caption (engine actors) -> write by shard (driver).

::

    ray.init(...)                                    # the caller's job (the CLI does it)
    summary = run_captioning(items, CaptionConfig(out=..., model=...), dataset="didemo", split="test")

Flow: the driver resolves the model (its revision, without downloading weights) and prompt, builds the
provenance, refuses an incompatible output directory, and plans the shards still to write
(``captioning.plan``). It starts the engine actors (one per GPU, or per ``gpus_per_worker`` GPUs;
``workers`` on CPU) and, while they load, starts decoding the first videos. Once an engine reports ready
it is fed calls of ``videos_per_call`` videos, each call's videos decoded by one Ray task whose result goes
straight to the actor. At most ``max_in_flight_per_worker`` calls per actor are outstanding, so decoding
runs ahead of captioning by a bounded amount and memory stays flat on any dataset size. When every video
of a shard is back, the driver writes the shard (``shared.shards.write_shard``: data file, then stats file
as completion marker) and, at the end, the manifest.

Failures of parts, decided by type (``captioning.errors``), never by message text:

- an engine actor that dies (process killed, out of memory, node lost) is replaced by a new one; the
  calls it had in flight go back to the queue, their videos one per call, each run *alone* on an engine
  with nothing else in flight. A video whose lone call kills an engine ``max_engine_deaths_per_video``
  times is a poison video: it gets failed rows and the run goes on. ``RunSummary.engine_restarts``
  counts replacements. Rows are collected per video exactly once, so nothing is lost or written twice.
- a decode task whose process dies, or whose result was lost with its node, sends its videos back the
  same way; a video whose lone decode keeps dying gets failed rows. Only that call is split: the next
  calls are batched as usual.
- an engine that cannot start reports its cause once, in one line (``EngineStartError``): with no engine
  running the run stops before any video is captioned and writes no failure rows.
- an engine that fails on several videos in a row (``EngineBrokenError``) stops the run; finished shards
  stay and a re-run resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray

from captioning.config import CaptionConfig, EngineSpec
from captioning.engine_pool import EnginePool
from captioning.engines import choose_backend
from captioning.feeder import Feeder
from captioning.frames_out import finish_frames, frame_saver
from captioning.models import model_context_length, resolve_model
from captioning.plan import check_output_dir, inputs_record, plan_shards, shard_videos
from captioning.prompts import resolve_prompt
from captioning.provenance import run_provenance, template_sha256
from shared.datasets import VideoItem
from shared.shards import write_manifest

logger = logging.getLogger(__name__)

VLLM_VIDEOS_PER_CALL = 8  # default videos per call with vLLM: 8 x F frames in one generate()


def process_started_at() -> float:
    """Wall-clock time this process started (Linux: from /proc), else now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        import os

        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclass
class RunSummary:
    out: str
    split: str
    backend: str
    backend_reason: str
    videos_total: int = 0  # unique videos of the split
    videos_captioned: int = 0  # videos captioned in this run (every frame "ok")
    videos_failed: int = 0  # videos of this run that got failed rows
    frames: int = 0  # captioned frames of this run (failed videos' frames not counted)
    shards_total: int = 0
    shards_written: int = 0
    engine_restarts: int = 0  # engine actors replaced after they died
    engine_busy_s: float = 0.0  # seconds the engines spent computing, summed over engines
    requeued_videos: int = 0  # videos sent again after their engine or decode process died
    seconds: float = 0.0  # the whole run, engine start-up included
    caption_seconds: float = 0.0  # from the first engine ready to the last shard written
    first_caption_s: float | None = None  # from the start of the command to the first call answered
    engines_ready_s: float | None = None  # from the start of the command to the first engine ready
    failures: list[str] = field(default_factory=list)  # a few "video_id: error" examples
    video_root: str | None = None  # lets the view command show the frames beside the captions

    @property
    def frames_per_s(self) -> float:
        """Captioned frames per second of the whole run."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"captioned {self.videos_captioned} videos ({self.frames} frames) and {self.videos_failed} failed, "
            f"of {self.videos_total} in the split, with {self.backend} in {self.seconds:.1f} s: "
            f"{self.frames_per_s:.2f} captioned frames/s overall, "
            f"{self.frames / max(self.caption_seconds, 1e-9):.2f} once the engines were up",
        ]
        if self.first_caption_s is not None and self.engines_ready_s is not None:
            lines.append(
                f"start-up: engines ready {self.engines_ready_s:.1f} s, first frame captioned "
                f"{self.first_caption_s:.1f} s after the command started"
            )
        if self.engine_busy_s and self.caption_seconds:
            lines.append(f"engines computing {self.engine_busy_s:.1f} s in total while captioning")
        if self.engine_restarts or self.requeued_videos:
            lines.append(
                f"engine restarts: {self.engine_restarts}; videos sent again after a lost engine or "
                f"decode process: {self.requeued_videos}"
            )
        lines += [
            f"failed videos: {self.videos_failed}"
            + (f" (e.g. {'; '.join(self.failures[:3])})" if self.failures else ""),
            f"shards: {self.shards_written} written, {self.shards_total - self.shards_written} already done, "
            f"{self.shards_total} in split {self.split!r} under {self.out}/data",
            f"view them: python -m pipelines.shards view {self.out} {self.out}-view --split {self.split}"
            + (f" --video-root {self.video_root}" if self.video_root else ""),
        ]
        if self.videos_failed:
            lines.append("re-run only the failed videos: add --retry-failed to the same command")
        return "\n".join(lines)


def engine_layout(cfg: CaptionConfig, backend: str) -> tuple[int, float, float]:
    """(engines, GPUs per engine, CPUs per engine) for the Ray cluster we are connected to."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    per_gpu = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = cfg.workers or (max(int(gpus // per_gpu), 1) if per_gpu else 1)
    if per_gpu and workers * per_gpu > gpus:
        raise ValueError(
            f"{workers} engines x {per_gpu:g} GPU need {workers * per_gpu:g} GPUs; the Ray "
            f"cluster has {gpus:g}"
        )
    num_cpus = 1.0 if per_gpu else float(cfg.cpus_per_worker)
    if workers * num_cpus + 1 > cpus:
        raise ValueError(
            f"{workers} engines x {num_cpus:g} CPU leave no CPU for decoding in a Ray "
            f"cluster of {cpus:g} CPUs; use fewer --engines or start Ray with more num_cpus"
        )
    if backend == "vllm" and not per_gpu:
        logger.info("vllm without a GPU: using vLLM's CPU build in-process")
    return workers, per_gpu, num_cpus


def engine_spec(
    cfg: CaptionConfig, backend: str, resolved, prompt_text: str, gpus_per_engine: float
) -> EngineSpec:
    """What every engine actor builds: the resolved model and revision, and settings that follow the model."""
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if gpus_per_engine else "float32")
    max_model_len = cfg.max_model_len or model_context_length(resolved, cfg.sampling.max_tokens, prompt_text)
    engine_kwargs = dict(cfg.engine_kwargs)
    if backend == "vllm" and gpus_per_engine > 1:  # tensor parallelism over the actor's GPUs
        engine_kwargs.setdefault("tensor_parallel_size", int(gpus_per_engine))
    return EngineSpec(
        backend=backend,
        model=resolved.model,
        prompt_text=prompt_text,
        sampling=cfg.sampling,
        revision=resolved.load_revision,
        dtype=dtype,
        device="auto",
        max_model_len=max_model_len,
        batch_size=cfg.batch_size,
        threads=0 if gpus_per_engine else cfg.cpus_per_worker,
        engine_kwargs=engine_kwargs,
        feed=cfg.vllm_feed,
    )


def shards_provenance(
    cfg: CaptionConfig, spec: EngineSpec, resolved, prompt, shards, *, dataset: str, split: str, video_source
) -> dict:
    """The provenance every shard of the run records: the settings, the engine's, and the shard inputs."""
    return run_provenance(
        cfg,
        spec,
        resolved,
        prompt,
        dataset=dataset,
        video_source=video_source or {},
        dtype=spec.dtype,
        shard_inputs=inputs_record(split, shards, cfg.shard_size),
        template_sha=template_sha256(resolved, resolved.load_revision),
    )


def run_captioning(
    items: list[VideoItem],
    cfg: CaptionConfig,
    *,
    dataset: str,
    split: str,
    video_source: dict | None = None,
    progress: bool = True,
    plan=None,
) -> RunSummary:
    """Caption every video of ``items`` into caption shards under ``cfg.out``; see the module docstring.

    ``plan``: the :class:`captioning.plan.RunPlan` of :func:`captioning.plan.prepare_run` for the same
    arguments (the CLI makes it before starting Ray); its shard work is used instead of planning again."""
    if not ray.is_initialized():
        raise RuntimeError("run_captioning needs a Ray connection: call ray.init(...) first (the CLI does)")
    started = time.perf_counter()
    command_started = process_started_at()
    prompt = resolve_prompt(cfg.prompt)
    resolved = resolve_model(cfg.model, cfg.revision)
    backend, reason = choose_backend(cfg.backend, ray.cluster_resources().get("GPU", 0.0))
    logger.info("backend: %s (%s)", backend, reason)
    workers, per_gpu, num_cpus = engine_layout(cfg, backend)
    if cfg.videos_per_call is None:  # vLLM gains from big batches; transformers batches by batch_size anyway
        cfg = replace(cfg, videos_per_call=VLLM_VIDEOS_PER_CALL if backend == "vllm" else 1)
    spec = engine_spec(cfg, backend, resolved, prompt.text, per_gpu)
    shards = shard_videos(items, cfg.shard_size)
    provenance = shards_provenance(
        cfg, spec, resolved, prompt, shards, dataset=dataset, split=split, video_source=video_source
    )
    check_output_dir(cfg.out, split, provenance)
    work = (
        plan.work if plan is not None else plan_shards(cfg.out, split, shards, retry_failed=cfg.retry_failed)
    )
    summary = RunSummary(
        cfg.out,
        split,
        backend,
        reason,
        videos_total=sum(len(s) for s in shards),
        shards_total=len(shards),
        video_root=(video_source or {}).get("video_root"),
    )
    if work:
        continuous = backend == "vllm" and spec.feed == "continuous"  # calls overlap in one running batch
        concurrency = cfg.max_in_flight_per_worker if continuous else 1
        pool = EnginePool(
            spec,
            cfg.frames,
            workers,
            num_cpus=num_cpus,
            num_gpus=per_gpu,
            concurrency=concurrency,
            expected=provenance,
            max_restarts=cfg.max_engine_restarts,
        )
        feeder = Feeder(
            cfg,
            dataset,
            split,
            provenance,
            pool,
            summary,
            frames=frame_saver(cfg, dataset, split, video_source),
        )
        try:
            feeder.run(work, progress)
            summary.engine_busy_s = pool.busy_seconds()
        finally:
            pool.shutdown()
        if feeder.first_answer is not None:
            summary.first_caption_s = feeder.first_answer - command_started
        if pool.first_ready is not None:
            summary.engines_ready_s = pool.first_ready - command_started
    if shards:
        write_manifest(cfg.out)
    if cfg.save_frames and shards:
        finish_frames(cfg, split)
    summary.seconds = time.perf_counter() - started
    return summary
