"""``--save-frames``: the caption run also writes the frames it decoded into a frame store.

The decode task of a video then decodes once at full size and resizes twice: to the captioner's size
for the engine and to the store's short side for the trainer (exactly what ``shared.frames.sample_frames``
with ``resize_short`` gives, so the store holds the trainer's frames). The store's rows come back to the
driver as a second return value of the task (encoded, a few hundred kB per video) and are written as a
frame shard, with the same number and completion protocol, right after the caption shard::

    saver = frame_saver(cfg, dataset, split, video_source)    # None without cfg.save_frames
    decoded_ref = saver.decode(video, options)     # instead of decode_task.remote(...)
    saver.write(shard_work)                        # after the caption shard
    finish_frames(cfg, split)                       # manifest, after the last shard

A caption shard finished before ``--save-frames`` was given gets no frames from a re-run (it is not
redone): ``python -m pipelines.framestore build --captions OUT`` fills those shards.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import ray

from shared.frames import SamplerConfig
from shared.framestore import (
    Codec,
    FrameStoreError,
    completed_frame_shards,
    failed_video_rows,
    make_frame_provenance,
    video_rows,
    write_frame_manifest,
    write_frame_shard,
)
from shared.framestore.build import sample_video_rows

logger = logging.getLogger(__name__)


def _decode_with_frames(
    video_id: str, path: str, window, options, short_side: int, codec: Codec, dataset: str, split: str
):
    """(Decoded for the engine, the store's rows) from one full-size decode of the video."""
    from captioning.workers import Decoded, decode_video
    from shared.decoder import resize_short_side

    full = decode_video(video_id, path, window, replace(options, resize_short=None))
    if full.error is not None:
        return full, failed_video_rows(dataset, split, video_id, window, options.num_frames, full.error)
    store_frames = resize_short_side(full.frames, short_side)  # = sample_frames(..., resize_short=short_side)
    rows = video_rows(dataset, split, video_id, window, full.indices, full.timestamps, store_frames, codec)
    frames = (
        full.frames if options.resize_short is None else resize_short_side(full.frames, options.resize_short)
    )
    return Decoded(video_id, frames, full.indices, full.timestamps), rows


class FrameSaver:
    """Collects the store rows of a caption run and writes them shard by shard; see the module docstring."""

    def __init__(
        self,
        root: str,
        *,
        short_side: int,
        codec: Codec,
        num_frames: int,
        candidate_fps: float,
        dataset: str,
        split: str,
        caption_set: str,
        video_source: dict | None = None,
    ):
        from captioning.workers import DECODE_MAX_CALLS

        self.root, self.short_side, self.codec = root, short_side, codec
        self.dataset, self.split, self.num_frames = dataset, split, num_frames
        self.provenance = make_frame_provenance(
            sampler=SamplerConfig(num_frames=num_frames, candidate_fps=candidate_fps).provenance(),
            short_side=short_side,
            codec=codec,
            dataset=dataset,
            video_source=video_source or {},
            caption_set={"root": caption_set},
        )
        self._task = ray.remote(num_cpus=1, max_retries=1, max_calls=DECODE_MAX_CALLS, num_returns=2)(
            _decode_with_frames
        )
        self._refs: dict[str, object] = {}  # video_id -> ref of its store rows (the latest decode)
        self.written = 0

    def decode(self, video, options):
        decoded, rows = self._task.remote(
            video.video_id,
            str(video.path),
            video.window,
            options,
            self.short_side,
            self.codec,
            self.dataset,
            self.split,
        )
        self._refs[video.video_id] = rows
        return decoded

    def write(self, shard) -> None:
        """The frame shard of ``shard`` (a ``captioning.plan.ShardWork``), written just before its caption shard."""
        tables = []
        for video in shard.todo:
            ref = self._refs.pop(video.video_id, None)
            try:
                tables.append(ray.get(ref) if ref is not None else None)
            except ray.exceptions.RayError as err:  # its decode process died: the captions say failed too
                tables.append(None)
                logger.warning("%s: no frames (%s)", video.video_id, str(err)[:200])
            if tables[-1] is None:
                tables[-1] = failed_video_rows(
                    self.dataset,
                    self.split,
                    video.video_id,
                    video.window,
                    self.num_frames,
                    "decode: the decode process died",
                )
        if shard.is_retry:
            tables += self._kept_rows(shard)
        write_frame_shard(self.root, self.split, shard.index, shard.num_shards, tables, self.provenance)
        self.written += 1

    def _kept_rows(self, shard) -> list:
        """Retrying failures: the frames of the shard's other videos, from its previous frame shard."""
        todo = {v.video_id for v in shard.todo}
        kept = [v for v in shard.videos if v.video_id not in todo]
        done = completed_frame_shards(self.root, self.split, num_shards=shard.num_shards)
        if shard.index not in done:
            logger.info(
                "frame shard %d was not written before: decoding its %d other videos", shard.index, len(kept)
            )
            return [
                sample_video_rows(
                    self.dataset,
                    self.split,
                    v.video_id,
                    str(v.path),
                    v.window,
                    num_frames=self.num_frames,
                    short_side=self.short_side,
                    codec=self.codec,
                    timeout_s=60.0,
                    candidate_fps=self.provenance["sampler"]["candidate_fps"],
                )
                for v in kept
            ]
        import pyarrow.parquet as pq

        from shared.shards import resolve

        loc = resolve(self.root).join(*done[shard.index].file.split("/"))
        table = pq.read_table(loc.fs.open_input_file(loc.path))
        return [
            table.filter(
                pc.is_in(table["video_id"], value_set=pa.array([v.video_id for v in kept], pa.string()))
            )
        ]


def frame_saver(cfg, dataset: str, split: str, video_source: dict | None) -> FrameSaver | None:
    """The FrameSaver of a caption run (``cfg``: a CaptionConfig), or None without ``save_frames``."""
    if not cfg.save_frames:
        return None
    return FrameSaver(
        cfg.save_frames,
        short_side=cfg.save_frames_size,
        codec=Codec(cfg.save_frames_codec),
        num_frames=cfg.frames,
        candidate_fps=cfg.candidate_fps,
        dataset=dataset,
        split=split,
        caption_set=cfg.out,
        video_source=video_source,
    )


def finish_frames(cfg, split: str) -> None:
    """The store's manifest after a caption run; a warning naming the fill command when caption shards
    have no frame shard (they were finished before ``--save-frames`` was given)."""
    try:
        info = write_frame_manifest(cfg.save_frames, verify=False)["splits"].get(split)
    except FrameStoreError:  # no frame shard at all
        info = None
    if info is None or not info["complete"]:
        logger.warning(
            "the frame store %s lacks the frames of caption shards finished before --save-frames; "
            "fill them with python -m pipelines.framestore build --captions %s",
            cfg.save_frames,
            cfg.out,
        )
