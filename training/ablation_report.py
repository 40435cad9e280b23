"""An ablation over several seeds: mean ± standard deviation per model, as a table, one picture and a page.

Input: ``runs = {seed: {model name: {"t2v": {...}, "v2t": {...}}}}``, the evaluator's metrics of every
model for every seed (models in the order they should appear). :func:`summarize` gives, per model and
direction, ``{metric: {"mean", "std", "values"}}`` with the sample standard deviation (``ddof=1``; 0 for a
single seed). :func:`markdown_table` prints it, :func:`plot_ablation` draws every model side by side
(R@1 and R@5 of both directions, error bars = std), :func:`results_page` puts both on one HTML page.

Any other per-model numbers (``runs = {seed: {model: {column: value}}}``, e.g. R@1 per kind of text) go
through :func:`summarize_values` and :func:`value_table` (markdown or HTML; NaN shows as "–").
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import numpy as np

DIRECTIONS = ("t2v", "v2t")
TABLE_COLUMNS = (
    ("t2v", "R1"),
    ("t2v", "R5"),
    ("t2v", "R10"),
    ("t2v", "MnR"),
    ("v2t", "R1"),
    ("v2t", "R5"),
    ("v2t", "MnR"),
)
PLOT_BARS = (("t2v", "R1"), ("t2v", "R5"), ("v2t", "R1"), ("v2t", "R5"))


def summarize(runs: Mapping[int, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> dict:
    """Per model, direction and metric: mean, sample std (0 for one seed) and the values in seed order."""
    if not runs:
        raise ValueError("no runs to summarize")
    seeds = sorted(runs)
    models = list(runs[seeds[0]])
    for seed in seeds:
        if list(runs[seed]) != models:
            raise ValueError(f"seed {seed} has models {list(runs[seed])}, seed {seeds[0]} has {models}")
    summary: dict = {}
    for model in models:
        summary[model] = {}
        for direction in DIRECTIONS:
            metrics = runs[seeds[0]][model][direction]
            summary[model][direction] = {}
            for name in metrics:
                values = np.array([float(runs[s][model][direction][name]) for s in seeds])
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                summary[model][direction][name] = {
                    "mean": float(values.mean()),
                    "std": std,
                    "values": values.tolist(),
                }
    return summary


def _cell(stat: Mapping[str, float], n_seeds: int) -> str:
    return f"{stat['mean']:.1f} ± {stat['std']:.1f}" if n_seeds > 1 else f"{stat['mean']:.1f}"


def markdown_table(summary: Mapping, n_seeds: int) -> str:
    """One markdown row per model: t2v R@1/R@5/R@10/MnR and v2t R@1/R@5/MnR, ``mean ± std`` over seeds."""
    names = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MnR": "MnR"}
    head = "| model | " + " | ".join(f"{d} {names[m]}" for d, m in TABLE_COLUMNS) + " |"
    lines = [head, "|---" + "|---:" * len(TABLE_COLUMNS) + "|"]
    for model, row in summary.items():
        lines.append(f"| {model} | " + " | ".join(_cell(row[d][m], n_seeds) for d, m in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def summarize_values(runs: Mapping[int, Mapping[str, Mapping[str, float]]]) -> dict:
    """``{model: {column: {"mean", "std", "values"}}}`` over seeds, as :func:`summarize` (NaN stays NaN)."""
    if not runs:
        raise ValueError("no runs to summarize")
    seeds = sorted(runs)
    out: dict = {}
    for model, columns in runs[seeds[0]].items():
        out[model] = {}
        for column in columns:
            values = np.array([float(runs[s][model][column]) for s in seeds])
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[model][column] = {"mean": float(values.mean()), "std": std, "values": values.tolist()}
    return out


def _value_cell(stat: Mapping[str, float], n_seeds: int, digits: int) -> str:
    if np.isnan(stat["mean"]):
        return "–"
    if n_seeds > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def value_table(
    summary: Mapping, n_seeds: int, columns: list[str], *, html_table: bool = False, digits: int = 1
) -> str:
    """One row per model, one column per name in ``columns`` (mean ± std over seeds), markdown or HTML."""
    rows = [
        [model] + [_value_cell(values[c], n_seeds, digits) for c in columns]
        for model, values in summary.items()
    ]
    if html_table:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["model", *columns])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"
    lines = ["| model | " + " | ".join(columns) + " |", "|---" + "|---:" * len(columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def plot_ablation(summary: Mapping, path: str | Path, title: str) -> Path:
    """Every model side by side: grouped bars of t2v/v2t R@1 and R@5 (mean, error bar = std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summary)
    x = np.arange(len(models))
    width = 0.8 / len(PLOT_BARS)
    fig, ax = plt.subplots(figsize=(2.0 + 1.9 * len(models), 4.6))
    for k, (direction, metric) in enumerate(PLOT_BARS):
        means = [summary[m][direction][metric]["mean"] for m in models]
        stds = [summary[m][direction][metric]["std"] for m in models]
        bars = ax.bar(
            x + (k - (len(PLOT_BARS) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            label=f"{direction} R@{metric[1:]}",
        )
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in means], fontsize=7, padding=2)
    ax.set_xticks(x, [m.replace(" (", "\n(") for m in models], fontsize=8)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 110)
    ax.set_title(title, fontsize=10)
    ax.legend(ncol=len(PLOT_BARS), fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def results_page(
    summary: Mapping,
    n_seeds: int,
    picture: str,
    title: str,
    links: Mapping[str, str] | None = None,
    notes: str = "",
    sections: Mapping[str, str] | None = None,
) -> str:
    """A self-contained HTML page: the picture (a relative path), the mean ± std table, ``sections``
    (``{heading: HTML}``, the HTML already escaped, e.g. a :func:`value_table`), notes and links."""
    names = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MnR": "MnR"}
    head = "<th>model</th>" + "".join(f"<th>{d} {names[m]}</th>" for d, m in TABLE_COLUMNS)
    body = "".join(
        f"<tr><td>{html.escape(model)}</td>"
        + "".join(f"<td>{_cell(row[d][m], n_seeds)}</td>" for d, m in TABLE_COLUMNS)
        + "</tr>"
        for model, row in summary.items()
    )
    items = "".join(
        f"<li><a href='{html.escape(href)}'>{html.escape(text)}</a></li>"
        for text, href in (links or {}).items()
    )
    extra = "".join(f"<h2>{html.escape(h)}</h2>{body}" for h, body in (sections or {}).items())
    style = (
        "body{font-family:sans-serif;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 10px;text-align:right}td:first-child{text-align:left}"
    )
    spread = f"mean ± sample standard deviation over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<img src='{html.escape(picture)}' alt='ablation: every model side by side'>"
        f"<p>{html.escape(spread)}</p><table><tr>{head}</tr>{body}</table>{extra}"
        f"<p>{html.escape(notes)}</p><ul>{items}</ul></body></html>\n"
    )
