"""A static, offline HTML page to look at a caption set before trusting it.

Public API::

    render_view(path_or_uri, out_dir, *, n_videos=8, split=None, items=None, video_root=None,
                seed=0, thumb_short=128, filesystem=None) -> Path      # out_dir/index.html

For ``n_videos`` videos (a seeded sample), one row per sampled frame: the frame as a thumbnail, its
position, frame index and time, the caption (or the error of a failed frame), next to the video's own
text. Thumbnails are decoded with ``shared.frames.sample_frames`` (the sampler of the provenance) when
the video file is reachable, through ``items`` (``VideoItem``-like records from a dataset adapter:
``video_id``, ``path``, ``window``, ``text``) or ``video_root`` (``shared.paths.resolve_video``); the
decoded indices are compared with the recorded ``frame_index`` and a mismatch is shown in red, since it
means captions and frames would not line up. Without a video the page shows captions only and says
so. Images are embedded as base64 JPEG: the page is one self-contained file, the only file written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import random
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from PIL import Image

from shared.shards.reader import read_caption_rows

logger = logging.getLogger(__name__)
_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}.video{margin:2em 0}
.frames td{max-width:40em}.failed{background:#fde2e2}.warn{color:#b00020;font-weight:bold}
.note{color:#666}img{display:block}code{font-size:90%}"""


def render_view(
    path_or_uri,
    out_dir,
    *,
    n_videos: int = 8,
    split: str | None = None,
    items=None,
    video_root=None,
    seed: int = 0,
    thumb_short: int = 128,
    filesystem=None,
) -> Path:
    """Write ``out_dir/index.html`` for a sample of the caption set; returns its path."""
    rows = read_caption_rows(path_or_uri, split=split, filesystem=filesystem, allow_incomplete=True)
    by_id = {}
    for item in items or ():
        by_id.setdefault(item.video_id, []).append(item)
    videos = sorted(pc.unique(rows.table["video_id"]).to_pylist())
    chosen = sorted(random.Random(seed).sample(videos, min(n_videos, len(videos))))
    sections = [_video_section(rows, vid, by_id.get(vid, []), video_root, thumb_short) for vid in chosen]
    page = _page(rows, len(videos), sections)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d videos)", path, len(chosen))
    return path


def _video_section(rows, video_id: str, items: list, video_root, thumb_short: int) -> str:
    table = rows.table.filter(pc.equal(rows.table["video_id"], video_id)).sort_by("frame_pos").to_pylist()
    texts = list(dict.fromkeys(i.text for i in items if getattr(i, "text", None)))
    thumbs, note = _thumbnails(rows.provenance["sampler"], table, items, video_root, video_id, thumb_short)
    body = []
    for row, thumb in zip(table, thumbs, strict=True):
        cls = "" if row["status"] == "ok" else " class='failed'"
        text = (
            html.escape(row["caption"])
            if row["status"] == "ok"
            else f"<b>failed:</b> {html.escape(row['error'])}"
        )
        img = f"<img src='data:image/jpeg;base64,{thumb}' alt='frame {row['frame_pos']}'>" if thumb else ""
        index = "?" if row["frame_index"] is None else row["frame_index"]
        where = f"pos {row['frame_pos']}<br>frame {index}<br>{_seconds(row['timestamp_s'])}"
        body.append(f"<tr{cls}><td>{img}</td><td>{where}</td><td>{text}</td></tr>")
    own = (
        "".join(f"<li>{html.escape(t)}</li>" for t in texts)
        or "<li class='note'>(no dataset text given)</li>"
    )
    return (
        f"<div class='video'><h2>{html.escape(video_id)}</h2><p>Video text:</p><ul>{own}</ul>{note}"
        f"<table class='frames'><tr><th>frame</th><th>where</th><th>caption</th></tr>{''.join(body)}</table></div>"
    )


def _thumbnails(sampler: dict, table: list[dict], items: list, video_root, video_id: str, short: int):
    """(base64 JPEGs or None per row, an HTML note): decoded frames when the video is reachable."""
    none = [None] * len(table)
    path, window = _video_path(items, video_root, video_id)
    if path is None:
        return (
            none,
            "<p class='note'>No video file reachable (pass a dataset or --video-root): captions only.</p>",
        )
    from shared.frames import VideoDecodeError, sample_frames

    try:
        frames = sample_frames(
            path,
            len(table),
            window,
            resize_short=short,
            candidate_fps=float(sampler.get("candidate_fps", 1.0)),
        )
    except VideoDecodeError as err:
        return (
            none,
            f"<p class='warn'>Could not decode {html.escape(str(path))}: {html.escape(err.cause)}</p>",
        )
    recorded = [r["frame_index"] for r in table]
    note = ""
    if any(r is not None and r != int(d) for r, d in zip(recorded, frames.indices, strict=True)):
        note = (
            f"<p class='warn'>Frame indices differ: recorded {recorded}, sampled now {frames.indices.tolist()}. "
            "Captions may not belong to these frames (different video file, decoder or sampler).</p>"
        )
    return [_jpeg(f) for f in frames.frames], note


def _video_path(items: list, video_root, video_id: str):
    for item in items:
        if Path(item.path).is_file():
            return Path(item.path), item.window
    if video_root is not None:
        from shared.paths import UnsafeVideoIdError, resolve_video

        try:
            path = resolve_video(video_root, video_id)
        except UnsafeVideoIdError:
            return None, None
        if path.is_file():
            return path, None
    return None, None


def _jpeg(frame: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _seconds(value) -> str:
    return "" if value is None else f"{value:.2f} s"


def _page(rows, n_total: int, sections: list[str]) -> str:
    prov = rows.provenance
    keys = [
        "dataset",
        "model",
        "model_revision",
        "prompt_preset",
        "prompt_text",
        "prompt_sha256",
        "sampler",
        "sampling",
        "image_resolution",
        "decoder",
        "engine",
        "created_at",
        "code_version",
    ]
    meta = "".join(
        f"<tr><th>{k}</th><td><code>{html.escape(_text(prov[k]))}</code></td></tr>" for k in keys if k in prov
    )
    failed = pc.count_distinct(
        pc.filter(rows.table["video_id"], pc.not_equal(rows.table["status"], "ok"))
    ).as_py()
    title = f"Caption set {html.escape(rows.source)}"
    summary = (
        f"<p>{n_total} videos, {len(rows.table)} rows, {failed} videos with failed frames; "
        f"showing {len(sections)}.</p>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style>"
        f"</head><body><h1>{title}</h1>{summary}<table>{meta}</table>{''.join(sections)}</body></html>"
    )
