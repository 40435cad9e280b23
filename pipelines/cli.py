"""The one convention every ``python -m pipelines.<name>`` command follows (tests/test_cli_conventions.py
walks every command's parser and checks it).

- ``prog`` is ``python -m pipelines.<name>``; every flag has help;
- ``-v/--verbose`` (debug logging and tracebacks), ``-q/--quiet`` (warnings only, no progress bars) and
  ``--no-progress`` are accepted by every command, and by every subcommand after its name too
  (``pipelines.shards validate ROOT -q``): :func:`parser` and :func:`add_subcommand`;
- exit codes: 0 done; **2 for every usage or settings error** (argparse's own, a bad flag value, a bad
  ``--set``, settings that clash: raise :class:`shared.errors.UsageError`); **1 for every failure while
  running** (any other :class:`shared.errors.DiscoVLAError`, a missing or unreadable file); 130 on
  Ctrl-C. Each prints ``error: <message>`` on standard error, without a traceback unless ``-v``;
- reports are text by default; ``--json`` (:func:`add_json_flag`) prints one JSON object instead, whose
  shape the command's help documents;
- where output goes is ``--out``; ``--device`` defaults to CUDA when available (:func:`add_device_arg`);
  ``--num-workers`` is the number of processes decoding videos, default min(4, CPUs), in evaluate, index
  and framestore build (:func:`add_num_workers_arg`); train's is the preset's ``num_workers`` (a recorded
  training setting), and caption sizes its Ray decoders from ``--num-cpus``;
- ``--split`` names a dataset's split (default ``test``) wherever a command reads a dataset; in
  ``pipelines.shards`` it selects splits of a caption set (default: all), and ``import-json --split`` names
  the split its rows get;
- progress bars are shown unless ``-q`` or ``--no-progress``: read :func:`progress_enabled`.

A command module defines ``build_parser()`` and ``run(args) -> int`` and ends with::

    def main(argv=None) -> int:
        return cli.main(build_parser(), run, argv)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from shared.errors import DiscoVLAError, UsageError

# Failures a user causes and can fix. OSError covers missing/unreadable files named in the message.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (DiscoVLAError, OSError)
EXIT_USAGE, EXIT_FAILED = 2, 1

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


def add_common_flags(p: argparse.ArgumentParser, *, progress: bool = True, subcommand: bool = False) -> None:
    """``-v/--verbose``, ``-q/--quiet`` and ``--no-progress`` (accepted everywhere; where a command has no
    long work, ``progress=False``, it changes nothing). On a subcommand (``subcommand=True``) the flags
    keep what was given before the subcommand's name unless given again after it."""
    default = argparse.SUPPRESS if subcommand else False
    noise = p.add_mutually_exclusive_group()
    noise.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logging, and a traceback for every error",
    )
    noise.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="warnings and errors only, no progress bars",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        default=default,
        help="no progress bars (logging unchanged)"
        if progress
        else "accepted for uniformity: no progress bars here",
    )


def add_subcommand(
    subparsers, name: str, help_text: str, *, progress: bool = True
) -> argparse.ArgumentParser:
    """A subcommand's parser with the common flags (``-v/-q/--no-progress`` after its name too)."""
    p = subparsers.add_parser(
        name, help=help_text, description=help_text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_flags(p, progress=progress, subcommand=True)
    return p


def add_json_flag(p: argparse.ArgumentParser, shape: str) -> None:
    """``--json``: print the report as one JSON object of ``shape`` (documented in the help) instead of text."""
    p.add_argument("--json", action="store_true", help=f"print one JSON object instead of text: {shape}")


def add_device_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "the model") -> None:
    """``--device`` with the one default: CUDA when available (None here; the library decides)."""
    p.add_argument(
        "--device",
        default=None,
        help=f"device of {what}: cuda, cpu, cuda:1, ... (default: cuda when available)",
    )


def resolve_device(device: str | None) -> str:
    """``--device`` as given (checked: a name torch knows), or ``cuda`` when available, else ``cpu``."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError as err:
        raise UsageError(f"--device {device!r}: {err}") from None
    return device


DEFAULT_NUM_WORKERS = min(4, os.cpu_count() or 1)  # decoding processes: enough to keep a model fed


def add_num_workers_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """``--num-workers N``: processes decoding videos (``what`` they feed), one default everywhere."""
    p.add_argument(
        "--num-workers",
        type=int,
        default=DEFAULT_NUM_WORKERS,
        metavar="N",
        help=f"processes decoding videos for {what} (default: min(4, CPUs) = {DEFAULT_NUM_WORKERS}; 0 = inline)",
    )


def print_report(args: argparse.Namespace, record: dict, text: str) -> None:
    """``record`` as JSON with ``--json``, else ``text``."""
    import json

    print(json.dumps(record, indent=2, sort_keys=True, default=str) if getattr(args, "json", False) else text)


def add_source_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, *, split_help: str) -> None:
    """``--split``, ``--annotations``, ``--video-root``: where a dataset's items and videos are."""
    p.add_argument("--split", default="test", help=split_help)
    p.add_argument("--annotations", default=None, help="annotation file/folder (default: the dataset's)")
    p.add_argument("--video-root", default=None, help="video folder (default: the dataset's)")


def source_options(args: argparse.Namespace) -> dict:
    """The library keywords of :func:`add_dataset_arg` and :func:`add_source_args`."""
    return dict(
        dataset=args.dataset, split=args.split, annotations=args.annotations, video_root=args.video_root
    )


def add_model_args(p: argparse.ArgumentParser, *, frames_help: str, words_help: str) -> None:
    """``--adapters`` (required), ``--backbone``, ``--pretrained``, ``--frames``, ``--words``: the retrieval
    model (:func:`training.factory.build_retrieval_model`) of evaluate and index."""
    p.add_argument(
        "--adapters",
        required=True,
        type=none_or,
        metavar="DIR|URI|none",
        help="adapter folder (adapters.safetensors + adapter_config.json; a path or an s3://... URI), "
        "or none for zero-shot CLIP",
    )
    p.add_argument(
        "--backbone", default=None, help="open_clip model name (default: the adapters', or ViT-B-32)"
    )
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="TAG|PATH|none",
        help="open_clip tag or checkpoint file (default: the adapters', or openai); none = random weights",
    )
    p.add_argument("--frames", type=positive_int, default=None, help=frames_help)
    p.add_argument("--words", type=positive_int, default=None, help=words_help)


def model_options(args: argparse.Namespace) -> dict:
    """The library keywords of :func:`add_model_args` (``pretrained=...``: the adapters' weights, or openai)."""
    return dict(
        adapters=args.adapters,
        backbone=args.backbone,
        pretrained=... if args.pretrained is None else none_or(args.pretrained),
        frames=args.frames,
        words=args.words,
    )


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1 (a batch size, a chunk, a number of frames)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


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
        return EXIT_USAGE if isinstance(err, UsageError) else EXIT_FAILED
