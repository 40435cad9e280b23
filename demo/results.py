"""The demo's results: the ablation per kind of text with the teacher beside each row, what the loss
diagnostics show, one picture of each, and the page that puts them together (``<out>/results``).

Inputs, per seed and model: the in-process test evaluation (``demo.steps.evaluate_split``: ``t2v``/``v2t``,
``groups`` per kind, ``teacher``) and, for trained rows, the run folder's ``metrics.jsonl`` (its ``diag``
records, training.diagnostics).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from shared import demo_videos
from training import ablation_report
from training.reporting import read_metrics

KINDS = (*demo_videos.KINDS, "all")
KIND_COLUMNS = [f"t2v R@1 {k}" for k in KINDS] + [f"v2t R@1 {k}" for k in KINDS]
KIND_COLUMNS += [f"teacher t2v R@1 {k}" for k in KINDS]
DIAG_COLUMNS = ["cos(img, vid)", "cos(kd, vid)", "α·|g_img| / |g_vid|", "β·|g_kd| / |g_vid|"]
ALPHA, BETA = 0.3, 1.0  # the method's weights (training.config defaults), for the weighted pulls


def kind_columns(metrics: dict) -> dict[str, float]:
    """One evaluation's R@1 per kind of text (each kind's queries against the whole test gallery)."""
    out = {}
    for k in KINDS:
        own = metrics if k == "all" else metrics["groups"][k]
        teacher = metrics["teacher"] if k == "all" else metrics["teacher"]["groups"][k]
        out[f"t2v R@1 {k}"], out[f"v2t R@1 {k}"] = own["t2v"]["R1"], own["v2t"]["R1"]
        out[f"teacher t2v R@1 {k}"] = teacher["t2v"]["R1"]
    return out


def diagnostics_records(run_dir: Path | None) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "diag" in r] if run_dir else []


def diag_columns(records: list[dict]) -> dict[str, float]:
    """Means over the diagnosed steps: each image-level term's cosine with L_vid's gradient and its weighted
    gradient norm relative to L_vid's (NaN for a run without that term)."""

    def mean(term: str, fn) -> float:
        values = [fn(r["diag"]) for r in records if term in r["diag"]]
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    return {
        "cos(img, vid)": mean("img", lambda d: d["img"]["cos_vid"]),
        "cos(kd, vid)": mean("kd", lambda d: d["kd"]["cos_vid"]),
        "α·|g_img| / |g_vid|": mean("img", lambda d: ALPHA * d["img"]["grad_norm"] / d["vid"]["grad_norm"]),
        "β·|g_kd| / |g_vid|": mean("kd", lambda d: BETA * d["kd"]["grad_norm"] / d["vid"]["grad_norm"]),
    }


def plot_diagnostics(runs: dict[str, list[list[dict]]], path: Path) -> Path:
    """Cosine of L_img's and L_KD's gradients with L_vid's (left) and their weighted norms relative to
    L_vid's (right) over training steps, mean over seeds, for each model that has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cos, ax_pull) = plt.subplots(1, 2, figsize=(12, 4.2))
    for k, (model, seeds) in enumerate(runs.items()):
        for term, weight, style in (("img", ALPHA, "-"), ("kd", BETA, "--")):
            steps = sorted({r["step"] for recs in seeds for r in recs if term in r["diag"]})
            if not steps:
                continue
            by_step = {s: [r["diag"] for recs in seeds for r in recs if r["step"] == s] for s in steps}
            cos = [np.nanmean([d[term]["cos_vid"] for d in by_step[s]]) for s in steps]
            pull = [
                np.mean([weight * d[term]["grad_norm"] / d["vid"]["grad_norm"] for d in by_step[s]])
                for s in steps
            ]
            label = f"{model}: {'L_img' if term == 'img' else 'L_KD'}"
            ax_cos.plot(steps, cos, style, marker="o", color=f"C{k}", label=label)
            ax_pull.plot(steps, pull, style, marker="o", color=f"C{k}", label=label)
    ax_cos.axhline(0, color="grey", lw=0.8)
    ax_cos.set(xlabel="step", ylabel="cosine with L_vid's gradient", ylim=(-1.05, 1.05))
    ax_cos.set_title("direction: does the term pull where L_vid pulls?", fontsize=10)
    ax_pull.set(xlabel="step", ylabel="weighted gradient norm / L_vid's")
    ax_pull.set_yscale("log")
    ax_pull.set_title("strength: weight · |gradient| relative to L_vid's", fontsize=10)
    for ax in (ax_cos, ax_pull):
        ax.grid(alpha=0.3)
    ax_cos.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _no_nan(value):
    """NaN (a term a run does not have) as null: demo_results.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_results(
    out: Path,
    evaluations: dict[int, dict[str, dict]],
    run_dirs: dict[int, dict[str, Path | None]],
    steps: list[dict],
    clip_metrics: dict,
    settings: dict,
) -> str:
    """``results/``: demo_results.json/.md, ablation.png, diagnostics.png, index.html, timings.json.

    ``evaluations[seed][model]``: :func:`demo.steps.evaluate_split` output; ``run_dirs[seed][model]``: the
    training run folder (None for zero-shot). Returns the text printed at the end of the demo.
    """
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    seeds, n = sorted(evaluations), len(evaluations)
    directions = {
        s: {m: {d: e[d] for d in ablation_report.DIRECTIONS} for m, e in evaluations[s].items()}
        for s in seeds
    }
    summary = ablation_report.summarize(directions)
    kinds = ablation_report.summarize_values(
        {s: {m: kind_columns(e) for m, e in evaluations[s].items()} for s in seeds}
    )
    diag_records = {s: {m: diagnostics_records(d) for m, d in run_dirs[s].items()} for s in seeds}
    diags = ablation_report.summarize_values(
        {s: {m: diag_columns(r) for m, r in diag_records[s].items() if r} for s in seeds}
    )
    n_test = {
        k: evaluations[seeds[0]][next(iter(evaluations[seeds[0]]))]["groups"][k]["num_texts"]
        for k in demo_videos.KINDS
    }
    spread = f"mean ± std over seeds {seeds}" if n > 1 else f"seed {seeds[0]}"
    title = (
        f"DiscoVLA demo ablation: {sum(n_test.values())} held-out test videos ({n_test['static']} static, "
        f"{n_test['change']} change texts), last-epoch adapters, {spread}"
    )
    ablation_report.plot_ablation(summary, results / "ablation.png", title)
    models_with_diag = {m: [diag_records[s][m] for s in seeds] for m in diags}
    plot_diagnostics(models_with_diag, results / "diagnostics.png")
    kind_md = ablation_report.value_table(kinds, n, KIND_COLUMNS)
    diag_md = ablation_report.value_table(diags, n, DIAG_COLUMNS, digits=2)
    last_seed = seeds[-1]
    full = list(run_dirs[last_seed])[-1]
    links = {
        "training curves of the full method (last seed)": f"../seed-{last_seed}/train-3/curves.png",
        "captions of the tiny random LLaVA-NeXT (the captioning stage)": "../captions-llava-view/index.html",
        "every number (demo_results.json)": "demo_results.json",
    }
    notes = (
        f"Demo CLIP: held-out frame-to-description R@1 {clip_metrics.get('frame_to_description_r1_test', 0):.1f} %. "
        f"Trainings: lr {settings['lr']}, {settings['epochs']} epochs (chosen on the val split), evaluated once "
        "on the test split. R@1 per kind: that kind's queries against all test videos. Teacher: retrieval by "
        "S_img, the reference frame descriptions against the frames, through the row's model (what "
        "AlignDistill distils from). Diagnostics: means over the diagnosed steps (training.diagnostics)."
    )
    sections = {
        "R@1 per kind of text, and the teacher's": ablation_report.value_table(
            kinds, n, KIND_COLUMNS, html_table=True
        ),
        "Loss diagnostics (mean over the diagnosed steps)": ablation_report.value_table(
            diags, n, DIAG_COLUMNS, html_table=True, digits=2
        )
        + f"<p><img src='diagnostics.png' alt='loss diagnostics of {full}'></p>",
    }
    (results / "index.html").write_text(
        ablation_report.results_page(summary, n, "ablation.png", title, links, notes, sections)
    )
    table = ablation_report.markdown_table(summary, n)
    text = f"{title}\n\n{table}\n\nR@1 per kind of text:\n\n{kind_md}\n\nLoss diagnostics:\n\n{diag_md}"
    (results / "demo_results.md").write_text(text + "\n")
    payload = {
        "seeds": seeds,
        "settings": settings,
        "runs": {str(s): evaluations[s] for s in seeds},
        "summary": summary,
        "kinds": kinds,
        "diagnostics": diags,
        "demo_clip": clip_metrics,
    }
    (results / "demo_results.json").write_text(json.dumps(_no_nan(payload), indent=2) + "\n")
    (results / "timings.json").write_text(json.dumps(steps, indent=2) + "\n")
    return text
