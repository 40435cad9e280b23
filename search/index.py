"""The Python API of the video search: :class:`VideoIndex` (``build``, ``open``, ``search``).

::

    from search import VideoIndex

    VideoIndex.build("my-index", videos=["~/footage"], adapters="runs/msrvtt/adapters/best", window=10)
    index = VideoIndex.open("my-index")
    for hit in index.search("a man pours water into a glass", k=5):
        print(hit.rank, f"{hit.score:.3f}", hit.path, hit.start, hit.end)

Queries are encoded by the text tower of the model the index was built with (the adapters named in its
provenance, checked by sha256): an index and a query encoder of other adapters, another backbone or other
pretrained weights are refused, naming both. Scores are cosine similarities (the evaluator ranks by the
same product scaled by λ).
"""

from __future__ import annotations

import logging
import operator
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from search import store
from search.ann import exact_search, load_ann
from search.build import BuildSummary, IndexMismatchError, build_index
from search.encode import Encoder, describe_model, model_identity
from shared.errors import DiscoVLAError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    rank: int  # 1 = best
    score: float  # cosine similarity of the query and the window's video feature
    entry: int  # row of the index's table
    video_id: str
    path: str
    start: float | None  # seconds; None = the whole video
    end: float | None
    duration: float | None  # of the video file, when it was probed (windowed indexes)

    def to_json(self) -> dict:
        return asdict(self)


class VideoIndex:
    """An opened index folder: its table, embeddings, ANN index and (loaded on first query) its encoder."""

    def __init__(self, directory: Path, manifest: dict, table, embeddings: np.ndarray, ann=None):
        self.directory, self.manifest, self.table = directory, manifest, table
        self.embeddings, self.ann = embeddings, ann
        self._columns = {
            c: table.column(c).to_pylist()
            for c in ("video_id", "root", "rel_path", "start", "end", "duration")
        }
        self._encoder: Encoder | None = None
        self._thumbnails = None

    # ---------------------------------------------------------------- building and opening
    @classmethod
    def build(cls, out: str | Path, **options) -> VideoIndex:
        """Build or update ``out`` (:func:`search.build.build_index` options) and open it.

        The run's :class:`~search.build.BuildSummary` is kept in ``index.last_build``.
        """
        summary = build_index(out, **options)
        index = cls.open(out)
        index.last_build = summary
        return index

    last_build: BuildSummary | None = None

    @classmethod
    def open(cls, directory: str | Path) -> VideoIndex:
        """Read an index folder; a damaged or foreign one raises :class:`search.store.IndexFormatError`."""
        directory = Path(directory)
        manifest = store.read_manifest(directory)
        path = directory / manifest["entries"]
        names = store.read_schema(path).names
        missing = [c for c in (*store.COLUMNS, "embedding") if c not in names]
        if missing:
            raise store.IndexFormatError(
                f"{directory / manifest['entries']}: lacks the columns {missing}; rebuild it"
            )
        table = store.read_table(path, [c for c in names if c != "thumbnail"])  # thumbnails: on first use
        embeddings = store.embeddings_of(table)
        if embeddings.shape != (manifest["count"], manifest["dim"]):
            raise store.IndexFormatError(
                f"{directory / manifest['entries']}: {embeddings.shape[0]} rows of dimension {embeddings.shape[1]}, "
                f"the manifest says {manifest['count']} x {manifest['dim']}; the index is damaged, rebuild it"
            )
        ann = None
        if manifest.get("ann"):
            ann = load_ann(directory / manifest["ann"], manifest.get("ann_backend"), len(embeddings))
        return cls(directory, manifest, table, embeddings, ann)

    # ---------------------------------------------------------------- facts
    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def provenance(self) -> dict:
        return self.manifest["provenance"]

    @property
    def roots(self) -> list[str]:
        return list(self.manifest["roots"])

    def describe(self) -> str:
        m = self.manifest
        return (
            f"{self.directory}: {m['count']} entries from {m['files']} videos under {', '.join(m['roots'])}; "
            f"{describe_model(m['provenance'])}; search {m.get('ann_backend') or 'exact'}; "
            f"{len(m.get('skipped', []))} files skipped; updated {m.get('updated_at')}"
        )

    # ---------------------------------------------------------------- the query encoder
    def use_encoder(self, encoder: Encoder) -> None:
        """Query with ``encoder``; refused unless it is the model the index was built with."""
        if model_identity(encoder.provenance) != model_identity(self.provenance):
            raise IndexMismatchError(
                f"{self.directory} was built with {describe_model(self.provenance)}; the query encoder has "
                f"{describe_model(encoder.provenance)}. Search with the adapters the index was built with, or "
                "rebuild the index with these"
            )
        self._encoder = encoder

    def load_encoder(self, adapters: str | Path | None = ..., pretrained=..., device="cpu") -> Encoder:
        """Load the index's model for queries (``adapters``/``pretrained`` override the recorded locations)."""
        p = self.provenance
        if adapters is ...:
            adapters = p.get("adapters")
            from shared.shards.storage import resolve  # a local folder or a URI (s3://...)

            if adapters is not None and not resolve(adapters).is_dir():
                raise FileNotFoundError(
                    f"{self.directory} was built with adapters {adapters}, which no longer "
                    "exist there; pass their new location (--adapters)"
                )
        encoder = Encoder.load(
            adapters,
            backbone=p["backbone"],
            pretrained=p["pretrained"] if pretrained is ... else pretrained,
            frames=p["frames"],
            words=p["words"],
            device=device,
        )
        self.use_encoder(encoder)
        return encoder

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self.load_encoder()
        return self._encoder

    # ---------------------------------------------------------------- search
    def search(self, query: str, k: int = 10) -> list[SearchResult]:
        """The ``k`` best windows for ``query`` (an empty query raises ``EmptyQueryError``)."""
        return self.search_vector(self.encoder.encode_texts([query])[0], k)

    def search_vector(self, vector: np.ndarray, k: int = 10, *, exact: bool = False) -> list[SearchResult]:
        """The ``k`` best windows for an L2-normalised query feature ``vector`` [D] (at most ``len(self)``)."""
        k = min(check_k(k), len(self))  # the ANN backends allocate k results: never more than the rows
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.embeddings.shape[1],):
            raise ValueError(
                f"query feature of shape {vector.shape}, the index holds {self.embeddings.shape[1]}-d"
            )
        if self.ann is None or exact:
            positions, scores = exact_search(self.embeddings, vector, k)
        else:
            positions, scores = self.ann.search(vector, k)
        return [
            self._result(rank, int(p), float(s))
            for rank, (p, s) in enumerate(zip(positions, scores, strict=True), 1)
        ]

    def _result(self, rank: int, row: int, score: float) -> SearchResult:
        c = self._columns
        return SearchResult(
            rank,
            score,
            row,
            c["video_id"][row],
            os.path.join(c["root"][row], c["rel_path"][row]),
            c["start"][row],
            c["end"][row],
            c["duration"][row],
        )

    def entry(self, row: int) -> SearchResult:
        """Row ``row`` as a result (rank 0, score 0); ``IndexError`` outside the table."""
        if not 0 <= row < len(self):
            raise IndexError(f"entry {row} is not in the index (0..{len(self) - 1})")
        return self._result(0, row, 0.0)

    def thumbnail(self, row: int) -> bytes:
        """The JPEG thumbnail of row ``row`` (the thumbnails column is read on first use)."""
        if self._thumbnails is None:
            self._thumbnails = store.read_table(
                self.directory / self.manifest["entries"], ["thumbnail"]
            ).column(0)
        self.entry(row)
        return self._thumbnails[row].as_py()

    def video_file(self, row: int) -> Path:
        """The file of row ``row``, refused (``PermissionError``) unless it lies inside an indexed root."""
        result = self.entry(row)
        return resolve_inside(self.roots, result.path)


def check_k(k: int) -> int:
    """``k`` when it asks for at least one result, else :class:`BadKError` (the CLI and the page say the same)."""
    try:
        value = None if isinstance(k, bool) else operator.index(k)  # int, numpy integers; not 2.0 or "2"
    except TypeError:
        value = None
    if value is None or value < 1:
        raise BadKError(f"k={k}: expected a whole number of results, at least 1")
    return value


class BadKError(DiscoVLAError, ValueError):
    """A number of results that is not a whole number of at least 1."""


def resolve_inside(roots: list[str], path: str) -> Path:
    """``path`` with symlinks resolved, if it lies inside one of ``roots``; else ``PermissionError``."""
    real = os.path.realpath(path)
    for root in roots:
        real_root = os.path.realpath(root)
        if real.startswith(real_root.rstrip(os.sep) + os.sep):
            return Path(real)
    raise PermissionError(f"{path}: outside the indexed folders; refused")
