"""The run folder: where a training run writes (a local working folder) and where its files end up.

``output_dir`` is a local path or any pyarrow filesystem URI (``s3://bucket/runs/x?endpoint_override=
127.0.0.1:9000&scheme=http``, ``gs://...``; credentials the ecosystem's way: ``AWS_*`` variables, config
files, instance roles)::

    run = RunDir(cfg.output_dir, rank=rank)
    run.local                        # the folder the recipe writes into (output_dir itself when local)
    run.checkpoint_to_resume()       # output_dir/checkpoint as a local folder (downloaded when remote)
    run.fetch_history()              # remote: metrics.jsonl and tb/ as the last published state left them
    run.publish("config.yaml", "tb") # mirror finished files (a folder: every file below it that changed)
    run.publish_checkpoint()         # output_dir/checkpoint replaced without ever being left incomplete
    run.uri("adapters", "last")      # how a user addresses a file of the run (load_model, --adapters)
    run.close()                      # remove the working folder (remote runs)

A local ``output_dir`` is used as it is: the recipe writes there, publishing does nothing, and the files
are the bytes they always were. A remote one gets a private temporary working folder in each process;
only rank 0 publishes. Each file is one PUT of the whole object (``shared.shards.storage.Location``), so
a reader sees a file whole or not at all. Files that grow (metrics.jsonl, TensorBoard events) are
uploaded whole again each time the recipe publishes them: at each checkpoint and at the end (object
stores cannot append), so on a restart the remote history reaches at least the checkpoint's step.

A checkpoint on an object store (no atomic folder rename): the new one is uploaded to ``checkpoint.tmp/``
with ``trainer_state.json`` last (the completeness marker), then copied over ``checkpoint/``: its marker
is deleted first, the other files copied, stale files deleted, the marker copied last; then
``checkpoint.tmp/`` is removed, marker first. A crash at any point leaves a complete checkpoint behind
one marker: ``checkpoint/`` when it has one, else ``checkpoint.tmp/`` (which :meth:`checkpoint_to_resume`
then takes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from shared.shards.storage import Location, resolve, sha256_hex
from shared.storage_errors import StorageError, storage_error_reason
from training.checkpoint import CHECKPOINT_DIR, STATE_FILE, CheckpointError

logger = logging.getLogger(__name__)

__all__ = ["RunDir", "is_remote", "read_run_json"]

_TMP_CHECKPOINT = f"{CHECKPOINT_DIR}.tmp"
HISTORY = ("metrics.jsonl", "tb")  # what a resumed run appends to


def is_remote(output_dir: str | os.PathLike) -> bool:
    """True for a URI of a filesystem other than this machine's (``s3://``, ``gs://``, ...)."""
    text = os.fspath(output_dir)
    return "://" in text and not text.startswith("file://")


def _files_below(folder: Path) -> list[str]:
    """'/'-separated paths of the files below ``folder``, sorted; ``trainer_state.json`` last."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(files, key=lambda rel: rel == STATE_FILE)


def _child(loc: Location, rel: str) -> Location:
    return loc.join(*rel.split("/"))


class RunDir:
    """A training run's folder; see the module docstring."""

    def __init__(self, output_dir: str | os.PathLike, *, rank: int = 0):
        self.output_dir, self.rank = os.fspath(output_dir), rank
        self.remote: Location | None = resolve(self.output_dir) if is_remote(self.output_dir) else None
        local = resolve(self.output_dir).path if self.output_dir.startswith("file://") else self.output_dir
        self._local = None if self.remote is not None else Path(local)
        self._published: dict[str, str] = {}  # rel path -> sha256 of the bytes the remote holds

    @property
    def local(self) -> Path:
        """The folder the run writes into: ``output_dir``, or a private temporary folder for a remote one."""
        if self._local is None:
            self._local = Path(tempfile.mkdtemp(prefix="discovla-run-"))
        return self._local

    @property
    def publishes(self) -> bool:
        return self.remote is not None and self.rank == 0

    def uri(self, *names: str) -> str:
        """The location of ``names`` inside the run as given by the user (a remote one keeps its
        ``?query`` options, so the string can be passed back to ``load_model`` or ``--adapters``)."""
        if self.remote is None:
            return str(self.local.joinpath(*names))
        base, sep, query = self.output_dir.partition("?")
        return "/".join([base.rstrip("/"), *names]) + sep + query

    # ---------------------------------------------------------------- writing
    def _reason(self, err: OSError) -> str:
        """One line saying what went wrong (missing bucket, denied, unreachable endpoint, ...)."""
        return storage_error_reason(self.output_dir, err, self.remote.fs)

    def _upload(self, rel: str, target: Location | None = None) -> None:
        """One PUT of the whole file; the run's own copy (``target`` None) is skipped when unchanged."""
        data = (self.local / rel).read_bytes()
        digest, mirror = sha256_hex(data), target is None
        if mirror and self._published.get(rel) == digest:
            return
        target = _child(self.remote, rel) if mirror else target
        try:
            target.write_bytes(data)
        except OSError as err:
            raise StorageError(f"{target}: cannot write the run's file ({self._reason(err)})") from err
        if mirror:
            self._published[rel] = digest

    def publish(self, *names: str) -> None:
        """Mirror ``names`` (files or folders below :attr:`local`) to ``output_dir``; files whose bytes the
        remote holds already (sha256) and names that do not exist are skipped. A no-op for a local run and
        off rank 0."""
        if not self.publishes:
            return
        for name in names:
            path = self.local / name
            if path.is_dir():
                rels = [f"{name}/{rel}" for rel in _files_below(path)]
            else:
                rels = [name] if path.is_file() else []
            for rel in rels:
                self._upload(rel)

    def _remove(self, loc: Location) -> None:
        """Delete the checkpoint folder ``loc``: its marker first, then everything else."""
        loc.join(STATE_FILE).delete()
        try:
            loc.fs.delete_dir(loc.path)
        except FileNotFoundError:
            pass

    def publish_checkpoint(self) -> None:
        """Replace ``output_dir/checkpoint`` with the local one (module docstring: never incomplete)."""
        if not self.publishes:
            return
        staging, final = self.remote.join(_TMP_CHECKPOINT), self.remote.join(CHECKPOINT_DIR)
        try:
            self._replace_checkpoint(_files_below(self.local / CHECKPOINT_DIR), staging, final)
        except OSError as err:
            if isinstance(err, StorageError):
                raise
            raise StorageError(f"{final}: cannot replace the checkpoint ({self._reason(err)})") from err
        logger.info("checkpoint published to %s", final)

    def _replace_checkpoint(self, files: list[str], staging: Location, final: Location) -> None:
        self._remove(staging)
        for rel in files:  # trainer_state.json last: the marker of a complete folder
            self._upload(f"{CHECKPOINT_DIR}/{rel}", _child(staging, rel))
        final.join(STATE_FILE).delete()
        for rel in files[:-1]:
            final.fs.copy_file(_child(staging, rel).path, _child(final, rel).path)
        for rel in sorted(set(final.walk()) - set(files)):
            _child(final, rel).delete()
        final.fs.copy_file(staging.join(STATE_FILE).path, final.join(STATE_FILE).path)
        self._remove(staging)

    # ---------------------------------------------------------------- reading
    def _download(self, source: Location, rel: str) -> None:
        path = self.local / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        path.write_bytes(data)
        self._published[rel] = sha256_hex(data)  # what the remote holds already

    def checkpoint_to_resume(self) -> Path:
        """``output_dir/checkpoint`` as a local folder; for a remote run it is downloaded into
        :attr:`local` first (every rank: each reads its own RNG file). A missing or unreadable remote
        checkpoint raises :class:`CheckpointError` naming the URI."""
        if self.remote is None:
            return self.local / CHECKPOINT_DIR
        target = self.local / CHECKPOINT_DIR
        for name in (CHECKPOINT_DIR, _TMP_CHECKPOINT):
            source = self.remote.join(name)
            try:
                if not source.join(STATE_FILE).exists():
                    continue
                shutil.rmtree(target, ignore_errors=True)
                for rel in source.walk():
                    self._download(_child(source, rel), f"{CHECKPOINT_DIR}/{rel}")
            except OSError as err:
                raise CheckpointError(f"{source}: cannot read the checkpoint ({self._reason(err)})") from err
            logger.info("downloaded the checkpoint %s", source)
            return target
        raise CheckpointError(
            f"no checkpoint at {self.remote.join(CHECKPOINT_DIR)} (expected {STATE_FILE} there); run "
            "without --resume to start from step 0"
        )

    def fetch_history(self) -> None:
        """Remote runs, rank 0: download metrics.jsonl and tb/ so that a resumed run continues them."""
        if not self.publishes:
            return
        for name in HISTORY:
            source = self.remote.join(name)
            try:
                if source.is_dir():
                    for rel in source.walk():
                        self._download(_child(source, rel), f"{name}/{rel}")
                elif source.exists():
                    self._download(source, name)
            except OSError as err:
                raise CheckpointError(
                    f"{source}: cannot read the run's history ({self._reason(err)})"
                ) from err

    def close(self) -> None:
        """Remove the temporary working folder of a remote run (its files are published)."""
        if self.remote is not None and self._local is not None:
            shutil.rmtree(self._local, ignore_errors=True)
            self._local = None

    def ray_storage(self) -> tuple[str, object | None]:
        """``(storage_path, storage_filesystem)`` for Ray Train's RunConfig: ``output_dir/ray``."""
        if self.remote is None:
            return str(self.local / "ray"), None
        return self.remote.join("ray").path, self.remote.fs


def read_run_json(output_dir: str | os.PathLike, name: str) -> dict | None:
    """The JSON file ``name`` of a run folder (local or remote), or None when it is not there."""
    try:
        return json.loads(resolve(output_dir).join(name).read_bytes())
    except FileNotFoundError:
        return None
