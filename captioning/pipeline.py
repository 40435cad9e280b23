"""The caption run on Ray: decode (CPU tasks) -> caption (engine actors) -> write by shard (driver).

::

    ray.init(...)                                    # the caller's job (the CLI does it)
    summary = run_captioning(items, CaptionConfig(out=..., model=...), dataset="didemo", split="test")

Flow: the driver resolves the model (its revision, without downloading weights) and prompt, builds the
provenance, refuses an incompatible output directory, and plans the shards still to write
(``captioning.plan``). It starts the engine actors (one per GPU, or per ``gpus_per_worker`` GPUs;
``workers`` on CPU) and, while they load, starts decoding the first videos. Once an engine reports ready
it is fed calls of ``videos_per_call`` videos, each call's videos decoded by Ray tasks whose results go
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
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import ray
from tqdm import tqdm

from captioning.config import CaptionConfig, EngineSpec
from captioning.engines import choose_backend
from captioning.errors import EngineBrokenError, EnginesLostError, EngineStartError, is_engine_death, one_line
from captioning.frames_out import finish_frames, frame_saver
from captioning.models import model_context_length, resolve_model
from captioning.plan import ShardWork, check_output_dir, inputs_record, plan_shards, shard_videos
from captioning.prompts import resolve_prompt
from captioning.provenance import run_provenance, template_sha256
from captioning.workers import DecodeOptions, decode_task, engine_actor
from shared.datasets import VideoItem
from shared.shards import STATUS_OK, failed_rows, rows_to_table, write_manifest, write_shard

logger = logging.getLogger(__name__)

MAX_START_DEATHS = 3  # an engine slot whose actor dies this many times in a row while loading is given up
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
    provenance = run_provenance(
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
        feeder = _Feeder(
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


@dataclass
class _Slot:
    """One engine position: the actor now holding it, and how many times it was replaced."""

    actor: object
    ready: object  # ObjectRef of actor.ready(), None once answered
    epoch: int = 0
    load: int = 0  # calls in flight
    exclusive: bool = False  # running a lone suspect video: no other call goes here
    up: bool = False
    start_deaths: int = 0  # actors of this slot that died in a row before they were ready
    gone: bool = False  # could not start: no more calls, no replacement


class EnginePool:
    """The engine actors of a run; replaces an actor that died, drops one that cannot start."""

    def __init__(
        self,
        spec: EngineSpec,
        frames: int,
        count: int,
        *,
        num_cpus: float,
        num_gpus: float,
        concurrency: int = 1,
        expected: dict | None = None,
        max_restarts: int = 50,
    ):
        self.spec, self.frames, self.expected, self.max_restarts = spec, frames, expected or {}, max_restarts
        self.options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "concurrency": concurrency}
        self.slots = [self._new_slot() for _ in range(count)]
        self.restarts = 0
        self.start_errors: list[str] = []
        self.first_ready: float | None = None  # wall-clock time the first engine was ready

    def _new_slot(self, epoch: int = 0) -> _Slot:
        actor = engine_actor(self.spec, self.frames, **self.options)
        return _Slot(actor, actor.ready.remote(), epoch)

    def engine_ready(self, index: int, ref) -> None:
        """Record the answer of ``ready()`` for slot ``index``; raises if no engine is left at all."""
        slot = self.slots[index]
        slot.ready = None
        try:
            info = ray.get(ref)
        except EngineStartError as err:
            self.cannot_start(index, str(getattr(err, "cause", err)))
            return
        except ray.exceptions.RayError as err:
            if not is_engine_death(err):
                raise
            slot.start_deaths += 1
            if slot.start_deaths >= MAX_START_DEATHS:  # it dies each time it loads (e.g. out of memory)
                self.cannot_start(
                    index,
                    f"the engine actor died while starting, {slot.start_deaths} times in a "
                    f"row: {one_line(err)}",
                )
            else:  # killed or its node lost while loading: start another
                self.lost(index, slot.epoch, err)
            return
        self.check_loaded(index, info)
        slot.up, slot.start_deaths = True, 0
        if self.first_ready is None:
            self.first_ready = time.time()
        logger.info("engine %d ready in %.1f s (pid %s)", index, info["start_seconds"], info["pid"])

    def check_loaded(self, index: int, info: dict) -> None:
        """Engines must load what the driver recorded (same chat template, dtype and model revision)."""
        loaded = {**info["provenance"], "model_revision": info["model_revision"]}
        for key in ("chat_template_sha256", "dtype", "model_revision"):
            if key in self.expected and loaded.get(key) != self.expected[key]:
                self.cannot_start(
                    index,
                    f"engine {index} (pid {info['pid']}) loaded {key}={loaded.get(key)!r} "
                    f"but the run records {self.expected[key]!r}; check that every node "
                    "has the same model files",
                )
                raise EngineStartError(self.start_errors[-1])

    def cannot_start(self, index: int, cause: str) -> None:
        """Slot ``index`` gets no engine; raises :class:`EngineStartError` when no slot has one."""
        slot = self.slots[index]
        slot.gone, slot.up = True, False
        ray.kill(slot.actor)
        self.start_errors.append(cause)
        if not all(
            s.gone for s in self.slots
        ):  # before any engine is up, the others will likely say the same
            logger.log(
                logging.WARNING if self.first_ready else logging.DEBUG,
                "engine %d given up (the others go on): %s",
                index,
                cause,
            )
        else:  # reported once, by the error
            if self.restarts:
                raise EnginesLostError(f"no caption engine is left: {cause}")
            raise EngineStartError(cause)

    def lost(self, index: int, epoch: int, err: BaseException) -> None:
        """The actor of slot ``index`` died during a call submitted in ``epoch``: replace it once."""
        slot = self.slots[index]
        if slot.gone or slot.epoch != epoch:
            return  # already replaced (several calls fail with one death)
        ray.kill(slot.actor)
        if self.restarts >= self.max_restarts:
            self.cannot_start(
                index,
                f"engine {index} died ({one_line(err)}) after {self.restarts} engine "
                "restarts in this run; not starting another",
            )
            return
        logger.warning("engine %d died (%s); starting a new one", index, one_line(err))
        self.slots[index] = self._new_slot(epoch + 1)
        self.slots[index].start_deaths = slot.start_deaths
        self.restarts += 1

    def busy_seconds(self) -> float:
        """Seconds the running engines spent computing captions (engines replaced mid-run not counted)."""
        up = [slot.actor.stats.remote() for slot in self.slots if slot.up]
        try:
            return sum(stats["busy_seconds"] for stats in ray.get(up, timeout=30))
        except ray.exceptions.RayError:  # an engine lost at the very end: the figure is only informative
            return 0.0

    def pending_ready(self) -> dict:
        return {slot.ready: i for i, slot in enumerate(self.slots) if slot.ready is not None}

    def shutdown(self) -> None:
        for slot in self.slots:
            ray.kill(slot.actor)


@dataclass
class _Call:
    videos: list  # [(ShardWork, VideoItem)]
    slot: int = -1
    epoch: int = 0
    decoded: list = field(default_factory=list)  # decode task refs, one per video
    exclusive: bool = False


class _Feeder:
    """Keeps every engine actor fed with a bounded number of calls; collects rows; writes shards."""

    def __init__(
        self,
        cfg: CaptionConfig,
        dataset: str,
        split: str,
        provenance: dict,
        pool: EnginePool,
        summary,
        frames=None,
    ):
        self.cfg, self.dataset, self.split, self.provenance = cfg, dataset, split, provenance
        self.frames = frames  # captioning.frames_out.FrameSaver with --save-frames
        self.pool, self.summary = pool, summary
        self.options = DecodeOptions(cfg.frames, cfg.image_size, cfg.decode_timeout_s, cfg.candidate_fps)
        self.in_flight: dict = {}  # call ref -> _Call
        self.prepared: deque[_Call] = deque()  # decoding already started, no engine chosen yet
        self.rows: dict[int, list] = {}  # shard index -> collected rows
        self.pending: dict[int, int] = {}  # shard index -> videos not back yet
        self.done: set[tuple[int, str]] = set()  # (shard, video) collected: each exactly once
        self.strikes: Counter = Counter()  # video -> lone calls it was in when an engine/decoder died
        self.suspects: deque = deque()  # (shard, video) to run alone on an otherwise idle engine
        self.first_answer: float | None = None  # wall-clock time of the first call answered

    def run(self, work: list[ShardWork], progress: bool) -> None:
        queue = deque((shard, video) for shard in work for video in shard.todo)
        for shard in work:
            self.rows[shard.index] = []
            self.pending[shard.index] = len(shard.todo)
        self.by_index = {shard.index: shard for shard in work}
        bar = tqdm(
            total=len(queue) * self.cfg.frames,
            unit="frame",
            desc=f"caption {self.split}",
            disable=not progress,
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        with bar:
            while queue or self.suspects or self.in_flight or self.prepared:
                self._submit(queue)
                ready = self.pool.pending_ready()
                waiting = list(self.in_flight) + list(ready)
                if not waiting:
                    raise EnginesLostError(
                        "no caption engine can take work (all could not start or are gone)"
                    )
                done, _ = ray.wait(waiting, num_returns=1)
                if done[0] in ready:
                    self.pool.engine_ready(ready[done[0]], done[0])
                    continue
                call = self.in_flight.pop(done[0])
                slot = self.pool.slots[call.slot]
                if slot.epoch == call.epoch:
                    slot.load -= 1
                    slot.exclusive = False
                for (shard, video), rows in self._result(done[0], call, queue):
                    self._collect(shard.index, video, rows)
                    bar.update(self.cfg.frames)
                    if self.pending[shard.index] == 0:
                        self._write(self.by_index[shard.index])
                bar.set_postfix(
                    captioned=self.summary.videos_captioned,
                    failed=self.summary.videos_failed,
                    restarts=self.pool.restarts,
                )
        up_since = (
            self.pool.first_ready - time.time() + time.perf_counter() if self.pool.first_ready else started
        )
        self.summary.caption_seconds = time.perf_counter() - max(started, up_since)
        self.summary.engine_restarts = self.pool.restarts

    def _decode(self, videos: list, exclusive: bool = False) -> _Call:
        refs = [
            self.frames.decode(v, self.options)
            if self.frames
            else decode_task.remote(v.video_id, str(v.path), v.window, self.options)
            for _, v in videos
        ]
        return _Call(list(videos), decoded=refs, exclusive=exclusive)

    def _submit(self, queue: deque) -> None:
        """Suspects alone on idle engines first (while any wait, the least loaded engine gets no new call so
        that it drains); then fill every engine up to ``max_in_flight_per_worker`` calls (least loaded
        first). Before any engine is up, decoding of the first calls starts anyway."""
        slots = self.pool.slots
        usable = [i for i, s in enumerate(slots) if s.up and not s.gone]
        for i in usable:
            if self.suspects and slots[i].load == 0:
                self._send(self._decode([self.suspects.popleft()], exclusive=True), i)
        draining = [i for i in usable if not slots[i].exclusive]
        draining = {min(draining, key=lambda i: slots[i].load)} if self.suspects and draining else set()
        limit = self.cfg.max_in_flight_per_worker
        while True:
            open_slots = [
                i for i in usable if not slots[i].exclusive and slots[i].load < limit and i not in draining
            ]
            if not open_slots or not (self.prepared or queue):
                break
            call = self.prepared.popleft() if self.prepared else self._decode(self._batch(queue))
            self._send(call, min(open_slots, key=lambda i: slots[i].load))
        ahead = limit * sum(not s.gone for s in slots)  # decode ahead while the engines load
        while queue and not usable and len(self.prepared) < ahead:
            self.prepared.append(self._decode(self._batch(queue)))

    def _batch(self, queue: deque) -> list:
        return [queue.popleft() for _ in range(min(self.cfg.videos_per_call, len(queue)))]

    def _send(self, call: _Call, index: int) -> None:
        slot = self.pool.slots[index]
        call.slot, call.epoch = index, slot.epoch
        ref = slot.actor.caption_videos.remote(self.dataset, self.split, *call.decoded)
        self.in_flight[ref] = call
        slot.load += 1
        slot.exclusive = call.exclusive

    def _result(self, ref, call: _Call, queue: deque) -> list:
        """[((shard, video), rows)] of the call; [] when its videos went back to the queue."""
        try:
            results = ray.get(ref)
        except EngineBrokenError as err:
            raise EngineBrokenError(str(getattr(err, "cause", err))) from None
        except EngineStartError as err:  # a replacement engine that could not start: the videos never ran
            if not self.pool.slots[call.slot].gone and self.pool.slots[call.slot].epoch == call.epoch:
                self.pool.cannot_start(call.slot, str(getattr(err, "cause", err)))
            queue.extendleft(reversed(call.videos))
            return []
        except ray.exceptions.RayError as err:
            engine = is_engine_death(err)
            cause = getattr(err, "cause", None)
            if (
                not engine
                and isinstance(err, ray.exceptions.RayTaskError)
                and not isinstance(cause, ray.exceptions.RayError)
            ):
                raise  # an exception of our own code in the engine actor: a bug, keep its traceback
            if engine:
                self.pool.lost(call.slot, call.epoch, err)
            return self._retry_or_fail(call, err, engine)
        if self.first_answer is None:
            self.first_answer = time.time()
        return list(zip(call.videos, results, strict=True))

    def _retry_or_fail(self, call: _Call, err: BaseException, engine: bool) -> list:
        """Videos of a call whose engine or decode process died: each goes back alone; a video that was
        alone on its engine and keeps dying there gets failed rows."""
        what = "engine" if engine else "decode process"
        limit = self.cfg.max_engine_deaths_per_video
        out = []
        for shard, video in call.videos:
            if call.exclusive:
                self.strikes[video.video_id] += 1
            if self.strikes[video.video_id] >= limit:
                logger.error(
                    "%s: the %s died %d times on this video alone; marking it failed",
                    video.video_id,
                    what,
                    self.strikes[video.video_id],
                )
                stage = "caption" if engine else "decode"
                error = (
                    f"{stage}: the {what} died {self.strikes[video.video_id]} times on this video "
                    f"({one_line(err, 300)})"
                )
                out.append(
                    (
                        (shard, video),
                        failed_rows(self.dataset, self.split, video.video_id, self.cfg.frames, error),
                    )
                )
            else:
                self.suspects.append((shard, video))
                self.summary.requeued_videos += 1
        if call.videos and not out:
            logger.warning(
                "the %s of a call of %d videos died (%s); sending them again, one per call",
                what,
                len(call.videos),
                one_line(err, 200),
            )
        return out

    def _collect(self, shard_index: int, video: VideoItem, rows: list) -> None:
        key = (shard_index, video.video_id)
        if key in self.done:  # never twice: a video is collected from exactly one call
            raise RuntimeError(f"{video.video_id}: rows arrived twice (shard {shard_index})")
        self.done.add(key)
        self.rows[shard_index].extend(rows)
        self.pending[shard_index] -= 1
        failed = [r for r in rows if r.status != STATUS_OK]
        if failed:
            self.summary.videos_failed += 1
            if len(self.summary.failures) < 10:
                self.summary.failures.append(f"{video.video_id}: {failed[0].error}")
        else:
            self.summary.videos_captioned += 1
            self.summary.frames += len(rows)

    def _write(self, shard: ShardWork) -> None:
        table = rows_to_table(self.rows.pop(shard.index))
        if shard.kept_rows is not None:  # --retry-failed: the shard's other videos keep their rows
            table = pa.concat_tables([rows_to_table(shard.kept_rows), table])
        if self.frames is not None:  # first: a finished caption shard always has its frame shard
            self.frames.write(shard)
        write_shard(self.cfg.out, self.split, shard.index, shard.num_shards, table, self.provenance)
        self.summary.shards_written += 1
