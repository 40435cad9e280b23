"""The caption run's driver loop: keeps every engine fed with a bounded number of calls, collects each
video's rows exactly once, writes a shard when its last video is back.

A call is ``videos_per_call`` videos decoded by one Ray CPU task, started when the call is made; its
result goes straight to the engine actor, which answers the call's rows as one Arrow table. At most ``max_in_flight_per_worker`` calls per engine
are outstanding, so decoding runs ahead of captioning by a bounded amount. Videos of a call whose
engine or decode process died go back one per call, each *alone* on an otherwise idle engine (a
suspect); a suspect that keeps killing its engine or decoder gets failed rows. Rows are collected per
``(shard, video)`` exactly once: a second arrival is a bug and raises.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import pyarrow as pa
import ray
from tqdm import tqdm

from captioning.config import CaptionConfig
from captioning.engine_pool import EnginePool
from captioning.errors import EngineBrokenError, EnginesLostError, EngineStartError, is_engine_death, one_line
from captioning.plan import ShardWork
from captioning.workers import DecodeOptions, decode_task
from shared.datasets import VideoItem
from shared.shards import STATUS_OK, failed_rows, rows_to_table, write_shard

logger = logging.getLogger(__name__)


@dataclass
class Call:
    videos: list  # [(ShardWork, VideoItem)]
    slot: int = -1
    epoch: int = 0
    decoded: list = field(default_factory=list)  # decode task refs, one per video
    exclusive: bool = False


class Feeder:
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
        self.in_flight: dict = {}  # call ref -> Call
        self.prepared: deque[Call] = deque()  # decoding already started, no engine chosen yet
        self.rows: dict[int, list] = {}  # shard index -> collected rows, an Arrow table per video
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
                bar.set_postfix(  # shown at the bar's next refresh: redrawing it per call cost ~0.6 ms
                    captioned=self.summary.videos_captioned,
                    failed=self.summary.videos_failed,
                    restarts=self.pool.restarts,
                    refresh=False,
                )
        up_since = (
            self.pool.first_ready - time.time() + time.perf_counter() if self.pool.first_ready else started
        )
        self.summary.caption_seconds = time.perf_counter() - max(started, up_since)
        self.summary.engine_restarts = self.pool.restarts

    def _decode(self, videos: list, exclusive: bool = False) -> Call:
        """Start decoding the videos of one call: one Ray task for all of them (with ``--save-frames``,
        one per video, each also returning the frame store's rows)."""
        if self.frames:
            refs = [self.frames.decode(v, self.options) for _, v in videos]
        else:
            refs = [
                decode_task.remote([(v.video_id, str(v.path), v.window) for _, v in videos], self.options)
            ]
        return Call(list(videos), decoded=refs, exclusive=exclusive)

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

    def _send(self, call: Call, index: int) -> None:
        slot = self.pool.slots[index]
        call.slot, call.epoch = index, slot.epoch
        ref = slot.actor.caption_call.remote(self.dataset, self.split, *call.decoded)
        self.in_flight[ref] = call
        slot.load += 1
        slot.exclusive = call.exclusive

    def _result(self, ref, call: Call, queue: deque) -> list:
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
        table, counts = results  # EngineWorker.caption_call: the call's rows, video after video
        if len(counts) != len(call.videos) or sum(counts) != len(table):
            raise RuntimeError(
                f"an engine answered {counts} rows ({len(table)} in all) for {len(call.videos)} videos"
            )
        starts = [0]
        for count in counts[:-1]:
            starts.append(starts[-1] + count)
        return [
            (video, table.slice(start, count))
            for video, start, count in zip(call.videos, starts, counts, strict=True)
        ]

    def _retry_or_fail(self, call: Call, err: BaseException, engine: bool) -> list:
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
                rows = failed_rows(self.dataset, self.split, video.video_id, self.cfg.frames, error)
                out.append(((shard, video), rows_to_table(rows)))
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

    def _collect(self, shard_index: int, video: VideoItem, rows: pa.Table) -> None:
        """Take one video's rows (an Arrow table): exactly once, counted as captioned or failed."""
        key = (shard_index, video.video_id)
        if key in self.done:  # never twice: a video is collected from exactly one call
            raise RuntimeError(f"{video.video_id}: rows arrived twice (shard {shard_index})")
        self.done.add(key)
        self.rows[shard_index].append(rows)
        self.pending[shard_index] -= 1
        status = rows.column("status").to_pylist()
        if any(s != STATUS_OK for s in status):
            self.summary.videos_failed += 1
            if len(self.summary.failures) < 10:
                first = next(i for i, s in enumerate(status) if s != STATUS_OK)
                self.summary.failures.append(f"{video.video_id}: {rows.column('error')[first].as_py()}")
        else:
            self.summary.videos_captioned += 1
            self.summary.frames += len(rows)

    def _write(self, shard: ShardWork) -> None:
        collected = self.rows.pop(shard.index)
        table = pa.concat_tables(collected) if collected else rows_to_table([])
        if shard.kept_rows is not None:  # --retry-failed: the shard's other videos keep their rows
            table = pa.concat_tables([rows_to_table(shard.kept_rows), table])
        if self.frames is not None:  # first: a finished caption shard always has its frame shard
            self.frames.write(shard)
        write_shard(self.cfg.out, self.split, shard.index, shard.num_shards, table, self.provenance)
        self.summary.shards_written += 1
