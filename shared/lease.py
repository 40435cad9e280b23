"""One writer at a time for an output location (a caption set, a frame store): a lease file with a heartbeat.

::

    with OutputLease("s3://bucket/captions?endpoint_override=...", what="caption"):
        ...  # only this run writes under the location; a second run is refused with OutputBusyError

The lease is a small JSON object, ``<out>/.discovla-lease.json`` (a hidden name: directory readers
such as pyarrow.dataset, pandas, DuckDB and Polars skip it, and it is outside ``data/``), recording who
holds the location: ``what`` ("caption", "framestore build"), ``host``, ``pid``, the process's start
tick (so a recycled pid is not taken for the holder), ``started_at``, a random ``token``, and
``expires_at``. While the ``with`` block runs, a daemon thread rewrites it every :data:`RENEW_S` seconds
with ``expires_at = now + TTL_S``; leaving the block (normally, on an error or on KeyboardInterrupt)
deletes it.

A new run takes the location when no lease is there, or the lease has expired (its holder stopped
renewing it: killed with ``kill -9``, its node lost; at most :data:`TTL_S` seconds after that), or its
holder ran on this host and that process is gone (taken over at once). Otherwise it is refused with
:class:`OutputBusyError` naming the holder. Expiry compares wall clocks of two machines: a clock skew
of a few seconds only moves the take-over by as much.

Taking the lease works on every pyarrow filesystem, including object stores, which have no atomic
create-if-absent: read the lease (absent or stale), write ours with a fresh random token (one atomic
PUT, or a temporary file renamed into place on a local disk), wait a settle time (:data:`SETTLE_S`), read it
back and go on only if it still holds our token; a run that reads back another token was overtaken
and is refused. The race window: two runs both succeed only if one's read-then-write took longer than
the settle time (its write landed after the other had read its own token back); with a GET and a PUT of
a few hundred bytes, that needs a storage stall of over a second (object stores; a quarter second on a
local disk, where a rename is atomic and fast) at exactly that moment. Each renewal
reads the lease first: a holder that finds another token there (it was stalled past ``TTL_S`` and
taken over) stops renewing and logs an error instead of overwriting the new holder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from shared.errors import DiscoVLAError
from shared.shards.storage import resolve
from shared.storage_errors import StorageError, display_uri, storage_error_line
from shared.uris import join_uri

logger = logging.getLogger(__name__)

LEASE_NAME = ".discovla-lease.json"
LEASE_FORMAT = "discovla.lease"
TTL_S = 60.0  # a lease not renewed for this long is stale
RENEW_S = 10.0  # how often the holder renews it
SETTLE_S = {"local": 0.25}  # between writing the lease and reading it back, by filesystem type
SETTLE_DEFAULT_S = 1.0  # object stores and other filesystems (see the module docstring)


class OutputBusyError(DiscoVLAError, RuntimeError):
    """Another run holds the output location's lease; the message names it (host, pid, start time)."""


class OutputLease:
    """The lease on ``out`` (a local folder or a URI) for the ``with`` block; see the module docstring."""

    def __init__(
        self,
        out,
        what: str,
        *,
        ttl_s: float = TTL_S,
        renew_s: float = RENEW_S,
        settle_s: float | None = None,
        filesystem=None,
    ):
        if not 0 < renew_s < ttl_s:
            raise ValueError(f"renew_s must be > 0 and < ttl_s, got renew_s={renew_s}, ttl_s={ttl_s}")
        self.root = resolve(out, filesystem)
        self.location = self.root.join(LEASE_NAME)
        self.shown = display_uri(str(out)) if isinstance(out, str) else str(self.root)
        self.what = what
        if settle_s is None:
            settle_s = SETTLE_S.get(self.root.fs.type_name, SETTLE_DEFAULT_S)
        self.ttl_s, self.renew_s, self.settle_s = ttl_s, renew_s, settle_s
        self.token = uuid.uuid4().hex
        self.record: dict | None = None
        self.lost = False  # another run took the lease over while we held it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the with block ---------------------------------------------------------------------------

    def __enter__(self) -> OutputLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lease or raise :class:`OutputBusyError` (or ``StorageError`` for unusable storage)."""
        holder = self._read()
        if holder is not None and not self._stale(holder):
            raise OutputBusyError(self._busy_message(holder))
        self.record = self._new_record()
        self._write(self.record)
        try:
            time.sleep(self.settle_s)
            now_holder = self._read()
        except BaseException:  # Ctrl-C while settling: leave no lease of ours behind
            self.release()
            raise
        if now_holder is None or now_holder.get("token") != self.token:
            self.record = None  # not ours: never deleted by us
            raise OutputBusyError(
                self._busy_message(now_holder)
                if now_holder
                else f"{self.shown}: the lease was taken and "
                "released by another run while this one was taking it; run this command again"
            )
        self._thread = threading.Thread(target=self._renew_loop, name="output-lease", daemon=True)
        self._thread.start()
        logger.info("%s: writing as %s (lease %s)", self.shown, self.what, self.location)

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours (never someone else's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_s + 5)
            self._thread = None
        if self.record is None:
            return
        self.record = None
        try:
            holder = self._read()
            if holder is not None and holder.get("token") == self.token:
                self.location.fs.delete_file(self.location.path)
        except (OSError, OutputBusyError) as err:  # the run's own outcome matters more; it expires anyway
            logger.warning(
                "%s: could not release the lease (%s); it expires in %.0f s", self.shown, err, self.ttl_s
            )

    # ---- internals --------------------------------------------------------------------------------

    def _new_record(self) -> dict:
        now = time.time()
        return {
            "format": LEASE_FORMAT,
            "what": self.what,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "started_at": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            "token": self.token,
            "renewed_at": now,
            "expires_at": now + self.ttl_s,
        }

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                holder = self._read()
                if holder is None or holder.get("token") != self.token:
                    self.lost = True
                    logger.error(
                        "%s: this run's lease was taken over (%s); another run may be writing here too",
                        self.shown,
                        self._describe(holder) if holder else "it was deleted",
                    )
                    return
                now = time.time()
                self.record = {**self.record, "renewed_at": now, "expires_at": now + self.ttl_s}
                self._write(self.record)
            except Exception as err:  # noqa: BLE001  (a failed renewal is retried at the next beat)
                logger.warning("%s: could not renew the lease: %s", self.shown, err)

    def _stale(self, holder: dict) -> bool:
        if time.time() > float(holder.get("expires_at", 0)):
            logger.warning("%s: taking over an expired lease (%s)", self.shown, self._describe(holder))
            return True
        if holder.get("host") == socket.gethostname() and not _alive(
            holder.get("pid"), holder.get("pid_start")
        ):
            logger.warning(
                "%s: taking over the lease of a process that is gone (%s)", self.shown, self._describe(holder)
            )
            return True
        return False

    def _read(self) -> dict | None:
        try:
            data = self.location.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StorageError(storage_error_line(self._uri(), err, self.location.fs)) from err
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("format") != LEASE_FORMAT:
            raise OutputBusyError(
                f"{self.location}: not a {LEASE_FORMAT} file; if no run is writing to {self.shown}, delete it"
            )
        return record

    def _write(self, record: dict) -> None:
        try:
            self.location.write_bytes(json.dumps(record, indent=2, sort_keys=True).encode())
        except OSError as err:
            raise StorageError(storage_error_line(self._uri(), err, self.location.fs)) from err

    def _uri(self) -> str:
        return (
            str(self.location) if self.location.fs.type_name == "local" else join_uri(self.shown, LEASE_NAME)
        )

    def _describe(self, holder: dict) -> str:
        left = float(holder.get("expires_at", 0)) - time.time()
        return (
            f"{holder.get('what', '?')} run on host {holder.get('host')!r}, pid {holder.get('pid')}, started "
            f"{holder.get('started_at')}, lease expires in {max(left, 0):.0f} s unless renewed"
        )

    def _busy_message(self, holder: dict) -> str:
        return (
            f"{self.shown} is being written by another {self._describe(holder)}. Wait for it to finish, "
            f"or use another output location. A run that was killed stops blocking when its lease "
            f"expires ({self.ttl_s:.0f} s after its last renewal), or at once when it ran on this host"
        )


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a recycled pid apart."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _alive(pid, pid_start) -> bool:
    """Whether process ``pid`` of this host runs (not a zombie) and is the one that took the lease."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    fields = _proc_stat(pid)
    if fields is None:  # no /proc (not Linux): the pid answers, so take it for the holder
        return True
    start = int(fields[19]) if len(fields) > 19 else None
    return fields[0] != b"Z" and (pid_start is None or start is None or start == pid_start)
