"""The project's expected failures: errors whose message is meant for the user, not a traceback.

Every library error that a user can cause and fix (a missing file, a refused caption set, weights that are
not on disk, an unreachable cluster) derives from :class:`DiscoVLAError`. The command-line entry points
(:mod:`pipelines.cli`) print such errors as ``error: <message>`` and exit 1 (2 for a
:class:`UsageError`); anything else is a bug and keeps its traceback. Subclasses may also derive from a built-in type (``ValueError``,
``FileNotFoundError``) so that existing ``except`` clauses keep working.
"""

from __future__ import annotations

import os


class DiscoVLAError(Exception):
    """An expected failure: the message says what went wrong and how to fix it."""


class UsageError(DiscoVLAError, ValueError):
    """A usage or settings error: a bad flag value, a bad ``--set``, settings that clash with each other.

    The command-line entry points exit 2 for it, as for an unknown flag (:mod:`pipelines.cli`); every
    other :class:`DiscoVLAError` is a failure while running and exits 1.
    """


class VideoDecodeError(DiscoVLAError, RuntimeError):
    """A video could not be sampled. ``path`` names the file, ``cause`` says why.

    Raised by :mod:`shared.decoder` and :mod:`shared.frames` (which re-exports it): defined here so that
    neither module imports the other for it.
    """

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class ClusterUnreachableError(DiscoVLAError, ConnectionError):
    """A Ray cluster address that cannot be joined."""


def connect_ray(address: str | None, **init_kwargs) -> None:
    """``ray.init`` that turns an unreachable ``address`` into :class:`ClusterUnreachableError`."""
    import socket

    import ray

    host, _, port = (address or "").rpartition(":")
    if host and port.isdigit():  # fail in seconds, not after Ray's minutes of retries, when nothing listens
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as err:
            raise ClusterUnreachableError(
                f"cannot join the Ray cluster at {address!r}: nothing answers there ({err}). Start it with "
                "`ray start --head` (or check the address and port), or leave out --ray-address to run on "
                "this machine"
            ) from err
    try:
        ray.init(address=address, **init_kwargs)
    except (ConnectionError, TimeoutError) as err:
        raise ClusterUnreachableError(
            f"cannot join the Ray cluster at {address!r}: {err}. Start it with `ray start --head` "
            "(or check the address and port), or leave out --ray-address to run on this machine"
        ) from err
