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
from shared.errors import DiscoVLAError, VideoDecodeError

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
    *,
    workers: int,
    cpus_per_worker: float,
    address: str | None,
    on_result,
    progress: bool,
) -> None:
    """Encode ``chunks`` with ``workers`` Ray actors, two chunks in flight each; ``on_result`` in the driver."""
    import ray
    from tqdm import tqdm

    from shared.errors import connect_ray

    if not ray.is_initialized():
        connect_ray(address, include_dashboard=False, log_to_driver=False)
    actor_class = ray.remote(num_cpus=cpus_per_worker)(ChunkEncoder)
    env = {"OMP_NUM_THREADS": str(max(1, int(cpus_per_worker)))}
    actors = [
        actor_class.options(runtime_env={"env_vars": env}).remote(encoder_args, chunk_args)
        for _ in range(workers)
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
    """Build or update the index folder ``out``; see the module docstring. Returns the run's summary."""
    import pyarrow as pa

    started = time.perf_counter()
    if (videos is None) == (dataset is None):
        raise ValueError(
            "index either video folders (videos=[...]) or a dataset split (dataset=NAME), not both"
        )
    if window is not None and not window >= 1:
        raise ValueError(f"window={window}: expected seconds >= 1 (the frame sampler works in whole seconds)")
    require_backend(ann_backend)  # a missing optional package is named now, not after the encoding
    out = Path(out)
    summary = BuildSummary(index=str(out))
    if dataset is not None:
        from shared.datasets import get_dataset

        source = get_dataset(dataset, split, annotations, video_root)
        files, roots, missing = list_dataset(dataset, split, annotations, video_root)
        words = words or source.words
        frames = frames or (source.frames if adapters is None else None)  # as the evaluator chooses
        settings = {"mode": "dataset", "dataset": dataset, "split": split, "window": window}
    else:
        files, roots = list_folders(videos)
        missing = []
        settings = {"mode": "folder", "window": window}
    encoder_args = dict(
        adapters=adapters,
        backbone=backbone,
        pretrained=pretrained,
        frames=frames,
        words=words,
        device=device,
        decode_short_side=decode_short_side,
        decode_timeout_s=decode_timeout_s,
    )
    encoder = Encoder.load(**encoder_args)
    identity = model_identity(encoder.provenance)
    summary.files_listed = len(files) + len(missing)

    manifest, previous = _read_previous(out, encoder.provenance, settings, rebuild)
    current = {f.key: f for f in files}
    order = {f.key: i for i, f in enumerate(files)}
    parts: list = []  # (column lists or a table, embeddings or None)
    skipped = {s["key"]: s for s in missing}
    done: set[str] = set()
    if previous is not None:
        keep = [i for i, key in enumerate(previous.column("file_key").to_pylist()) if key in current]
        kept_table = previous.take(pa.array(keep, pa.int64()))
        done |= set(kept_table.column("file_key").to_pylist())
        summary.files_kept = len(done)
        summary.files_removed = len(set(previous.column("file_key").to_pylist()) - done)
        parts.append(kept_table)
        for record in manifest.get("skipped", []):
            if record.get("key") in current:  # unchanged and unreadable: not retried until it changes
                skipped[record["key"]] = record
                done.add(record["key"])
    out.mkdir(parents=True, exist_ok=True)
    partial = out / store.PARTIAL
    partial.mkdir(exist_ok=True)
    key = _settings_key(identity, settings)
    resumed: set[str] = set()
    for table, chunk_skipped in _read_partials(partial, key):
        rows = [
            i for i, k in enumerate(table.column("file_key").to_pylist()) if k in current and k not in done
        ]
        parts.append(table.take(pa.array(rows, pa.int64())))
        resumed |= {table.column("file_key")[i].as_py() for i in rows}
        for record in chunk_skipped:
            if record["key"] in current and record["key"] not in done:
                skipped[record["key"]] = record
                resumed.add(record["key"])
    done |= resumed
    summary.files_resumed = len(resumed)

    todo = [f for f in files if f.key not in done]
    chunks = [todo[i : i + chunk_files] for i in range(0, len(todo), chunk_files)]
    counter = len(list(partial.glob("part-*.parquet")))
    meta = {"settings_key": key}
    chunk_args = dict(window_s=window, batch_size=batch_size, num_workers=num_workers)
    encode_started = time.perf_counter()

    def on_result(result) -> None:
        nonlocal counter
        rows, embeddings, chunk_skipped = result
        table = store.rows_table(rows, embeddings, {**meta, "skipped": chunk_skipped})
        store.write_atomic(table, partial / f"part-{counter:06d}.parquet")
        counter += 1
        parts.append(table)
        for record in chunk_skipped:
            skipped[record["key"]] = record
            logger.warning("skipped %s: %s", record["path"], record["reason"])
        summary.files_encoded += len(set(rows["file_key"])) + len(chunk_skipped)

    if chunks:
        logger.info(
            "%d files to encode (%d unchanged, %d resumed) in %d chunks",
            len(todo),
            summary.files_kept,
            summary.files_resumed,
            len(chunks),
        )
        if ray_workers > 0:
            _run_ray(
                chunks,
                encoder_args,
                chunk_args,
                workers=ray_workers,
                cpus_per_worker=cpus_per_worker,
                address=ray_address,
                on_result=on_result,
                progress=progress,
            )
        else:
            from tqdm import tqdm

            with tqdm(total=len(todo), desc="videos", unit="video", disable=not progress) as bar:
                for chunk in chunks:
                    on_result(encode_chunk(encoder, chunk, **chunk_args))
                    bar.update(len(chunk))
    summary.encode_seconds = time.perf_counter() - encode_started

    _write_generation(
        out, manifest, parts, encoder, settings, roots, order, skipped, ann_backend, exact_below, summary
    )
    shutil.rmtree(partial, ignore_errors=True)
    summary.files_skipped = len(skipped)
    summary.skipped = sorted(skipped.values(), key=lambda s: s["path"])
    summary.seconds = time.perf_counter() - started
    return summary


def _write_generation(
    out: Path,
    manifest: dict | None,
    parts: list,
    encoder: Encoder,
    settings: dict,
    roots: list,
    order: dict,
    skipped: dict,
    ann_backend: str,
    exact_below: int,
    summary: BuildSummary,
) -> None:
    import pyarrow as pa

    dim = int(encoder.model.embed_dim)
    target = store.schema(dim)
    tables = [
        t.cast(target) if t.schema != target else t for t in (p.replace_schema_metadata(None) for p in parts)
    ]
    table = pa.concat_tables(tables) if tables else target.empty_table()
    sort_key = [
        (order.get(k, len(order)), s if s is not None else -1.0)
        for k, s in zip(table.column("file_key").to_pylist(), table.column("start").to_pylist(), strict=True)
    ]
    table = table.take(pa.array(sorted(range(len(sort_key)), key=sort_key.__getitem__), pa.int64()))
    if len(table) == 0:
        raise DiscoVLAError(
            f"no video could be indexed: all {len(skipped)} files were skipped "
            f"(first: {next(iter(skipped.values()), {}).get('path')}: "
            f"{next(iter(skipped.values()), {}).get('reason')})"
        )
    generation = (manifest or {}).get("generation", 0) + 1
    provenance = encoder.provenance
    entries = f"entries-{generation}.parquet"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    file_meta = {
        "format": store.FORMAT_NAME,
        "format_version": store.FORMAT_VERSION,
        "provenance": provenance,
        "settings": settings,
    }
    store.write_atomic(
        table.replace_schema_metadata({store.META_KEY: json.dumps(file_meta).encode()}), out / entries
    )
    ann_name = None
    if len(table) >= exact_below:
        ann = build_ann(store.embeddings_of(table), ann_backend)
        ann_name = f"ann-{generation}{ann.suffix}"
        ann.save(out / ann_name)
        summary.ann = ann_backend
    summary.entries = len(table)
    new = {
        "format": store.FORMAT_NAME,
        "format_version": store.FORMAT_VERSION,
        "generation": generation,
        "entries": entries,
        "ann": ann_name,
        "ann_backend": ann_backend if ann_name else None,
        "count": len(table),
        "files": len(set(table.column("file_key").to_pylist())),
        "dim": dim,
        "provenance": provenance,
        "settings": settings,
        "roots": roots,
        "skipped": sorted(skipped.values(), key=lambda s: s["path"]),
        "created_at": (manifest or {}).get("created_at", now),
        "updated_at": now,
        "last_build": {k: v for k, v in asdict(summary).items() if k not in ("skipped", "index")},
    }
    store.write_manifest(out, new)
    for old in list(out.glob("entries-*.parquet")) + list(out.glob("ann-*")):
        if old.name not in (entries, ann_name):
            old.unlink()
