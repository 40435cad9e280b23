"""Where shards live: any pyarrow filesystem, addressed by a local path, a URI or an explicit filesystem.

Public API::

    Location(fs, path)                       # a filesystem and a path inside it ('/'-separated)
    resolve(path_or_uri, filesystem=None) -> Location
    Location.join(*names) -> Location; .uri; .exists(); .list_names(); .walk(); .read_bytes(); .write_bytes(data)
    read_json_manifest(loc, format_name, error, missing) -> dict   # a JSON object of a known "format", or error
    field_problem(obj, fields, prefix="") -> str | None   # which field is absent or of the wrong type

``resolve("s3://bucket/captions?endpoint_override=127.0.0.1:9000&scheme=http")`` uses
``pyarrow.fs.FileSystem.from_uri`` (query parameters configure the filesystem); passing
``filesystem=`` uses that filesystem and takes ``path_or_uri`` as a path in it (a leading
``scheme://`` is dropped). Writes: on a local disk, a hidden temporary file renamed into place; on an
object store (no atomic rename) one PUT of the whole object, which stores either all or nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow.fs as pafs

_RENAME_FILESYSTEMS = {"local"}  # where a rename is atomic; everything else gets direct writes
_OBJECT_STORES = {"s3", "gcs"}  # no directories: creating one only adds an empty marker object


@dataclass(frozen=True)
class Location:
    """A path inside a pyarrow filesystem; ``display`` is what error messages show."""

    fs: pafs.FileSystem
    path: str
    display: str = ""

    def __str__(self) -> str:
        return self.display or self.uri

    @property
    def uri(self) -> str:
        scheme = self.fs.type_name
        return self.path if scheme == "local" else f"{scheme}://{self.path}"

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def join(self, *names: str) -> Location:
        for name in names:
            if name in ("", ".", "..") or "/" in name or "\\" in name:
                raise ValueError(f"{self}: refusing the path component {name!r} (not a plain file name)")
        path = posixpath.join(self.path, *names)
        return Location(self.fs, path, posixpath.join(str(self), *names))

    def parent(self) -> Location:
        return Location(self.fs, posixpath.dirname(self.path.rstrip("/")), "")

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory

    def list_names(self) -> list[str]:
        """File names directly inside this directory (empty when it does not exist)."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=False)
        infos = self.fs.get_file_info(selector)
        return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)

    def walk(self) -> list[str]:
        """Paths of every file below this directory, relative to it ('/'-separated), sorted; what a
        directory reader such as ``pyarrow.dataset`` or ``pandas.read_parquet(dir)`` would consider."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=True)
        infos = self.fs.get_file_info(selector)
        base = self.path.rstrip("/") + "/"
        return sorted(
            i.path[len(base) :] if i.path.startswith(base) else posixpath.basename(i.path)
            for i in infos
            if i.type == pafs.FileType.File
        )

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def write_bytes(self, data: bytes) -> None:
        """Write the whole object so that a reader sees either nothing or all of it."""
        parent = posixpath.dirname(self.path)
        if parent and self.fs.type_name not in _OBJECT_STORES:
            self.fs.create_dir(parent, recursive=True)
        if self.fs.type_name not in _RENAME_FILESYSTEMS:
            with self.fs.open_output_stream(self.path) as out:
                out.write(data)
            return
        tmp = posixpath.join(parent, f".{self.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, self.path)
        finally:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(tmp)

    def delete(self) -> None:
        if self.exists():
            self.fs.delete_file(self.path)


def resolve(path_or_uri: str | os.PathLike | Location, filesystem: pafs.FileSystem | None = None) -> Location:
    """A :class:`Location` for a local path, a URI (``s3://``, ``gs://``, ``file://``) or a path in
    ``filesystem``."""
    if isinstance(path_or_uri, Location):
        return path_or_uri
    text = os.fspath(path_or_uri)
    display = text.split("?", 1)[0]
    if filesystem is not None:
        parts = urlsplit(text)
        path = f"{parts.netloc}{parts.path}" if parts.scheme and "://" in text else text
        if filesystem.type_name == "local":
            path = os.path.abspath(path)
        return Location(filesystem, path.rstrip("/") or "/", display)
    if "://" not in text:
        return Location(pafs.LocalFileSystem(), os.path.abspath(text), display)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as err:  # pyarrow.ArrowInvalid is a ValueError
        raise ValueError(f"{display}: cannot open this URI with pyarrow.fs ({err})") from err
    return Location(fs, path.rstrip("/") or "/", display)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_json_manifest(
    loc: Location, format_name: str, error: Callable[[str, str], Exception], missing: str
) -> dict:
    """The JSON object at ``loc`` whose ``"format"`` is ``format_name``; anything else raises
    ``error(str(loc), problem)``: ``missing`` when there is no file, or what is wrong with it.

    The first check of every manifest this project writes beside its data (caption sets, frame stores,
    video indexes); each caller then checks the fields of its own format.
    """
    where = str(loc)
    try:
        manifest = json.loads(loc.read_bytes())
    except FileNotFoundError as err:
        raise error(where, missing) from err
    except (ValueError, UnicodeDecodeError) as err:
        raise error(where, f"manifest is not JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise error(where, f"not a {format_name} manifest (format {found!r}, expected {format_name!r})")
    return manifest


_TYPE_NAMES = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _type_name(expected) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)


def field_problem(obj: dict, fields: dict, prefix: str = "") -> str | None:
    """What is wrong with the fields of the JSON object ``obj`` (``None`` when nothing is), naming the field.

    ``fields`` maps each name to the type (or tuple of types) its value must have; ``float`` accepts whole
    numbers too, ``int`` refuses ``true``/``false`` (JSON booleans are Python ints). ``prefix`` names where
    ``obj`` sits (``'shards[3].'``). Every manifest reader checks the fields it uses with this before using
    them, so a hand-edited manifest ends in one message naming the field, never in a ``TypeError``.
    """
    if not isinstance(obj, dict):
        return f"{prefix.rstrip('.') or 'the manifest'} is {type(obj).__name__}, expected an object"
    for name, expected in fields.items():
        kinds = expected if isinstance(expected, tuple) else (expected,)
        if name not in obj:
            return f'lacks the field "{prefix}{name}" ({_type_name(expected)})'
        value = obj[name]
        accepted = isinstance(value, kinds) or (float in kinds and isinstance(value, int))
        if isinstance(value, bool) and bool not in kinds:
            accepted = False
        if not accepted:
            return f'field "{prefix}{name}" is {json.dumps(value)[:60]}, expected {_type_name(expected)}'
    return None
