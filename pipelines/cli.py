"""The one convention every ``python -m pipelines.<name>`` command follows.

- ``prog`` is ``python -m pipelines.<name>``; every flag has help; ``-v/--verbose`` (debug logging and
  tracebacks) and ``-q/--quiet`` (warnings only, no progress bars) on every command;
- expected failures (:class:`shared.errors.DiscoVLAError` and missing files) print ``error: <message>``
  on standard error and exit 1, without a traceback unless ``-v``; usage errors exit 2 (argparse);
  Ctrl-C exits 130;
- progress bars are shown unless ``-q`` or ``--no-progress``: read :func:`progress_enabled`.

A command module defines ``build_parser()`` and ``run(args) -> int`` and ends with::

    def main(argv=None) -> int:
        return cli.main(build_parser(), run, argv)
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from shared.errors import DiscoVLAError

# Failures a user causes and can fix. OSError covers missing/unreadable files named in the message.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (DiscoVLAError, OSError)

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def parser(name: str, doc: str | None, *, progress: bool = True) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``python -m pipelines.<name>`` with the common flags.

    ``doc`` is the module docstring: its first paragraph is the description, the rest the epilog.
    """
    head, _, rest = (doc or "").strip().partition("\n\n")
    p = argparse.ArgumentParser(
        prog=f"python -m pipelines.{name}",
        description=head or None,
        epilog=rest or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_flags(p, progress=progress)
    return p


def add_common_flags(p: argparse.ArgumentParser, *, progress: bool = True) -> None:
    """``-v/--verbose``, ``-q/--quiet`` and (for commands with long work) ``--no-progress``."""
    noise = p.add_mutually_exclusive_group()
    noise.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, and a traceback for every error"
    )
    noise.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
    )
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bars (logging unchanged)")


def none_or(value: str) -> str | None:
    """A flag value where ``none``/``null``/empty means "no value" (``--pretrained none``, ``--cache-dir none``)."""
    return None if value.lower() in ("none", "null", "") else value


def progress_enabled(args: argparse.Namespace) -> bool:
    """Whether long work should show a progress bar."""
    return not (getattr(args, "quiet", False) or getattr(args, "no_progress", False))


def configure_logging(args: argparse.Namespace) -> None:
    level = (
        logging.DEBUG
        if getattr(args, "verbose", False)
        else (logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    )
    logging.basicConfig(level=level, format=LOG_FORMAT, force=True)


def add_dataset_arg(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, *, required: bool = True, default: str | None = None
) -> None:
    """``--dataset`` with the registry's names as choices (one spelling in every command)."""
    from shared.datasets import DATASETS

    p.add_argument(
        "--dataset",
        required=required and default is None,
        default=default,
        choices=sorted(DATASETS),
        help="benchmark adapter (folder: your videos + a JSONL/CSV)",
    )


def main(
    build: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, set up logging, call ``run(args)`` and map its failures to exit codes."""
    args = build.parse_args(argv)
    configure_logging(args)
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as err:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 1
