"""How storage problems and storage URIs are shown to users: one line each, naming the URI, no secrets.

Every reader of videos, caption sets, frame stores and leases turns a pyarrow / ``OSError`` failure
into one of these lines with :func:`storage_error_line`::

    s3://videos/a.mp4: no such object (nothing is stored under this key)
    s3://videos/a.mp4: the bucket 'videos' does not exist (check the bucket name and the endpoint)
    s3://videos/a.mp4: access denied (check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ...)
    s3://videos/a.mp4: the endpoint 127.0.0.1:9 cannot be reached (check endpoint_override / ...)

Credentials and endpoints travel the ecosystem's way and nothing of the project's own: the standard
``AWS_*`` environment variables and ``~/.aws`` files, and pyarrow's URI options
(``?endpoint_override=host:port&scheme=http``, ``region=...``). pyarrow reports a missing object and
an object in a missing bucket alike ("Path does not exist"); :func:`storage_error_line` tells them
apart with one more request, on the error path only, when it is given the filesystem.

:func:`display_uri` is what the project records and prints for a URI: the URI as given, with secrets
removed (``user:secret@`` userinfo and ``access_key`` / ``secret_key`` / ``session_token`` query
options). Endpoint options (``endpoint_override``, ``scheme``, ``region``) are kept: they say where
the data is, and a reader on another machine needs them to find it again.
"""

from __future__ import annotations

import errno
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.errors import DiscoVLAError

SECRET_OPTIONS = frozenset({"access_key", "secret_key", "session_token"})

_DENIED = re.compile(
    r"ACCESS_DENIED|AccessDenied|INVALID_ACCESS_KEY_ID|InvalidAccessKeyId|SIGNATURE_DOES_NOT_MATCH|"
    r"SignatureDoesNotMatch|EXPIRED_TOKEN|ExpiredToken|Forbidden|HTTP status 403|\b403\b|Permission denied"
)
_NO_BUCKET = re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|bucket does not exist", re.IGNORECASE)
_NO_OBJECT = re.compile(
    r"Path does not exist|NO_SUCH_KEY|NoSuchKey|No such file or directory|\[errno 2\]|HTTP status 404"
)
_UNREACHABLE = re.compile(
    r"NETWORK_CONNECTION|Could not connect|Couldn't connect|Could not resolve host|"
    r"Couldn't resolve host|curlCode: (6|7|28)|Connection refused|timed out|Timeout was reached",
    re.IGNORECASE,
)


def display_uri(uri: str) -> str:
    """``uri`` as given, minus secrets (userinfo and secret query options); local paths unchanged."""
    text = str(uri)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in SECRET_OPTIONS]
        query = urlencode(kept, safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def storage_error_kind(err: BaseException) -> str:
    """``"missing_bucket"``, ``"missing_object"``, ``"denied"``, ``"unreachable"`` or ``"other"``."""
    text = str(err)
    if _NO_BUCKET.search(text):
        return "missing_bucket"
    if _DENIED.search(text) or isinstance(err, PermissionError):
        return "denied"
    if _UNREACHABLE.search(text):
        return "unreachable"
    if isinstance(err, FileNotFoundError) or _NO_OBJECT.search(text):
        return "missing_object"
    return "other"


def storage_error_line(uri: str, err: BaseException, filesystem=None) -> str:
    """One line naming ``uri`` (secrets removed) and what went wrong, with the fix where it is known.

    ``filesystem``: the pyarrow filesystem ``uri`` lives in; for an object store, a missing object is
    then checked once more to tell a missing bucket from a missing key.
    """
    return f"{display_uri(uri)}: {storage_error_reason(uri, err, filesystem)}"


def storage_error_reason(uri: str, err: BaseException, filesystem=None) -> str:
    """:func:`storage_error_line` without the leading URI (for errors that name it themselves)."""
    if "Read-only file system" in str(err) or getattr(err, "errno", None) == errno.EROFS:
        return "read-only file system (choose a writable location)"
    kind = storage_error_kind(err)
    if kind == "denied" and "://" not in str(uri):
        return "permission denied (choose a writable location or fix its permissions)"
    if kind == "missing_object" and bucket_missing(uri, filesystem):
        kind = "missing_bucket"
    if kind == "missing_bucket":
        return f"the bucket {_bucket(uri)!r} does not exist (check the bucket name and the endpoint)"
    if kind == "missing_object":
        if "://" in str(uri) and not str(uri).startswith("file://"):
            return "no such object (nothing is stored at this key)"
        return "no such file"
    if kind == "denied":
        return (
            "access denied (check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or ~/.aws/credentials, and the bucket's policy for this key)"
        )
    if kind == "unreachable":
        return (
            f"the endpoint {_endpoint(uri)} cannot be reached (check endpoint_override= in the URI or "
            "AWS_ENDPOINT_URL, that the server is up, and the network)"
        )
    return _first_line(err)


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _bucket(uri: str) -> str:
    return urlsplit(str(uri)).netloc.rpartition("@")[2]


def _endpoint(uri: str) -> str:
    options = dict(parse_qsl(urlsplit(str(uri)).query))
    return options.get("endpoint_override") or "(the default endpoint of the URI's scheme)"


def bucket_missing(uri: str, filesystem) -> bool:
    """Whether the bucket of an object-store ``uri`` is absent (False when unknown or not an object
    store): one request, for error paths and for listings that came back empty."""
    if filesystem is None or getattr(filesystem, "type_name", "") not in {"s3", "gcs"}:
        return False
    import pyarrow.fs as pafs

    try:
        return filesystem.get_file_info(_bucket(uri)).type == pafs.FileType.NotFound
    except OSError as err:
        return storage_error_kind(err) == "missing_bucket"


class StorageError(DiscoVLAError, OSError):
    """A storage location that cannot be used; the message is one :func:`storage_error_line`."""
