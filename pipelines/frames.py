"""Inspect which frames the sampler takes from one video, before spending GPU-hours on it.

    python -m pipelines.frames VIDEO [--frames F] [--start S --end E] [--contact-sheet OUT.png [--image-size PX]]

Prints one JSON object on standard output::

    {"video": ..., "fps": ..., "n_video_frames": ..., "window": [S, E] | null, "sampler": {...},
     "frames": [{"frame_pos": 0, "frame_index": 0, "timestamp_s": 0.0}, ...]}

Without ``--contact-sheet`` only the container index is read (no pixels are decoded). With it, the
sampled frames are decoded and saved as one grid image (``--columns`` per row), each tile labelled
``#frame_pos  frame_index  timestamp``. When the video cannot be sampled it prints ``error: <cause>``
(naming the file) on standard error and exits 1; a bad argument exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from pipelines import cli
from shared.frames import FramePlan, SampledFrames, SamplerConfig, plan_frames, sample_frames

logger = logging.getLogger(__name__)

LABEL_HEIGHT = 14  # pixels of caption strip under each contact-sheet tile
GUTTER = 2  # pixels of background right of and below each tile


def contact_sheet(sampled: SampledFrames, columns: int = 4) -> Image.Image:
    """All sampled frames in one RGB image: ``columns`` tiles per row, a label strip under each.

    Size: (cols · (W + GUTTER), rows · (H + LABEL_HEIGHT + GUTTER)) for F frames of H x W, with
    cols = min(columns, F) and rows = ceil(F / cols).
    """
    count, height, width = sampled.frames.shape[:3]  # [F, H, W, 3]
    cols = max(min(columns, count), 1)
    rows = math.ceil(count / cols)
    cell_w, cell_h = width + GUTTER, height + LABEL_HEIGHT + GUTTER
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=LABEL_HEIGHT - 3)
    for pos, (frame, index, t) in enumerate(
        zip(sampled.frames, sampled.indices, sampled.timestamps, strict=True)
    ):
        x, y = (pos % cols) * cell_w, (pos // cols) * cell_h
        sheet.paste(Image.fromarray(frame), (x, y))
        draw.text(
            (x + 2, y + height + 1),
            f"#{pos}  f{int(index)}  {float(t):.2f}s",
            fill=(235, 235, 235),
            font=font,
        )
    return sheet


def describe(
    path: str | Path,
    sampled: FramePlan | SampledFrames,
    window: tuple[float, float] | None,
    config: SamplerConfig,
) -> dict:
    """The JSON report for a FramePlan or SampledFrames of ``path``."""
    return {
        "video": str(path),
        "fps": float(sampled.fps),
        "n_video_frames": int(sampled.n_video_frames),
        "window": None if window is None else [float(window[0]), float(window[1])],
        "sampler": config.provenance(),
        "frames": [
            {"frame_pos": int(pos), "frame_index": int(index), "timestamp_s": round(float(t), 6)}
            for pos, index, t in zip(sampled.positions, sampled.indices, sampled.timestamps, strict=True)
        ],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("frames", __doc__, progress=False)
    parser.add_argument("video", type=Path, help="video file to sample")
    parser.add_argument(
        "--frames",
        type=int,
        default=SamplerConfig().num_frames,
        help="F, frames to sample (default: %(default)s)",
    )
    parser.add_argument("--start", type=float, help="window start in seconds (with --end)")
    parser.add_argument("--end", type=float, help="window end in seconds (with --start)")
    parser.add_argument(
        "--out",
        "--contact-sheet",
        dest="contact_sheet",
        type=Path,
        metavar="OUT.png",
        help="decode the sampled frames and save them as one labelled grid image (--contact-sheet: the old name)",
    )
    parser.add_argument(
        "--image-size",
        "--sheet-short",
        dest="image_size",
        type=int,
        default=128,
        metavar="PX",
        help="short side of each contact-sheet tile in pixels (default: %(default)s; "
        "--sheet-short is a deprecated alias)",
    )
    parser.add_argument(
        "--columns", type=int, default=4, help="tiles per row of the contact sheet (default: 4)"
    )
    parser.add_argument(
        "--decode-timeout",
        "--timeout",
        dest="decode_timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="decode deadline in seconds (default: %(default)s; --timeout is a deprecated alias)",
    )
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.start is None) != (args.end is None):
        parser.error("--start and --end go together (a window needs both ends, in seconds)")
    if args.frames < 1 or args.image_size < 1 or args.columns < 1:
        parser.error("--frames, --image-size and --columns must be positive")


def run(args: argparse.Namespace) -> int:
    window = None if args.start is None else (args.start, args.end)
    config = SamplerConfig(num_frames=args.frames)
    if args.contact_sheet is None:
        sampled = plan_frames(args.video, args.frames, window, timeout_s=args.decode_timeout)
    else:
        sampled = sample_frames(
            args.video, args.frames, window, resize_short=args.image_size, timeout_s=args.decode_timeout
        )
    report = describe(args.video, sampled, window, config)
    if args.contact_sheet is not None:
        args.contact_sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(sampled, args.columns).save(args.contact_sheet)
        report["contact_sheet"] = str(args.contact_sheet)
        logger.info("contact sheet: %s", args.contact_sheet)
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()

    def checked_run(args: argparse.Namespace) -> int:
        _check(parser, args)
        return run(args)

    return cli.main(parser, checked_run, argv)


if __name__ == "__main__":
    sys.exit(main())
