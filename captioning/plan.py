"""Which work a caption run does: videos -> deterministic shards, minus what is already done.

Pure functions over the output directory (no Ray, no model), so resume rules are testable alone:

- one entry per video (several texts of a video share its frames), sorted by ``video_id``, cut into
  shards of ``shard_size`` videos: shard ``i`` of ``N`` always holds the same videos;
- a shard whose stats file exists and whose data file matches its sha256 is done and skipped;
  with ``retry_failed`` a done shard is redone for its failed videos that now have a file, its other
  rows kept (failed videos whose file is still missing keep their failed rows);
- an output directory made with other settings (model, prompt, sampler, sampling, resolution, ...: the
  provenance keys that change captions), another shard layout or another video list is refused.

:func:`prepare_run` does all of this before Ray starts or a model loads (it imports neither), so a
refused run fails, and a finished run reports "nothing to do", in about a second: it compares the
settings known without an engine (every compatibility key except the chat template's sha256, and
``dtype`` when it is ``auto``), plans the shards, and counts the videos whose file is missing from the
video root (a few with the path looked for) and, with ``retry_failed``, the failed videos that now
have a file (retried) or still have none (kept as failed, counted).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from shared.datasets import VideoItem, unique_videos, video_present
from shared.errors import DiscoVLAError
from shared.shards import (
    COMPATIBILITY_KEYS,
    MANIFEST_NAME,
    STATUS_OK,
    CaptionSetError,
    IncompatibleProvenanceError,
    ShardStats,
    check_compatible,
    completed_shards,
    read_manifest,
    resolve,
    write_manifest,
)
from shared.shards.layout import data_location
from shared.shards.manifest import collect_stats
from shared.shards.shardio import read_shard
from shared.storage_errors import display_uri

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
    still_missing: tuple[str, ...] = ()  # retry: failed videos kept as failed, their file is still missing

    @property
    def is_retry(self) -> bool:
        return self.kept_rows is not None


def shard_videos(items: list[VideoItem], shard_size: int) -> list[tuple[VideoItem, ...]]:
    """Unique videos sorted by id, cut into consecutive shards of ``shard_size``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    videos = sorted(unique_videos(items), key=lambda v: v.video_id)
    return [tuple(videos[i : i + shard_size]) for i in range(0, len(videos), shard_size)]


def inputs_record(split: str, shards: list[tuple[VideoItem, ...]], shard_size: int) -> dict:
    """What decides the contents of each shard; kept in provenance under ``shard_inputs``."""
    ids = "\n".join(v.video_id for shard in shards for v in shard)
    return {
        "split": split,
        "videos": sum(len(s) for s in shards),
        "shard_size": shard_size,
        "num_shards": len(shards),
        "video_ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
    }


def check_output_dir(out, split: str, provenance: dict, *, ignore: tuple[str, ...] = ()) -> None:
    """Refuse an output directory whose finished shards were made differently (any split) or cut
    differently (this split). Raises :class:`RunRefusedError` listing every difference.

    ``ignore``: compatibility keys not compared (those :func:`prepare_run` cannot know without an engine).
    """
    root = resolve(out)
    existing = collect_stats(root, verify=False)
    if not existing:
        return
    try:
        check_compatible(existing[0].provenance, provenance, ignore=ignore, where=str(root))
    except IncompatibleProvenanceError as err:
        differences = dict(err.differences)
        if "prompt_sha256" in differences:  # the texts say more than their hashes
            differences["prompt_text"] = (
                existing[0].provenance.get("prompt_text"),
                provenance.get("prompt_text"),
            )
        lines = "\n".join(
            f"  {key}: existing {old!r}, this run {new!r}" for key, (old, new) in sorted(differences.items())
        )
        raise RunRefusedError(
            f"{root} holds captions made with other settings; mixing them would corrupt the caption set:\n"
            f"{lines}\nUse another --out directory, or the settings above."
        ) from None
    new_inputs = provenance.get("shard_inputs", {})
    for stats in existing:
        old = stats.provenance.get("shard_inputs", {})
        if stats.split != split or old.get("split") != split:
            continue
        differs = {
            k: (old.get(k), new_inputs.get(k))
            for k in ("shard_size", "num_shards", "video_ids_sha256")
            if old.get(k) != new_inputs.get(k)
        }
        if differs:
            detail = "; ".join(f"{k}: existing {a!r}, this run {b!r}" for k, (a, b) in differs.items())
            raise RunRefusedError(
                f"{root}: split {split!r} was cut into shards from another video list or shard size ({detail}). "
                f"Re-run with the same videos and --shard-size {old.get('shard_size')}, or use another --out."
            )


def plan_shards(
    out, split: str, shards: list[tuple[VideoItem, ...]], *, retry_failed: bool
) -> list[ShardWork]:
    """The shards this run must write, in index order (see :func:`prepare_run` for the counts too)."""
    return _plan(out, split, shards, retry_failed=retry_failed)[0]


def _plan(out, split: str, shards: list[tuple[VideoItem, ...]], *, retry_failed: bool):
    """(work, done shards, failed videos left as they are because their file is still missing)."""
    num = len(shards)
    done = completed_shards(out, split, num_shards=num) if num else {}
    work, still_missing = [], []
    for index, videos in enumerate(shards):
        stats = done.get(index)
        if stats is None:
            work.append(ShardWork(index, num, videos, videos))
        elif retry_failed and stats.failed_videos:
            retry = _retry_work(out, split, index, num, videos, stats)
            still_missing += retry.still_missing
            if retry.todo:
                work.append(retry)
    logger.info(
        "split %s: %d shards, %d done, %d to write%s",
        split,
        num,
        len(done),
        len(work),
        " (retrying failed videos)" if retry_failed else "",
    )
    return work, done, still_missing


def _retry_work(
    out, split: str, index: int, num: int, videos: tuple[VideoItem, ...], stats: ShardStats
) -> ShardWork:
    """Redo the failed videos of a done shard that have a file now; keep every other row."""
    location = data_location(resolve(out), split, index, num)
    table = read_shard(location, expect_sha256=stats.sha256).table
    failed = pc.unique(pc.filter(table["video_id"], pc.not_equal(table["status"], STATUS_OK))).to_pylist()
    by_id = {v.video_id: v for v in videos}
    unknown = sorted(set(failed) - set(by_id))
    if unknown:
        raise CaptionSetError(
            str(location), f"failed videos {unknown[:3]} are not in this shard's video list"
        )
    retried = sorted(v for v in failed if _has_file(by_id[v]))
    keep = pc.invert(pc.is_in(table["video_id"], value_set=pa.array(retried, pa.string())))
    todo = tuple(by_id[v] for v in retried)
    missing = tuple(sorted(set(failed) - set(retried)))
    return ShardWork(index, num, videos, todo, table.filter(keep), missing)


def _has_file(video: VideoItem) -> bool:
    """Found when the dataset was listed, or present now (``shared.datasets.video_present``: a local
    file added since the listing counts; a URI is judged by the listing, no request per video)."""
    return video.exists or video_present(video)


@dataclass
class RunPlan:
    """What a caption run will do, decided without Ray or a model: see :func:`prepare_run`."""

    out: str
    split: str
    shards: list[tuple[VideoItem, ...]]
    work: list[ShardWork]
    provenance: dict  # the settings known without an engine (compared with the output directory)
    shards_done: int = 0
    retry_failed: bool = False
    video_root: str | None = None
    still_missing: tuple[str, ...] = ()  # retry: failed videos whose file is still missing (kept as failed)

    @property
    def nothing_to_do(self) -> bool:
        return not self.work

    @property
    def videos_total(self) -> int:
        return sum(len(s) for s in self.shards)

    @property
    def todo(self) -> list[VideoItem]:
        return [v for w in self.work for v in w.todo]

    @property
    def missing(self) -> list[VideoItem]:
        """Videos this run would caption whose file is not under the video root."""
        return [v for v in self.todo if not v.exists]

    @property
    def retried(self) -> int:
        return sum(len(w.todo) for w in self.work if w.is_retry)

    def format(self, examples: int = 3) -> str:
        """What the run is about to do, for the user, before anything starts."""
        lines = []
        if self.retry_failed:
            lines.append(
                f"--retry-failed: {self.retried} failed videos now have a file and are retried; "
                f"{len(self.still_missing)} still have no file and stay failed"
                + (f" (e.g. {', '.join(self.still_missing[:examples])})" if self.still_missing else "")
            )
        if self.nothing_to_do:
            lines.append(
                f"nothing to do: {self.shards_done} of {len(self.shards)} shards of split "
                f"{self.split!r} ({self.videos_total} videos) are done in {self.out}"
                + ("" if self.retry_failed else "; add --retry-failed to redo failed videos")
            )
            return "\n".join(lines)
        todo, missing = self.todo, self.missing
        lines.append(
            f"to caption: {len(todo)} of {self.videos_total} videos in {len(self.work)} of "
            f"{len(self.shards)} shards ({self.shards_done} shards already done)"
        )
        if missing:
            shown = "; ".join(f"{v.video_id} -> {display_uri(str(v.path))}" for v in missing[:examples])
            lines.append(
                f"{len(missing)} of these {len(todo)} videos are missing from the video root "
                f"{self.video_root or '(the dataset default)'}; they will be recorded as failed "
                f'("file not found" with the path looked for), e.g. {shown}'
            )
        return "\n".join(lines)


def prepare_run(
    items: list[VideoItem], cfg, *, dataset: str, split: str, video_source: dict | None = None, resolved=None
) -> RunPlan:
    """Check the output directory and plan the run, before Ray or a model (see the module docstring).

    ``cfg`` is a :class:`captioning.config.CaptionConfig`; ``resolved`` the model as
    ``captioning.models.resolve_model`` gives it (resolved here when not given). Raises
    :class:`RunRefusedError` for an output directory this run must not add to. When nothing is left
    to do, the manifest is brought up to date (written if a crash left it missing or stale).
    """
    from captioning.models import resolve_model
    from captioning.prompts import resolve_prompt
    from captioning.provenance import settings_provenance

    video_source = dict(video_source or {})
    shards = shard_videos(items, cfg.shard_size)
    if resolved is None:
        resolved = resolve_model(cfg.model, cfg.revision)
    known = settings_provenance(
        cfg, resolved, resolve_prompt(cfg.prompt), dataset=dataset, video_source=video_source
    )
    known["shard_inputs"] = inputs_record(split, shards, cfg.shard_size)
    unknown = tuple(k for k in COMPATIBILITY_KEYS if k not in known)  # decided by the engine
    check_output_dir(cfg.out, split, known, ignore=unknown)
    work, done, still_missing = _plan(cfg.out, split, shards, retry_failed=cfg.retry_failed)
    plan = RunPlan(
        str(cfg.out),
        split,
        shards,
        work,
        known,
        shards_done=len(done),
        retry_failed=cfg.retry_failed,
        video_root=video_source.get("video_root"),
        still_missing=tuple(still_missing),
    )
    if plan.nothing_to_do and shards:
        _ensure_manifest(cfg.out, split, done)
    return plan


def _ensure_manifest(out, split: str, done: dict[int, ShardStats]) -> None:
    """Write the manifest when it is missing or does not list exactly the done shards of ``split``."""
    root = resolve(out)
    listed = None
    if root.join(MANIFEST_NAME).exists():
        try:
            listed = {e["file"]: e["sha256"] for e in read_manifest(root)["shards"] if e["split"] == split}
        except CaptionSetError as err:
            logger.warning("rewriting the manifest: %s", err)
    if listed != {s.file: s.sha256 for s in done.values()}:
        write_manifest(root)
        logger.info("%s: manifest written (it was missing or out of date)", root)
