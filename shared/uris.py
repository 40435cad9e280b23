"""Locations written as strings: a local path, or a URI of any pyarrow filesystem with its options.

A URI keeps pyarrow's options in its query (``s3://bucket/prefix?endpoint_override=host:port&scheme=http``),
so a location below it must go before the query, not after it::

    join_uri("s3://b/captions?endpoint_override=h:9", "frames") == "s3://b/captions/frames?endpoint_override=h:9"
    join_uri("/data/captions", "frames") == "/data/captions/frames"

Imports nothing heavy: the command-line fast paths use it before pyarrow is loaded.
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit, urlunsplit


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and "://" in path


def join_uri(base: str | os.PathLike, *names: str) -> str:
    """``names`` ('/'-separated relative paths) below ``base``: inside a URI before its query (percent-
    encoded; pyarrow decodes them), or joined as a local path."""
    if not is_uri(base):
        return os.path.join(os.fspath(base), *names)
    parts = urlsplit(base)
    path = "/".join([parts.path.rstrip("/"), *(quote(n.strip("/"), safe="/") for n in names)])
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
