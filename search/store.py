"""The on-disk index: a folder anyone can read with pandas, DuckDB or pyarrow.

::

    INDEX/
      manifest.json              format, version, generation, provenance, sources, settings, counts, skipped files
      entries-<g>.parquet        one row per video window: ids, paths, window, thumbnail (JPEG), embedding
      ann-<g>.faiss|.usearch     the ANN index over the rows (only from ann.EXACT_BELOW rows on)
      partial/part-<n>.parquet   encoded chunks of an unfinished build (resume after a kill)

A build writes generation ``g + 1`` beside the current one and replaces ``manifest.json`` atomically last,
so a reader always sees one complete generation; old generations and ``partial/`` are removed afterwards.
Embedding rows are float32, L2-normalised, in the column ``embedding`` (fixed-size list of D floats);
``start``/``end`` are seconds or null for a whole video. The Parquet file carries the provenance too (key
``discovla.index`` of its schema metadata).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared.errors import DiscoVLAError
from shared.shards.storage import field_problem, read_json_manifest, resolve

FORMAT_NAME = "discovla-video-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL = "partial"
META_KEY = b"discovla.index"
COLUMNS = (
    "video_id",
    "root",
    "rel_path",
    "start",
    "end",
    "duration",
    "size",
    "mtime_ns",
    "file_key",
    "thumbnail",
)


# The fields of manifest.json a reader uses, with their types (checked by read_manifest, named when wrong).
MANIFEST_FIELDS = {
    "generation": int,
    "entries": str,
    "ann": (str, type(None)),
    "ann_backend": (str, type(None)),
    "count": int,
    "files": int,
    "dim": int,
    "provenance": dict,
    "settings": dict,
    "roots": list,
    "skipped": list,
    "updated_at": str,
}
SKIPPED_FIELDS = {"key": str, "path": str, "reason": str}
PROVENANCE_FIELDS = {  # what opening an index and loading its query encoder read
    "backbone": str,
    "pretrained": (str, type(None)),
    "adapters": (str, type(None)),
    "frames": int,
    "words": int,
}


class IndexFormatError(DiscoVLAError, ValueError):
    """An index folder that is missing, damaged, or written by another format version."""


def schema(dim: int, metadata: dict | None = None) -> pa.Schema:
    fields = [
        pa.field("video_id", pa.string()),
        pa.field("root", pa.string()),
        pa.field("rel_path", pa.string()),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("duration", pa.float64()),
        pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("file_key", pa.string()),
        pa.field("thumbnail", pa.binary()),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
    ]
    meta = {META_KEY: json.dumps(metadata, sort_keys=True).encode()} if metadata is not None else None
    return pa.schema(fields, metadata=meta)


def rows_table(rows: dict[str, list], embeddings: np.ndarray, metadata: dict | None = None) -> pa.Table:
    """A table from column lists (:data:`COLUMNS`) and ``embeddings`` [n, D] float32."""
    dim = embeddings.shape[1]
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1), pa.float32())
    arrays = [pa.array(rows[c], schema(dim).field(c).type) for c in COLUMNS]
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, dim))
    return pa.Table.from_arrays(arrays, schema=schema(dim, metadata))


def embeddings_of(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column as a float32 [n, D] array (no copy when the column is one chunk)."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file and a rename (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=16384)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _parquet(read, path: Path):
    """``read(path)``, with a missing or damaged file turned into :class:`IndexFormatError` naming it."""
    try:
        return read(path)
    except FileNotFoundError:
        raise IndexFormatError(
            f"{path}: missing; the index is incomplete, rebuild it with python -m pipelines.index"
        ) from None
    except (pa.ArrowException, OSError) as err:
        raise IndexFormatError(
            f"{path}: not a readable Parquet table ({err}); the index file is damaged, "
            "rebuild it with python -m pipelines.index"
        ) from None


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet table of the index (``columns`` only, when given)."""
    return _parquet(lambda p: pq.read_table(p, columns=columns), path)


def read_schema(path: Path) -> pa.Schema:
    """The schema of a Parquet table of the index (read from its footer alone)."""
    return _parquet(pq.read_schema, path)


def write_manifest(directory: Path, manifest: dict) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)


def read_manifest(directory: str | Path) -> dict:
    """The checked ``manifest.json`` of an index folder."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        what = (
            "no such folder"
            if not directory.exists()
            else f"found {sorted(p.name for p in directory.iterdir())[:5]}"
        )
        raise IndexFormatError(f"{path}: not found ({what}); build an index with python -m pipelines.index")
    manifest = read_json_manifest(
        resolve(path),
        FORMAT_NAME,
        lambda where, problem: IndexFormatError(
            f"{where}: {problem}; (re)build it with python -m pipelines.index"
        ),
        "not found",  # a missing file is reported above, with what the folder holds
    )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {manifest.get('format_version')!r}, this code reads "
            f"version {FORMAT_VERSION}; rebuild the index with this version's pipelines.index"
        )
    problem = field_problem(manifest, MANIFEST_FIELDS)
    if problem is None:
        problem = field_problem(manifest["provenance"], PROVENANCE_FIELDS, "provenance.")
    if problem is None:
        problem = next(
            (field_problem(r, SKIPPED_FIELDS, f"skipped[{i}].") for i, r in enumerate(manifest["skipped"])),
            None,
        )
    if problem is None and not all(isinstance(r, str) for r in manifest["roots"]):
        problem = f'field "roots" is {json.dumps(manifest["roots"])[:60]}, expected a list of strings'
    if problem is None:
        for key in ("entries", "ann"):
            name = manifest[key]
            if name is not None and (name in ("", ".", "..") or "/" in name or "\\" in name):
                problem = f'field "{key}" is {name!r}, expected a file name inside the index folder'
    if problem is not None:
        raise IndexFormatError(
            f"{path}: {problem}; the index is damaged, rebuild it with python -m pipelines.index"
        )
    return manifest
