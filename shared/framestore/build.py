"""Building a frame store from video files: decode the sampled frames once, resize, encode, write shards.

Public API::

    build_frame_store(items, out, *, dataset, split, num_frames=12, short_side=224, codec=Codec(),
                      shard_size=100, caption_set=None, num_workers=0, timeout_s=60.0,
                      candidate_fps=1.0, progress=True, video_source=None) -> BuildSummary
    sample_video_rows(dataset, split, video_id, path, window, *, num_frames, short_side, codec,
                      timeout_s, candidate_fps) -> pa.Table     # one video's F rows, never raises for a bad video

Videos are the unique ``video_id`` of ``items``, sorted, cut into shards of ``shard_size``; with
``caption_set`` the store takes that caption set's shards instead (same split, same shard numbers,
the same videos in each), so frames and captions line up shard by shard. Finished shards (stats file
+ matching sha256) are skipped, so an interrupted build resumes. Decoding runs in ``num_workers``
processes (0: in this process). ``video_source`` (e.g. ``{"video_root", "window_rule"}``, as the caption
stage records it) goes into the provenance; stores with different values cannot be mixed.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from shared.frames import SamplerConfig, VideoDecodeError, sample_frames
from shared.framestore.codec import Codec
from shared.framestore.provenance import check_same_store, make_frame_provenance
from shared.framestore.schema import FrameStoreError, failed_video_rows, video_rows
from shared.framestore.writer import completed_frame_shards, write_frame_manifest, write_frame_shard
from shared.shards import ShardStats, read_manifest, resolve
from shared.shards.layout import STATS_DIR

logger = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    out: str
    split: str
    videos: int = 0  # unique videos of the split
    videos_written: int = 0  # decoded in this run
    videos_failed: int = 0  # of those, videos that could not be decoded
    shards_total: int = 0
    shards_written: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def format(self) -> str:
        rate = self.videos_written / self.seconds if self.seconds else 0.0
        per_1k = self.bytes_written / max(self.videos_written, 1) * 1000 / 1e9
        lines = [
            f"frame store {self.out}: split {self.split!r}, {self.videos} videos in {self.shards_total} shards",
            f"this run: {self.shards_written} shards, {self.videos_written} videos ({rate:.2f} videos/s), "
            f"{self.videos_failed} failed, {self.bytes_written / 1e6:.1f} MB ({per_1k:.2f} GB per 1,000 videos)",
        ]
        if self.failures:
            lines.append("failed, e.g.: " + "; ".join(self.failures[:3]))
        return "\n".join(lines)


def sample_video_rows(
    dataset: str,
    split: str,
    video_id: str,
    path: str,
    window,
    *,
    num_frames: int,
    short_side: int,
    codec: Codec,
    timeout_s: float | None,
    candidate_fps: float,
) -> pa.Table:
    """The F rows of one video; a video that cannot be decoded gets F failed rows naming the cause."""
    try:
        sampled = sample_frames(
            path,
            num_frames,
            window=window,
            resize_short=short_side,
            timeout_s=timeout_s,
            candidate_fps=candidate_fps,
        )
    except VideoDecodeError as err:
        return failed_video_rows(dataset, split, video_id, window, num_frames, f"decode: {err.cause}")
    except Exception as err:  # noqa: BLE001  (any decoder failure is this video's failure)
        return failed_video_rows(
            dataset, split, video_id, window, num_frames, f"decode: {type(err).__name__}: {err}"
        )
    return video_rows(
        dataset, split, video_id, window, sampled.indices, sampled.timestamps, sampled.frames, codec
    )


def _unique_videos(items) -> dict:
    videos = {}
    for item in items:
        first = videos.setdefault(item.video_id, item)
        if first.window != item.window:
            logger.warning(
                "%s: items with windows %s and %s; the store keeps %s (one entry per video id)",
                item.video_id,
                first.window,
                item.window,
                first.window,
            )
    return videos


def caption_set_shards(caption_set, split: str) -> list[list[str]]:
    """The video ids of each shard of ``split`` in a caption set, by shard index (its manifest decides)."""
    import pyarrow.parquet as pq

    root = resolve(caption_set)
    manifest = read_manifest(root)
    entries = sorted((e for e in manifest["shards"] if e["split"] == split), key=lambda e: e["shard_index"])
    if not entries:
        raise FrameStoreError(
            str(root),
            f"the caption set has no shards of split {split!r} (it has {sorted(manifest['splits'])})",
        )
    num = entries[0]["num_shards"]
    shards: list[list[str]] = [[] for _ in range(num)]
    for entry in entries:
        loc = root.join(*entry["file"].split("/"))
        ids = pq.read_table(loc.fs.open_input_file(loc.path), columns=["video_id"])["video_id"]
        shards[entry["shard_index"]] = sorted(pc.unique(ids).to_pylist())
    return shards


def build_frame_store(
    items,
    out,
    *,
    dataset: str,
    split: str,
    num_frames: int = 12,
    short_side: int = 224,
    codec: Codec = Codec(),
    shard_size: int = 100,
    caption_set=None,
    num_workers: int = 0,
    timeout_s: float | None = 60.0,
    candidate_fps: float = 1.0,
    progress: bool = True,
    video_source: dict | None = None,
    filesystem=None,
) -> BuildSummary:
    """Write the frame store of ``items`` under ``out``; see the module docstring."""
    started = time.perf_counter()
    root = resolve(out, filesystem)
    videos = _unique_videos(items)
    sampler = SamplerConfig(num_frames=num_frames, candidate_fps=candidate_fps).provenance()
    extra = {}
    if caption_set is not None:
        caption_prov = read_manifest(caption_set)["provenance"]
        if caption_prov["sampler"].get("num_frames") != num_frames:
            raise FrameStoreError(
                str(caption_set),
                f"captions have {caption_prov['sampler'].get('num_frames')} "
                f"frames per video, the store would hold {num_frames}",
            )
        sampler = caption_prov["sampler"]
        extra["caption_set"] = {"root": str(caption_set), "code_version": caption_prov.get("code_version")}
        shards = caption_set_shards(caption_set, split)
        unknown = sorted({v for s in shards for v in s} - set(videos))
        if unknown:
            logger.warning(
                "%d videos of the caption set are not among the dataset's items (e.g. %s): skipped",
                len(unknown),
                unknown[:3],
            )
        shards = [[v for v in s if v in videos] for s in shards]
    else:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        ids = sorted(videos)
        shards = [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]
    provenance = make_frame_provenance(
        sampler=sampler,
        short_side=short_side,
        codec=codec,
        dataset=dataset,
        video_source=video_source or {},
        **extra,
    )
    _refuse_other_store(root, provenance)
    done = completed_frame_shards(root, split, num_shards=len(shards)) if shards else {}
    todo = [i for i in range(len(shards)) if i not in done]
    summary = BuildSummary(str(root), split, videos=sum(len(s) for s in shards), shards_total=len(shards))
    kwargs = dict(
        num_frames=num_frames,
        short_side=short_side,
        codec=codec,
        timeout_s=timeout_s,
        candidate_fps=candidate_fps,
    )
    bar = tqdm(
        total=sum(len(shards[i]) for i in todo),
        unit="video",
        desc=f"frames {split}",
        disable=not progress,
        dynamic_ncols=True,
    )
    pool = ProcessPoolExecutor(num_workers) if num_workers > 0 else None
    try:
        with bar:
            for index in todo:
                args = [(dataset, split, v, str(videos[v].path), videos[v].window) for v in shards[index]]
                if pool is None:
                    tables = [sample_video_rows(*a, **kwargs) for a in args]
                else:
                    futures = [pool.submit(sample_video_rows, *a, **kwargs) for a in args]
                    tables = [f.result() for f in futures]
                for table in tables:
                    bar.update(1)
                    if table["status"][0].as_py() != "ok":
                        summary.videos_failed += 1
                        summary.failures.append(f"{table['video_id'][0]}: {table['error'][0]}")
                stats = write_frame_shard(root, split, index, len(shards), tables, provenance)
                summary.shards_written += 1
                summary.videos_written += stats.videos
                summary.bytes_written += stats.bytes
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if shards:
        write_frame_manifest(root, verify=False)
    summary.seconds = time.perf_counter() - started
    return summary


def _refuse_other_store(root, provenance: dict) -> None:
    """Stop before writing when finished shards under ``root`` were made with other settings."""
    for name in root.join(STATS_DIR).list_names()[:1]:
        loc = root.join(STATS_DIR, name)
        existing = ShardStats.from_json(loc.read_bytes(), str(loc)).provenance
        check_same_store(existing, provenance, f"{root} (existing {name} vs this build)")
