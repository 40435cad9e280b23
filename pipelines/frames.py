"""Inspect which frames the sampler takes from one video, before spending GPU-hours on it.

    python -m pipelines.frames VIDEO [--frames F] [--start S --end E] [--contact-sheet OUT.png]

Prints one JSON object on standard output::

    {"video": ..., "fps": ..., "n_video_frames": ..., "window": [S, E] | null, "sampler": {...},
     "frames": [{"frame_pos": 0, "frame_index": 0, "timestamp_s": 0.0}, ...]}

Without ``--contact-sheet`` only the container index is read (no pixels are decoded). With it, the
sampled frames are decoded and saved as one grid image (``--columns`` per row), each tile labelled
``#frame_pos  frame_index  timestamp``. Exit status 1 with the cause on standard error when the video
cannot be sampled.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from shared.frames import (
    FramePlan,
    SampledFrames,
    SamplerConfig,
    VideoDecodeError,
    plan_frames,
    sample_frames,
)

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
            (x + 2, y + height + 1), f"#{pos}  f{int(index)}  {float(t):.2f}s", fill=(235, 235, 235), font=font
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


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.frames", description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path, help="video file to sample")
    parser.add_argument("--frames", type=int, default=SamplerConfig().num_frames, help="F (default: 12)")
    parser.add_argument("--start", type=float, help="window start in seconds (with --end)")
    parser.add_argument("--end", type=float, help="window end in seconds (with --start)")
    parser.add_argument("--contact-sheet", type=Path, metavar="OUT.png", help="save the frames as one image")
    parser.add_argument("--sheet-short", type=int, default=128, help="short side of each tile in pixels")
    parser.add_argument("--columns", type=int, default=4, help="tiles per row of the contact sheet")
    parser.add_argument("--timeout", type=float, default=60.0, help="decode deadline in seconds")
    args = parser.parse_args(argv)
    if (args.start is None) != (args.end is None):
        parser.error("--start and --end go together (a window needs both ends, in seconds)")
    if args.frames < 1 or args.sheet_short < 1 or args.columns < 1:
        parser.error("--frames, --sheet-short and --columns must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    window = None if args.start is None else (args.start, args.end)
    config = SamplerConfig(num_frames=args.frames)
    try:
        if args.contact_sheet is None:
            sampled = plan_frames(args.video, args.frames, window, timeout_s=args.timeout)
        else:
            sampled = sample_frames(
                args.video, args.frames, window, resize_short=args.sheet_short, timeout_s=args.timeout
            )
    except VideoDecodeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = describe(args.video, sampled, window, config)
    if args.contact_sheet is not None:
        args.contact_sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(sampled, args.columns).save(args.contact_sheet)
        report["contact_sheet"] = str(args.contact_sheet)
        logger.info("contact sheet: %s", args.contact_sheet)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
