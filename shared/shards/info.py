"""What a caption set holds: provenance, counts per split, and a failure summary, as data and as text.

Public API::

    caption_set_info(path_or_uri, *, split=None, filesystem=None, top_errors=5) -> dict
    format_info(info) -> str     # aligned plain-text tables for a terminal
"""

from __future__ import annotations

import json

import pyarrow.compute as pc

from shared.shards.reader import read_caption_rows
from shared.shards.schema import STATUS_OK

_PROVENANCE_ORDER = (
    "model",
    "model_revision",
    "dtype",
    "engine",
    "library_versions",
    "prompt_preset",
    "prompt_text",
    "prompt_sha256",
    "chat_template_sha256",
    "sampling",
    "image_resolution",
    "sampler",
    "decoder",
    "video_source",
    "dataset",
    "code_version",
    "created_at",
)


def caption_set_info(path_or_uri, *, split: str | None = None, filesystem=None, top_errors: int = 5) -> dict:
    """Provenance, per-split counts, finish reasons and the most common errors (all rows are read)."""
    rows = read_caption_rows(path_or_uri, split=split, filesystem=filesystem, allow_incomplete=True)
    table = rows.table
    failed_mask = pc.not_equal(table["status"], STATUS_OK)
    splits = {}
    for name in sorted(pc.unique(table["split"]).to_pylist()):
        part = table.filter(pc.equal(table["split"], name))
        failed = pc.not_equal(part["status"], STATUS_OK)
        splits[name] = {
            "rows": len(part),
            "videos": pc.count_distinct(part["video_id"]).as_py(),
            "failed_rows": pc.sum(failed).as_py() or 0,
            "failed_videos": pc.count_distinct(pc.filter(part["video_id"], failed)).as_py(),
            "finish_reasons": _counts(part["finish_reason"]),
        }
    errors = _counts(pc.filter(table["error"], failed_mask))
    top = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:top_errors]
    return {
        "source": rows.source,
        "files": len(rows.files),
        "num_frames": rows.num_frames,
        "provenance": rows.provenance,
        "splits": splits,
        "top_errors": [{"error": e, "rows": n} for e, n in top],
    }


def _counts(column) -> dict:
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if not len(column):
        return {}
    counts = pc.value_counts(column)
    return {c["values"].as_py(): c["counts"].as_py() for c in counts if c["values"].as_py() is not None}


def format_info(info: dict) -> str:
    prov = info["provenance"]
    keys = [k for k in _PROVENANCE_ORDER if k in prov] + sorted(set(prov) - set(_PROVENANCE_ORDER))
    lines = [
        f"caption set  {info['source']}  ({info['files']} shard files, F = {info['num_frames']})",
        "",
        "provenance",
    ]
    lines += _table([[k, _short(prov[k])] for k in keys])
    lines += ["", "counts"]
    header = ["split", "rows", "videos", "failed rows", "failed videos", "finish reasons"]
    lines += _table(
        [header]
        + [
            [name, s["rows"], s["videos"], s["failed_rows"], s["failed_videos"], _short(s["finish_reasons"])]
            for name, s in info["splits"].items()
        ]
    )
    lines += ["", "most common errors" if info["top_errors"] else "no failures"]
    lines += _table([[e["rows"], _short(e["error"], 100)] for e in info["top_errors"]])
    return "\n".join(lines)


def _short(value, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(rows: list[list]) -> list[str]:
    if not rows:
        return []
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
