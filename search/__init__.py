"""Search your own videos with trained adapters: an index of video windows, text queries, a web page.

``VideoIndex.build`` encodes every video (or fixed window) with the evaluator's video encoder and writes a
Parquet table (+ an ANN index for large collections); ``VideoIndex.open(...).search(text)`` ranks it with the
same adapters' text tower. ``search.web`` serves the page. See :mod:`search.index`.
"""

from search.build import BuildSummary, IndexMismatchError, build_index
from search.encode import EmptyQueryError, Encoder
from search.index import BadKError, SearchResult, VideoIndex
from search.sources import NoVideosError
from search.store import IndexFormatError

__all__ = [
    "VideoIndex",
    "SearchResult",
    "Encoder",
    "BuildSummary",
    "build_index",
    "IndexMismatchError",
    "IndexFormatError",
    "EmptyQueryError",
    "NoVideosError",
    "BadKError",
]
