"""The typed errors between the caption stages (decode tasks, engine actors, the driver).

The driver decides what a failure means from its type, never from the text of a message:

- :class:`EngineStartError` (user-facing): an engine could not be built (weights, a context length the
  model does not support, an out-of-memory at load). Carries a one-line cause; the run stops before any
  video is captioned and writes nothing.
- :class:`EngineBrokenError` (user-facing): a running engine failed on several videos in a row, so it is
  the engine, not the videos; the run stops (finished shards stay, a re-run resumes).
- :class:`EnginesLostError` (user-facing): every engine actor is gone and none can be started again.

Decode failures of one video are not exceptions: a decode task returns them (``Decoded.error``) and they
become that video's failed rows. A decode task whose *process* dies, or whose result is lost with its
node, reaches the driver as one of Ray's own errors (:func:`is_engine_death` tells the two kinds apart).
Every class here pickles with its message alone, so Ray can carry it between processes.
"""

from __future__ import annotations

from shared.errors import DiscoVLAError


def one_line(err: BaseException, limit: int = 400) -> str:
    """``Type: first line of the message``, at most ``limit`` characters."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    line = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class CaptionStageError(Exception):
    """Base of the errors the caption stages send each other."""


class EngineStartError(CaptionStageError, DiscoVLAError):
    """An engine actor could not build its engine; the message is the cause in one line."""


class EngineBrokenError(CaptionStageError, DiscoVLAError):
    """A running engine failed on too many videos in a row."""


class EnginesLostError(CaptionStageError, DiscoVLAError):
    """No engine actor is left and none could be started again."""


def is_engine_death(err: BaseException) -> bool:
    """True for the errors Ray raises when the actor that ran a call is gone (process killed, node lost)."""
    import ray.exceptions

    kinds = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
    return isinstance(err, kinds) or isinstance(getattr(err, "cause", None), kinds)
