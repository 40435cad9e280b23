"""What a training run leaves for its user: metrics JSONL + TensorBoard, a PNG of the curves, a recall table.

``metrics.jsonl`` holds one JSON object per line: training records ``{"step", "epoch", "total", "vid",
"img", "kd", "lr", "grad_norm", "samples_per_s"}`` every ``log_every`` steps, and evaluation records
``{"step", "epoch", "eval": {...}, "t2v_R1"}``. On resume the records after the checkpoint's step are
dropped (they belong to the interrupted run), so the file always describes one consistent history.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

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
        if any(t in low for t in ("t2v", "text_to_video", "text2video")) and low.split("/")[-1].endswith("r1"):
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

            self.writer = SummaryWriter(str(self.path.parent / "tb"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:  # tensorboard is a dependency, but the JSONL alone is enough to go on
            logger.warning("tensorboard is not installed; metrics go to %s only", self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True, default=float) + "\n")
        if self.writer is not None:
            for name, value in flatten({k: v for k, v in record.items() if k not in ("step", "epoch")}).items():
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
    """Loss terms (left) and text-to-video R@1 (right) over optimiser steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if "total" in r]
    evals = [r for r in records if "t2v_R1" in r]
    fig, (ax_loss, ax_r1) = plt.subplots(1, 2, figsize=(10, 4))
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


def recall_table(metrics: dict | None) -> str:
    """The evaluator's recall table (training.metrics) or, failing that, one line per metric."""
    if not metrics:
        return "(no evaluation)"
    try:
        from training.metrics import format_table

        return format_table(metrics)
    except (ImportError, TypeError, KeyError, AttributeError):
        return "\n".join(f"{name:<28} {value:8.2f}" for name, value in flatten(metrics).items())


def finish_report(out: str | Path, metrics: dict | None, best: dict | None, decode_failures: set[str]) -> str:
    """Curves PNG, ``summary.json`` and the text shown at the end of a run (returned and logged)."""
    out = Path(out)
    png = plot_curves(out / METRICS_FILE, out / CURVES_FILE)
    summary = {"final": metrics, "best": best, "decode_failures": sorted(decode_failures),
               "adapters": {"last": str(out / "adapters" / "last"), "best": str(out / "adapters" / "best")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    lines = [f"final (last step) evaluation:\n{recall_table(metrics)}"]
    if best:
        lines.append(f"best t2v R@1 {best['t2v_R1']:.2f} at step {best['step']} -> {out / 'adapters' / 'best'}")
    lines.append(f"last adapters -> {out / 'adapters' / 'last'};  curves -> {png}")
    if decode_failures:
        lines.append(f"{len(decode_failures)} videos failed to decode and were replaced: {sorted(decode_failures)[:5]}")
    text = "\n".join(lines)
    logger.info("%s", text)
    return text
