"""Building and updating an index: list, keep what is unchanged, encode the rest in chunks, write a generation.

1. list the sources (:mod:`search.sources`): files under ``videos`` folders, or a dataset split's videos;
2. an existing index must come from the same model (:func:`search.encode.model_identity`) and settings,
   else :class:`IndexMismatchError` names both (``rebuild=True`` starts afresh); its rows of unchanged files
   are kept, rows of changed or deleted files leave, and files that failed before are not retried until
   they change;
3. chunks of an interrupted build (``partial/``) are reused, so a killed build resumes where it stopped;
4. the other files are encoded ``chunk_files`` at a time, in this process or by Ray actors
   (``ray_workers``), each chunk written to ``partial/`` as soon as it is done; unreadable files are
   recorded with the reason and skipped;
5. the rows are written as the next generation, with an ANN index when there are enough of them.

In code: :func:`list_sources` (1), :class:`IndexBuild` holding the run's state (``keep_previous`` 2,
``resume`` 3, ``add_chunk`` for each chunk that :func:`encode_files` encodes 4, ``write`` 5), and
:func:`build_index`, which calls them in that order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from search import store
from search.ann import DEFAULT_BACKEND, EXACT_BELOW, build_ann, require_backend
from search.encode import Encoder, describe_model, model_identity
from search.sources import VideoFile, list_dataset, list_folders, plan_items
from shared.errors import DiscoVLAError, UsageError, VideoDecodeError

logger = logging.getLogger(__name__)


class IndexMismatchError(DiscoVLAError, ValueError):
    """An index built with other adapters, another backbone or other settings than asked for."""


@dataclass
class BuildSummary:
    index: str
    files_listed: int = 0
    files_kept: int = 0  # unchanged since the last build
    files_resumed: int = 0  # taken from an interrupted build's chunks
    files_encoded: int = 0  # encoded by this run
    files_removed: int = 0  # rows of deleted or changed files that left the index
    files_skipped: int = 0  # unreadable (this run and earlier ones), listed in ``skipped``
    entries: int = 0
    ann: str | None = None
    seconds: float = 0.0
    encode_seconds: float = 0.0
    skipped: list = field(default_factory=list)

    @property
    def videos_per_s(self) -> float:
        return self.files_encoded / self.encode_seconds if self.encode_seconds else 0.0

    def format(self) -> str:
        lines = [
            f"index {self.index}: {self.entries} entries from {self.files_listed - self.files_skipped} videos "
            f"(kept {self.files_kept}, resumed {self.files_resumed}, encoded {self.files_encoded}, removed "
            f"{self.files_removed}, skipped {self.files_skipped}); search: {self.ann or 'exact'}",
            f"encoded {self.files_encoded} videos in {self.encode_seconds:.1f} s ({self.videos_per_s:.2f} videos/s);"
            f" total {self.seconds:.1f} s",
        ]
        lines += [f"  skipped {s['path']}: {s['reason']}" for s in self.skipped[:10]]
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more (manifest.json)")
        return "\n".join(lines)


def _empty_rows() -> dict[str, list]:
    return {c: [] for c in store.COLUMNS}


def _failure_cause(file: VideoFile, timeout_s) -> str:
    """Why a file's frames could not be decoded (asks the decoder again, on the failure path only)."""
    from shared.frames import sample_frames

    try:
        sample_frames(file.path, 1, timeout_s=timeout_s)
    except VideoDecodeError as err:
        return err.cause
    return "frames could not be decoded"


def encode_chunk(
    encoder: Encoder, files: list[VideoFile], *, window_s: float | None, batch_size: int, num_workers: int
) -> tuple[dict, np.ndarray, list[dict]]:
    """``(column lists, embeddings [n, D], skipped records)`` of ``files``; a failing file yields no rows."""
    items, owner, skipped = [], {}, []
    for file in files:
        try:
            file_items, durations = plan_items(file, window_s, encoder.decode_timeout_s)
        except VideoDecodeError as err:
            skipped.append(file.record(err.cause))
            continue
        for item, duration in zip(file_items, durations, strict=True):
            owner[id(item)] = (file, duration)
        items += file_items
    rows, dim = _empty_rows(), int(encoder.model.embed_dim)
    if not items:
        return rows, np.zeros((0, dim), np.float32), skipped
    kept, embeddings, thumbs, failed = encoder.encode_items(
        items, batch_size=batch_size, num_workers=num_workers
    )
    kept_ids = {id(item) for item in kept}
    bad = {owner[id(i)][0].key for i in items if id(i) not in kept_ids or i.video_id in failed}
    for file in files:
        if file.key in bad:
            missing = not os.path.isfile(file.path)
            skipped.append(
                file.record("file not found" if missing else _failure_cause(file, encoder.decode_timeout_s))
            )
    keep = []
    for position, item in enumerate(kept):
        file, duration = owner[id(item)]
        if file.key in bad:
            continue
        keep.append(position)
        values = (
            item.video_id,
            file.root,
            file.rel_path,
            item.start,
            item.end,
            duration,
            file.size,
            file.mtime_ns,
            file.key,
            thumbs[position],
        )
        for column, value in zip(store.COLUMNS, values, strict=True):
            rows[column].append(value)
    return rows, embeddings[keep], skipped


class ChunkEncoder:
    """One encoder per process (a Ray actor's state): loads the model once, encodes chunks."""

    def __init__(self, encoder_args: dict, chunk_args: dict):
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.encoder = Encoder.load(**encoder_args)
        self.chunk_args = chunk_args

    def encode(self, files: list[VideoFile]):
        return encode_chunk(self.encoder, files, **self.chunk_args)


def _run_ray(
    chunks: list[list[VideoFile]],
    encoder_args: dict,
    chunk_args: dict,
    ray_options,
    *,
    on_result,
    progress: bool,
) -> None:
    """Encode ``chunks`` with Ray actors (:class:`RayOptions`), two chunks in flight each; ``on_result``
    is called in the driver."""
    import ray
    from tqdm import tqdm

    from shared.errors import connect_ray
    from shared.storage_check import StorageCheck, first_readable

    if not ray.is_initialized():
        connect_ray(ray_options.address, include_dashboard=False, log_to_driver=False)
    # every node reads a video (and the adapters) before an encoder loads: a path a node lacks is named now
    adapters = [str(a) for a in [encoder_args.get("adapters")] if a]
    files = (f.path for chunk in chunks for f in chunk)
    StorageCheck(inputs=first_readable(files) + adapters).on_cluster()
    actor_class = ray.remote(num_cpus=ray_options.cpus_per_worker)(ChunkEncoder)
    env = {"OMP_NUM_THREADS": str(max(1, int(ray_options.cpus_per_worker)))}
    actors = [
        actor_class.options(runtime_env={"env_vars": env}).remote(encoder_args, chunk_args)
        for _ in range(ray_options.workers)
    ]
    queue, in_flight = deque(chunks), {}
    try:
        with tqdm(total=len(chunks), desc="chunks", unit="chunk", disable=not progress) as bar:
            while queue or in_flight:
                for actor in actors:
                    while queue and sum(a is actor for a in in_flight.values()) < 2:
                        in_flight[actor.encode.remote(queue.popleft())] = actor
                done, _ = ray.wait(list(in_flight), num_returns=1)
                in_flight.pop(done[0])
                on_result(ray.get(done[0]))
                bar.update(1)
    finally:
        for actor in actors:
            ray.kill(actor)


def _read_previous(out: Path, provenance: dict, settings: dict, rebuild: bool):
    """The current index's manifest and table, or (None, None); refuses another model or settings."""
    if not (out / store.MANIFEST).is_file():
        return None, None
    manifest = store.read_manifest(out)
    old = {"model": model_identity(manifest["provenance"]), "settings": manifest.get("settings")}
    if old != {"model": model_identity(provenance), "settings": settings}:
        if rebuild:
            logger.info(
                "%s: rebuilding (--rebuild): the index had %s", out, describe_model(manifest["provenance"])
            )
            return None, None
        raise IndexMismatchError(
            f"{out} was built with {describe_model(manifest['provenance'])}, settings {manifest.get('settings')}; "
            f"this run asks for {describe_model(provenance)}, settings {settings}. Use another --out, or --rebuild to replace it"
        )
    return manifest, store.read_table(out / manifest["entries"])


def _settings_key(identity: dict, settings: dict) -> str:
    return hashlib.sha1(json.dumps([identity, settings], sort_keys=True).encode()).hexdigest()


def _read_partials(partial: Path, key: str) -> list[tuple]:
    """``(table, skipped)`` of each chunk of an interrupted build with the same settings; others are removed."""
    import pyarrow.parquet as pq

    found = []
    for path in sorted(partial.glob("part-*.parquet")):
        try:
            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[store.META_KEY])
        except Exception as err:  # a damaged chunk (killed while renaming is impossible, but disks fail)
            logger.warning(
                "%s: unreadable chunk of an interrupted build (%s); encoding its files again", path, err
            )
            path.unlink(missing_ok=True)
            continue
        if meta.get("settings_key") != key:
            path.unlink()
            continue
        found.append((table, meta.get("skipped", [])))
    for tmp in partial.glob("*.tmp"):
        tmp.unlink()
    return found


def _take(table, keys: set[str]):
    """The rows of ``table`` whose ``file_key`` is in ``keys``."""
    import pyarrow as pa

    rows = [i for i, k in enumerate(table.column("file_key").to_pylist()) if k in keys]
    return table.take(pa.array(rows, pa.int64()))


# ---------------------------------------------------------------------- 1. plan: what to index
@dataclass(frozen=True)
class Sources:
    """What a build indexes: the files and their roots, and the settings an index is kept for."""

    files: list[VideoFile]
    roots: list[str]
    missing: list[dict]  # skipped records of dataset videos that have no file
    settings: dict  # recorded in the manifest; an index with other settings is refused (or --rebuild)
    frames: int | None  # the dataset's frames and words, where the model does not decide them
    words: int | None


def list_sources(
    videos, dataset, *, split: str, annotations, video_root, window, adapters, frames, words
) -> Sources:
    """The files of ``videos`` folders, or of a ``dataset`` split (exactly one of the two)."""
    if (videos is None) == (dataset is None):
        raise UsageError(
            "index either video folders (videos=[...]) or a dataset split (dataset=NAME), not both"
        )
    if window is not None and not window >= 1:
        raise UsageError(f"window={window}: expected seconds >= 1 (the frame sampler works in whole seconds)")
    if dataset is None:
        files, roots = list_folders(videos)
        return Sources(files, roots, [], {"mode": "folder", "window": window}, frames, words)
    from shared.datasets import get_dataset

    source = get_dataset(dataset, split, annotations, video_root)
    files, roots, missing = list_dataset(dataset, split, annotations, video_root)
    settings = {"mode": "dataset", "dataset": dataset, "split": split, "window": window}
    frames = frames or (source.frames if adapters is None else None)  # as the evaluator chooses
    return Sources(files, roots, missing, settings, frames, words or source.words)


# ---------------------------------------------------------------------- 2-4. the run's state
class IndexBuild:
    """One build of ``out``: the rows gathered so far (kept, resumed, encoded) and the skipped files.

    :meth:`keep_previous` (rows of unchanged files), :meth:`resume` (chunks of an interrupted build),
    :meth:`add_chunk` (each newly encoded chunk, written to ``partial/`` first), :meth:`write` (the next
    generation); :meth:`todo` is what is left to encode.
    """

    def __init__(self, out: Path, sources: Sources, encoder: Encoder):
        self.out, self.sources, self.encoder = out, sources, encoder
        self.summary = BuildSummary(index=str(out), files_listed=len(sources.files) + len(sources.missing))
        self.current = {f.key for f in sources.files}
        self.parts: list = []  # pyarrow tables of rows
        self.skipped = {s["key"]: s for s in sources.missing}  # file key -> skipped record
        self.done: set[str] = set()  # file keys with rows or a skipped record
        self.manifest: dict | None = None  # of the generation this build replaces
        self.partial = out / store.PARTIAL
        self.key = _settings_key(model_identity(encoder.provenance), sources.settings)
        self.next_part = 0

    def keep_previous(self, rebuild: bool) -> None:
        """Rows of files unchanged since the last generation; unchanged unreadable files stay skipped."""
        self.manifest, previous = _read_previous(
            self.out, self.encoder.provenance, self.sources.settings, rebuild
        )
        if previous is None:
            return
        kept = _take(previous, self.current)
        self.done |= set(kept.column("file_key").to_pylist())
        self.summary.files_kept = len(self.done)
        self.summary.files_removed = len(set(previous.column("file_key").to_pylist()) - self.done)
        self.parts.append(kept)
        for record in self.manifest["skipped"]:
            if record["key"] in self.current:  # unchanged and unreadable: not retried until it changes
                self.skipped[record["key"]] = record
                self.done.add(record["key"])

    def resume(self) -> None:
        """Rows of an interrupted build's chunks (``partial/``) made with the same model and settings."""
        self.partial.mkdir(parents=True, exist_ok=True)
        resumed: set[str] = set()
        wanted = self.current - self.done
        for table, chunk_skipped in _read_partials(self.partial, self.key):
            rows = _take(table, wanted)
            self.parts.append(rows)
            resumed |= set(rows.column("file_key").to_pylist())
            for record in chunk_skipped:
                if record["key"] in wanted:
                    self.skipped[record["key"]] = record
                    resumed.add(record["key"])
        self.done |= resumed
        self.summary.files_resumed = len(resumed)
        self.next_part = len(list(self.partial.glob("part-*.parquet")))

    def todo(self) -> list[VideoFile]:
        return [f for f in self.sources.files if f.key not in self.done]

    def add_chunk(self, result: tuple[dict, np.ndarray, list[dict]]) -> None:
        """Take an encoded chunk (:func:`encode_chunk`'s result), first written to ``partial/``."""
        rows, embeddings, chunk_skipped = result
        table = store.rows_table(rows, embeddings, {"settings_key": self.key, "skipped": chunk_skipped})
        store.write_atomic(table, self.partial / f"part-{self.next_part:06d}.parquet")
        self.next_part += 1
        self.parts.append(table)
        for record in chunk_skipped:
            self.skipped[record["key"]] = record
            logger.warning("skipped %s: %s", record["path"], record["reason"])
        self.summary.files_encoded += len(set(rows["file_key"])) + len(chunk_skipped)

    def write(self, ann_backend: str, exact_below: int) -> None:
        """The rows as the next generation (table, ANN index, then the manifest); old ones removed."""
        table = self._table()
        generation = (self.manifest or {}).get("generation", 0) + 1
        entries = f"entries-{generation}.parquet"
        file_meta = {
            "format": store.FORMAT_NAME,
            "format_version": store.FORMAT_VERSION,
            "provenance": self.encoder.provenance,
            "settings": self.sources.settings,
        }
        store.write_atomic(
            table.replace_schema_metadata({store.META_KEY: json.dumps(file_meta).encode()}),
            self.out / entries,
        )
        ann_name = None
        if len(table) >= exact_below:
            ann = build_ann(store.embeddings_of(table), ann_backend)
            ann_name = f"ann-{generation}{ann.suffix}"
            ann.save(self.out / ann_name)
            self.summary.ann = ann_backend
        self.summary.entries = len(table)
        self.summary.files_skipped = len(self.skipped)
        self.summary.skipped = sorted(self.skipped.values(), key=lambda s: s["path"])
        store.write_manifest(self.out, self._manifest(generation, entries, ann_name, table))
        for old in list(self.out.glob("entries-*.parquet")) + list(self.out.glob("ann-*")):
            if old.name not in (entries, ann_name):
                old.unlink()
        shutil.rmtree(self.partial, ignore_errors=True)

    def _table(self):
        """Every gathered row in one table, in listing order (then window start); refuses an empty one."""
        import pyarrow as pa

        target = store.schema(int(self.encoder.model.embed_dim))
        tables = [p.replace_schema_metadata(None) for p in self.parts]
        tables = [t.cast(target) if t.schema != target else t for t in tables]
        table = pa.concat_tables(tables) if tables else target.empty_table()
        if len(table) == 0:
            first = next(iter(self.skipped.values()), {})
            raise DiscoVLAError(
                f"no video could be indexed: all {len(self.skipped)} files were skipped "
                f"(first: {first.get('path')}: {first.get('reason')})"
            )
        order = {f.key: i for i, f in enumerate(self.sources.files)}
        sort_key = [
            (order.get(k, len(order)), s if s is not None else -1.0)
            for k, s in zip(
                table.column("file_key").to_pylist(), table.column("start").to_pylist(), strict=True
            )
        ]
        return table.take(pa.array(sorted(range(len(sort_key)), key=sort_key.__getitem__), pa.int64()))

    def _manifest(self, generation: int, entries: str, ann_name: str | None, table) -> dict:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return {
            "format": store.FORMAT_NAME,
            "format_version": store.FORMAT_VERSION,
            "generation": generation,
            "entries": entries,
            "ann": ann_name,
            "ann_backend": self.summary.ann if ann_name else None,
            "count": len(table),
            "files": len(set(table.column("file_key").to_pylist())),
            "dim": int(self.encoder.model.embed_dim),
            "provenance": self.encoder.provenance,
            "settings": self.sources.settings,
            "roots": self.sources.roots,
            "skipped": self.summary.skipped,
            "created_at": (self.manifest or {}).get("created_at", now),
            "updated_at": now,
            "last_build": {k: v for k, v in asdict(self.summary).items() if k not in ("skipped", "index")},
        }


# ---------------------------------------------------------------------- 3. encode what is left
@dataclass(frozen=True)
class RayOptions:
    """Encode with ``workers`` Ray actors of ``cpus_per_worker`` CPUs each (0 workers: in this process)."""

    workers: int = 0
    cpus_per_worker: float = 1.0
    address: str | None = None


def encode_files(
    run: IndexBuild,
    files: list[VideoFile],
    *,
    chunk_files: int,
    chunk_args: dict,
    ray: RayOptions,
    encoder_args: dict,
    progress: bool,
) -> None:
    """Encode ``files`` ``chunk_files`` at a time, each chunk handed to ``run.add_chunk`` when done."""
    from tqdm import tqdm

    chunks = [files[i : i + chunk_files] for i in range(0, len(files), chunk_files)]
    logger.info(
        "%d files to encode (%d unchanged, %d resumed) in %d chunks",
        len(files),
        run.summary.files_kept,
        run.summary.files_resumed,
        len(chunks),
    )
    if ray.workers > 0:
        _run_ray(chunks, encoder_args, chunk_args, ray, on_result=run.add_chunk, progress=progress)
        return
    with tqdm(total=len(files), desc="videos", unit="video", disable=not progress) as bar:
        for chunk in chunks:
            run.add_chunk(encode_chunk(run.encoder, chunk, **chunk_args))
            bar.update(len(chunk))


# ---------------------------------------------------------------------- the whole build
def build_index(
    out: str | Path,
    *,
    videos: list[str | Path] | None = None,
    dataset: str | None = None,
    split: str = "test",
    annotations=None,
    video_root=None,
    adapters: str | Path | None,
    backbone: str | None = None,
    pretrained=...,
    frames: int | None = None,
    words: int | None = None,
    window: float | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    device="cpu",
    ray_workers: int = 0,
    cpus_per_worker: float = 1.0,
    ray_address: str | None = None,
    chunk_files: int = 64,
    ann_backend: str = DEFAULT_BACKEND,
    exact_below: int = EXACT_BELOW,
    rebuild: bool = False,
    decode_short_side: int | None = None,
    decode_timeout_s: float | None = 60.0,
    progress: bool = True,
) -> BuildSummary:
    """Build or update the index folder ``out``; see the module docstring. Returns the run's summary.

    The steps: plan (:func:`list_sources`), keep and resume (:class:`IndexBuild`), encode
    (:func:`encode_files`), write (:meth:`IndexBuild.write`).
    """
    started = time.perf_counter()
    sources = list_sources(
        videos,
        dataset,
        split=split,
        annotations=annotations,
        video_root=video_root,
        window=window,
        adapters=adapters,
        frames=frames,
        words=words,
    )
    require_backend(ann_backend)  # a missing optional package is named now, not after the encoding
    encoder_args = dict(
        adapters=adapters,
        backbone=backbone,
        pretrained=pretrained,
        frames=sources.frames,
        words=sources.words,
        device=device,
        decode_short_side=decode_short_side,
        decode_timeout_s=decode_timeout_s,
    )
    run = IndexBuild(Path(out), sources, Encoder.load(**encoder_args))
    run.keep_previous(rebuild)
    run.resume()
    encode_started = time.perf_counter()
    if todo := run.todo():
        encode_files(
            run,
            todo,
            chunk_files=chunk_files,
            chunk_args=dict(window_s=window, batch_size=batch_size, num_workers=num_workers),
            ray=RayOptions(ray_workers, cpus_per_worker, ray_address),
            encoder_args=encoder_args,
            progress=progress,
        )
    run.summary.encode_seconds = time.perf_counter() - encode_started
    run.write(ann_backend, exact_below)
    run.summary.seconds = time.perf_counter() - started
    return run.summary
