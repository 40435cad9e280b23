"""The engine actors of a caption run: started, checked, replaced when they die, dropped when they cannot start.

An :class:`EnginePool` holds one slot per engine position. A slot's actor is replaced when it dies (the
driver's :class:`captioning.feeder.Feeder` puts the calls it had in flight back in the queue); a slot
whose actors die :data:`MAX_START_DEATHS` times in a row while loading, or that reports an
:class:`captioning.errors.EngineStartError`, is given up. With no slot left the run stops with one
error (``EngineStartError`` before any engine ran, ``EnginesLostError`` after). Engines must load what
the driver recorded in provenance (chat template, dtype, model revision).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import ray

from captioning.config import EngineSpec
from captioning.errors import EnginesLostError, EngineStartError, is_engine_death, one_line
from captioning.workers import engine_actor

logger = logging.getLogger(__name__)

MAX_START_DEATHS = 3  # an engine slot whose actor dies this many times in a row while loading is given up


@dataclass
class EngineSlot:
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

    def _new_slot(self, epoch: int = 0) -> EngineSlot:
        actor = engine_actor(self.spec, self.frames, **self.options)
        return EngineSlot(actor, actor.ready.remote(), epoch)

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
