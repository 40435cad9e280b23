"""What a run leaves for its user: metrics JSONL + TensorBoard, a PNG of the curves, recall tables.

The numbers come from :mod:`training.metrics` (the metric math); this module only records and renders them.

``metrics.jsonl`` holds one JSON object per line: training records ``{"step", "epoch", "total", "vid",
"img", "kd", "lr", "grad_norm", "samples_per_s"}`` every ``log_every`` steps (plus ``"diag": {term: {"value",
"grad_norm", "cos_vid"}}`` at ``diagnose_every`` steps, training.diagnostics), and evaluation records
``{"step", "epoch", "eval": {...}, "t2v_R1"}``. On resume the records after the checkpoint's step are
dropped (they belong to the interrupted run), so the file always describes one consistent history.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

from training.metrics import METRIC_NAMES

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
_LOSS_KEYS = ("total", "vid", "img", "kd")


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested numeric values as ``{"a/b": x}``."""
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def t2v_r1(metrics: dict | None) -> float:
    """Text-to-video R@1 from an evaluator result, whatever its nesting (``t2v/R1``, ``t2v_R@1``, ...)."""
    if not metrics:
        return float("nan")
    for name, value in flatten(metrics).items():
        low = name.lower().replace("@", "").replace("-", "_")
        if "dsl" in low:
            continue  # dual-softmax re-scoring is reported separately, never selects checkpoints
        if any(t in low for t in ("t2v", "text_to_video", "text2video")) and low.split("/")[-1].endswith(
            "r1"
        ):
            return value
    raise KeyError(f"no text-to-video R@1 among the evaluation metrics {sorted(flatten(metrics))}")


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and TensorBoard (``tb/``); a no-op on ranks other than 0."""

    def __init__(self, out: str | Path, resume_step: int = 0, enabled: bool = True):
        self.path, self.enabled, self.writer = Path(out) / METRICS_FILE, enabled, None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step] if resume_step else []
        self.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(self.path.parent / "tb"), purge_step=resume_step + 1 if resume_step else None
            )
        except ImportError:  # tensorboard is a dependency, but the JSONL alone is enough to go on
            logger.warning("tensorboard is not installed; metrics go to %s only", self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True, default=float) + "\n")
        if self.writer is not None:
            for name, value in flatten(
                {k: v for k, v in record.items() if k not in ("step", "epoch")}
            ).items():
                self.writer.add_scalar(name if "/" in name else f"train/{name}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Loss terms (left) and text-to-video R@1 (right) over optimiser steps; with loss diagnostics in the
    records, a third panel: each term's gradient cosine with L_vid's (solid) and gradient norm (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if "total" in r]
    evals = [r for r in records if "t2v_R1" in r]
    diag = [r for r in records if "diag" in r]
    fig, axes = plt.subplots(1, 3 if diag else 2, figsize=(15 if diag else 10, 4))
    ax_loss, ax_r1 = axes[0], axes[1]
    if diag:
        plot_diagnostics(diag, axes[2])
    for key in _LOSS_KEYS:
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            ax_loss.plot(*zip(*points, strict=True), label=key, marker="." if len(points) < 30 else None)
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss")
    ax_loss.legend()
    if evals:
        ax_r1.plot([r["step"] for r in evals], [r["t2v_R1"] for r in evals], marker="o")
    ax_r1.set(xlabel="step", ylabel="R@1 (%)", title="text-to-video R@1 (eval split)")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def plot_diagnostics(records: list[dict], ax) -> None:
    """Each loss term's gradient cosine with L_vid's (left axis) and gradient norm (right axis, log)."""
    norms = ax.twinx()
    for k, term in enumerate(sorted({t for r in records for t in r["diag"]}, key=_LOSS_KEYS.index)):
        points = [(r["step"], r["diag"][term]) for r in records if term in r["diag"]]
        steps = [s for s, _ in points]
        colour = f"C{k + 1}"  # the loss panel's colour of the term ("total" is C0)
        if term != "vid":  # cos(g_vid, g_vid) = 1
            ax.plot(
                steps, [d["cos_vid"] for _, d in points], marker="o", color=colour, label=f"cos({term}, vid)"
            )
        norms.plot(steps, [d["grad_norm"] for _, d in points], ls="--", color=colour, label=f"|grad {term}|")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="step", ylabel="cosine with L_vid's gradient", ylim=(-1.05, 1.05), title="loss diagnostics")
    norms.set_yscale("log")
    norms.set_ylabel("gradient norm (dashed)")
    lines = ax.get_legend_handles_labels()
    more = norms.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")


def recall_table(metrics: dict | None) -> str:
    """The evaluator's recall table (training.metrics) or, failing that, one line per metric."""
    if not metrics:
        return "(no evaluation)"
    try:
        return format_table(metrics)
    except (TypeError, KeyError, AttributeError):
        return "\n".join(f"{name:<28} {value:8.2f}" for name, value in flatten(metrics).items())


def finish_report(
    out: str | Path,
    metrics: dict | None,
    best: dict | None,
    decode_failures: set[str],
    adapters: dict[str, str] | None = None,
) -> str:
    """Curves PNG, ``summary.json`` and the text shown at the end of a run (returned and logged).

    ``adapters``: where ``last`` and ``best`` are as the user addresses them (a remote run's URIs);
    default ``out/adapters/<name>``."""
    out = Path(out)
    png = plot_curves(out / METRICS_FILE, out / CURVES_FILE)
    adapters = adapters or {name: str(out / "adapters" / name) for name in ("last", "best")}
    summary = {
        "final": metrics,
        "best": best,
        "decode_failures": sorted(decode_failures),
        "adapters": adapters,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    lines = [f"final (last step) evaluation:\n{recall_table(metrics)}"]
    if best:
        lines.append(f"best t2v R@1 {best['t2v_R1']:.2f} at step {best['step']} -> {adapters['best']}")
    lines.append(f"last adapters -> {adapters['last']};  curves -> {png}")
    if decode_failures:
        lines.append(
            f"{len(decode_failures)} videos failed to decode and were replaced: {sorted(decode_failures)[:5]}"
        )
    text = "\n".join(lines)
    logger.info("%s", text)
    return text


_ROWS = (  # (key in the evaluator's dict, label shown)
    ("t2v", "text-to-video"),
    ("v2t", "video-to-text"),
    ("t2v_dsl", "text-to-video, DSL re-scored*"),
    ("v2t_dsl", "video-to-text, DSL re-scored*"),
)
_DSL_NOTE = "* dual-softmax re-scoring uses test-set statistics; not part of DiscoVLA's protocol"


# ---------------------------------------------------------------------- recall tables
def _present_rows(metrics: dict) -> list[tuple[str, dict]]:
    rows = [(label, metrics[key]) for key, label in _ROWS if isinstance(metrics.get(key), dict)]
    if not rows:
        raise KeyError(f"no recall rows among {sorted(metrics)}; expected some of {[k for k, _ in _ROWS]}")
    return rows


def format_table(metrics: dict, *, markdown: bool = False) -> str:
    """The recall table of an evaluator result (``{"t2v": {...}, "v2t": {...}, ...}``), text or markdown."""
    rows = _present_rows(metrics)
    head = ["direction", "R@1", "R@5", "R@10", "MdR", "MnR"]
    cells = [[label] + [f"{row[name]:.1f}" for name in METRIC_NAMES] for label, row in rows]
    dsl = any("DSL" in label for label, _ in rows)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
    else:
        width = max(len(c[0]) for c in cells + [head])
        fmt = f"{{:<{width}}}" + "  {:>6}" * (len(head) - 1)
        lines = [fmt.format(*head), "-" * (width + 8 * (len(head) - 1))] + [fmt.format(*c) for c in cells]
    notes = (
        [f"{metrics['num_texts']} texts x {metrics['num_videos']} videos"]
        if "num_texts" in metrics and "num_videos" in metrics
        else []
    )
    notes += [_DSL_NOTE] if dsl else []
    if markdown and notes:
        notes = [""] + [note + "  " for note in notes]  # a paragraph after the table, one note per line
    return "\n".join(lines + notes)


def table_html(metrics: dict, title: str = "Retrieval results") -> str:
    """A self-contained HTML page with the recall table (values escaped)."""
    rows = _present_rows(metrics)
    head = "".join(f"<th>{h}</th>" for h in ("direction", "R@1", "R@5", "R@10", "MdR", "MnR"))
    body = "".join(
        "<tr><td>"
        + html.escape(label)
        + "</td>"
        + "".join(f"<td>{row[n]:.1f}</td>" for n in METRIC_NAMES)
        + "</tr>"
        for label, row in rows
    )
    foot = f"<p>{html.escape(_DSL_NOTE)}</p>" if any("DSL" in label for label, _ in rows) else ""
    size = (
        f"<p>{metrics['num_texts']} texts x {metrics['num_videos']} videos</p>"
        if "num_texts" in metrics and "num_videos" in metrics
        else ""
    )
    style = (
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 10px;text-align:right}td:first-child{text-align:left}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><table><tr>{head}</tr>{body}"
        f"</table>{size}{foot}</body></html>\n"
    )


def save_table(metrics: dict, out_dir: str | Path, title: str = "Retrieval results") -> dict[str, Path]:
    """Write ``metrics.json``, ``recall_table.md``, ``recall_table.html`` and ``recall_table.png`` into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "metrics.json",
        "markdown": out / "recall_table.md",
        "html": out / "recall_table.html",
        "png": out / "recall_table.png",
    }
    paths["json"].write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    paths["markdown"].write_text(format_table(metrics, markdown=True) + "\n")
    paths["html"].write_text(table_html(metrics, title))
    rows = _present_rows(metrics)
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.4 * (len(rows) + 1)))
    ax.axis("off")
    ax.set_title(title)
    table = ax.table(
        cellText=[[label] + [f"{row[n]:.1f}" for n in METRIC_NAMES] for label, row in rows],
        colLabels=["direction", "R@1", "R@5", "R@10", "MdR", "MnR"],
        loc="center",
        cellLoc="center",
    )
    table.auto_set_column_width(list(range(len(METRIC_NAMES) + 1)))
    table.scale(1, 1.4)
    if any("DSL" in label for label, _ in rows):
        fig.text(0.5, 0.02, _DSL_NOTE, ha="center", fontsize=8)
    fig.savefig(paths["png"], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths
