"""Nearest neighbours by inner product over L2-normalised embeddings: exact, or an ANN index beside the table.

Below :data:`EXACT_BELOW` vectors every query is a matrix-vector product over all of them (exact, and a few
milliseconds). From there on an approximate index is built and saved beside the Parquet table:

- ``faiss`` (default): ``IndexIVFFlat`` with inner product, ``nlist`` ≈ √N coarse cells trained by k-means on
  a sample, ``nprobe`` cells scanned per query. It stores the full float32 vectors, so a probed candidate's
  score is exact; only candidates in unprobed cells can be missed.
- ``usearch``: an HNSW graph (``connectivity`` 16, ``expansion_search`` 128), kept as the alternative; an
  optional extra (``pip install 'discovla[search-usearch]'``), imported on first use, and a clear
  :class:`AnnBackendMissingError` naming the extra when it is not installed.

Chosen by ``benchmarks/search.py`` on these 2-core machines: see the README's "Search your videos" for
the measured recall, latency and build times of both. Results are ``(positions, scores)``, best first; ties
go to the lower position, as in a stable sort.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from shared.errors import DiscoVLAError

EXACT_BELOW = 50_000  # vectors; below this, exact search (a query costs ~ N·D multiply-adds)
BACKENDS = ("faiss", "usearch")
DEFAULT_BACKEND = "faiss"
FAISS_NPROBE = 64  # cells scanned per query: 20 % of them at 100k vectors, 6.4 % at 1M
KMEANS_ITERATIONS = 10  # of the coarse quantizer's training (faiss's default is 25)
USEARCH_EXPANSION = 128


class AnnIndexError(DiscoVLAError, ValueError):
    """An ANN index file that cannot be read or does not match its table."""


class AnnBackendMissingError(DiscoVLAError, ImportError):
    """An ANN backend whose optional package is not installed; the message names the extra to install."""


EXTRAS = {"usearch": "search-usearch"}  # backend -> the optional extra of pyproject.toml that installs it


def _usearch_index():
    """``usearch.index.Index``, or :class:`AnnBackendMissingError` naming the extra that installs it."""
    try:
        from usearch.index import Index
    except ImportError as err:
        raise AnnBackendMissingError(
            f"the usearch ANN backend needs the optional package usearch ({err}); install it with "
            f"pip install 'discovla[{EXTRAS['usearch']}]', or use the default backend (--ann faiss)"
        ) from None
    return Index


def require_backend(backend: str) -> None:
    """Refuse an unknown ``backend`` or one whose optional package is missing, before any work is done."""
    if backend not in ANN_CLASSES:
        raise ValueError(f"unknown ANN backend {backend!r}; expected one of {list(ANN_CLASSES)}")
    if backend == "usearch":
        _usearch_index()


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest ``scores``, best first; ties broken by the lower position."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(scores):
        cut = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th largest value
        candidates = np.flatnonzero(scores >= cut)  # every tie of the cut value too, in position order
    else:
        candidates = np.arange(len(scores))
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order[:k]].astype(np.int64)


def exact_search(embeddings: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(positions [k], scores [k])`` of the best ``k`` rows of ``embeddings`` [N, D] for ``query`` [D]."""
    scores = embeddings @ query  # [N]
    best = top_k(scores, k)
    return best, scores[best]


def _faiss():
    import faiss

    return faiss


class FaissIVF:
    """faiss ``IndexIVFFlat`` (inner product) over the table's rows, ids = row positions."""

    suffix = ".faiss"

    def __init__(self, index):
        self.index = index

    @classmethod
    def build(cls, embeddings: np.ndarray, *, seed: int = 0) -> FaissIVF:
        faiss = _faiss()
        n, d = embeddings.shape
        nlist = max(1, min(int(math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per cell
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = (
            embeddings[rng.choice(n, min(n, 64 * nlist), replace=False)] if n > 64 * nlist else embeddings
        )
        index.cp.seed = seed
        index.cp.niter = KMEANS_ITERATIONS
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
        index.nprobe = min(FAISS_NPROBE, nlist)
        return cls(index)

    def save(self, path: Path) -> None:
        _faiss().write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path) -> FaissIVF:
        try:
            index = _faiss().read_index(str(path))
        except RuntimeError as err:
            raise AnnIndexError(
                f"{path}: not a readable faiss index ({str(err).splitlines()[0]}); "
                "rebuild it with python -m pipelines.index"
            ) from None
        if hasattr(index, "nprobe"):
            _faiss().extract_index_ivf(index).nprobe = min(FAISS_NPROBE, index.nlist)
        return cls(index)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.ascontiguousarray(query[None], dtype=np.float32), k)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]


class UsearchHNSW:
    """usearch HNSW graph (inner product) over the table's rows, keys = row positions."""

    suffix = ".usearch"

    def __init__(self, index):
        self.index = index

    @classmethod
    def build(cls, embeddings: np.ndarray, *, threads: int = 0) -> UsearchHNSW:
        index = _usearch_index()(
            ndim=embeddings.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=16,
            expansion_add=128,
            expansion_search=USEARCH_EXPANSION,
        )
        index.add(
            np.arange(len(embeddings)), np.ascontiguousarray(embeddings, dtype=np.float32), threads=threads
        )
        return cls(index)

    def save(self, path: Path) -> None:
        self.index.save(str(path))

    @classmethod
    def load(cls, path: Path) -> UsearchHNSW:
        restore = _usearch_index().restore
        try:
            index = restore(str(path))
        except (RuntimeError, ValueError) as err:
            raise AnnIndexError(f"{path}: not a readable usearch index ({err}); rebuild it") from None
        if index is None:
            raise AnnIndexError(f"{path}: not a usearch index; rebuild it with python -m pipelines.index")
        index.expansion_search = USEARCH_EXPANSION
        return cls(index)

    @property
    def size(self) -> int:
        return len(self.index)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.index.search(np.ascontiguousarray(query, dtype=np.float32), k)
        return found.keys.astype(np.int64), (1.0 - found.distances).astype(
            np.float32
        )  # ip distance = 1 - dot


ANN_CLASSES = {"faiss": FaissIVF, "usearch": UsearchHNSW}


def build_ann(embeddings: np.ndarray, backend: str = DEFAULT_BACKEND):
    """An ANN index of ``backend`` over ``embeddings`` [N, D] (float32, L2-normalised rows)."""
    require_backend(backend)
    return ANN_CLASSES[backend].build(embeddings)


def load_ann(path: Path, backend: str, expected_size: int):
    """The ANN index at ``path``, checked to hold ``expected_size`` vectors (the table's rows)."""
    if backend not in ANN_CLASSES:
        raise AnnIndexError(f"{path}: unknown ANN backend {backend!r}; expected one of {list(ANN_CLASSES)}")
    if not path.is_file():
        raise AnnIndexError(f"{path}: the ANN index is missing; rebuild it with python -m pipelines.index")
    ann = ANN_CLASSES[backend].load(path)
    if ann.size != expected_size:
        raise AnnIndexError(
            f"{path}: holds {ann.size} vectors, the table has {expected_size} rows; "
            "the index is damaged or from another build: rebuild it"
        )
    return ann
