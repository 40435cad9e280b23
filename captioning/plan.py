"""Which work a caption run does: videos -> deterministic shards, minus what is already done.

Pure functions over the output directory (no Ray, no model), so resume rules are testable alone:

- one entry per video (several texts of a video share its frames), sorted by ``video_id``, cut into
  shards of ``shard_size`` videos: shard ``i`` of ``N`` always holds the same videos;
- a shard whose stats file exists and whose data file matches its sha256 is done and skipped;
  with ``retry_failed`` a done shard that has failed videos is redone for those videos only, its other
  rows kept;
- an output directory made with other settings (model, prompt, sampler, sampling, resolution, ...: the
  provenance keys that change captions), another shard layout or another video list is refused.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from shared.datasets import VideoItem, unique_videos
from shared.errors import DiscoVLAError
from shared.shards import (
    STATUS_OK,
    CaptionSetError,
    IncompatibleProvenanceError,
    ShardStats,
    check_compatible,
    completed_shards,
    resolve,
)
from shared.shards.layout import data_location
from shared.shards.manifest import collect_stats
from shared.shards.shardio import read_shard

logger = logging.getLogger(__name__)


class RunRefusedError(DiscoVLAError, ValueError):
    """The output directory holds captions this run must not be mixed with."""


@dataclass(frozen=True)
class ShardWork:
    """One shard to (re)write: caption ``todo``, keep ``kept_rows`` (retry), write all of ``videos``."""

    index: int
    num_shards: int
    videos: tuple[VideoItem, ...]  # every video of the shard, sorted by id
    todo: tuple[VideoItem, ...]  # the videos to caption in this run
    kept_rows: pa.Table | None = None  # rows of the other videos when retrying failures

    @property
    def is_retry(self) -> bool:
        return self.kept_rows is not None


def shard_videos(items: list[VideoItem], shard_size: int) -> list[tuple[VideoItem, ...]]:
    """Unique videos sorted by id, cut into consecutive shards of ``shard_size``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    videos = sorted(unique_videos(items), key=lambda v: v.video_id)
    return [tuple(videos[i:i + shard_size]) for i in range(0, len(videos), shard_size)]


def inputs_record(split: str, shards: list[tuple[VideoItem, ...]], shard_size: int) -> dict:
    """What decides the contents of each shard; kept in provenance under ``shard_inputs``."""
    ids = "\n".join(v.video_id for shard in shards for v in shard)
    return {"split": split, "videos": sum(len(s) for s in shards), "shard_size": shard_size,
            "num_shards": len(shards), "video_ids_sha256": hashlib.sha256(ids.encode()).hexdigest()}


def check_output_dir(out, split: str, provenance: dict) -> None:
    """Refuse an output directory whose finished shards were made differently (any split) or cut
    differently (this split). Raises :class:`RunRefusedError` listing every difference."""
    root = resolve(out)
    existing = collect_stats(root, verify=False)
    if not existing:
        return
    try:
        check_compatible(existing[0].provenance, provenance, where=str(root))
    except IncompatibleProvenanceError as err:
        differences = dict(err.differences)
        if "prompt_sha256" in differences:  # the texts say more than their hashes
            differences["prompt_text"] = (existing[0].provenance.get("prompt_text"), provenance.get("prompt_text"))
        lines = "\n".join(f"  {key}: existing {old!r}, this run {new!r}"
                          for key, (old, new) in sorted(differences.items()))
        raise RunRefusedError(
            f"{root} holds captions made with other settings; mixing them would corrupt the caption set:\n"
            f"{lines}\nUse another --out directory, or the settings above."
        ) from None
    new_inputs = provenance.get("shard_inputs", {})
    for stats in existing:
        old = stats.provenance.get("shard_inputs", {})
        if stats.split != split or old.get("split") != split:
            continue
        differs = {k: (old.get(k), new_inputs.get(k)) for k in ("shard_size", "num_shards", "video_ids_sha256")
                   if old.get(k) != new_inputs.get(k)}
        if differs:
            detail = "; ".join(f"{k}: existing {a!r}, this run {b!r}" for k, (a, b) in differs.items())
            raise RunRefusedError(
                f"{root}: split {split!r} was cut into shards from another video list or shard size ({detail}). "
                f"Re-run with the same videos and --shard-size {old.get('shard_size')}, or use another --out."
            )


def plan_shards(out, split: str, shards: list[tuple[VideoItem, ...]], *, retry_failed: bool) -> list[ShardWork]:
    """The shards this run must write, in index order."""
    num = len(shards)
    done = completed_shards(out, split, num_shards=num) if num else {}
    work = []
    for index, videos in enumerate(shards):
        stats = done.get(index)
        if stats is None:
            work.append(ShardWork(index, num, videos, videos))
        elif retry_failed and stats.failed_videos:
            work.append(_retry_work(out, split, index, num, videos, stats))
    logger.info("split %s: %d shards, %d done, %d to write%s", split, num, len(done), len(work),
                " (retrying failed videos)" if retry_failed else "")
    return work


def _retry_work(out, split: str, index: int, num: int, videos: tuple[VideoItem, ...],
                stats: ShardStats) -> ShardWork:
    location = data_location(resolve(out), split, index, num)
    table = read_shard(location, expect_sha256=stats.sha256).table
    failed = pc.unique(pc.filter(table["video_id"], pc.not_equal(table["status"], STATUS_OK))).to_pylist()
    by_id = {v.video_id: v for v in videos}
    unknown = sorted(set(failed) - set(by_id))
    if unknown:
        raise CaptionSetError(str(location), f"failed videos {unknown[:3]} are not in this shard's video list")
    keep = pc.invert(pc.is_in(table["video_id"], value_set=pa.array(failed, pa.string())))
    todo = tuple(by_id[v] for v in sorted(failed))
    return ShardWork(index, num, videos, todo, table.filter(keep))

