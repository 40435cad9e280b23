"""The validation sweep that chose the demo's learning rate and number of epochs (``demo.steps.LR``/``EPOCHS``).

    python -m pipelines.demo --sweep [--out outputs/demo-sweep]

Rule, fixed before the sweep ran: every ablation row trains with the same settings; only the learning rate
and the number of epochs are searched, on the *val* split (60 videos), seed 0; α, β and every other method
weight stay the paper's. Each learning rate of ``LRS`` trains the four rows for ``LONG`` epochs, evaluated
on val after every epoch. The learning rate with the highest mean val t2v R@1 over the four rows at the end
wins; the number of epochs is then the one of ``EPOCHS`` with the highest mean at that epoch of those runs
(ties: fewer epochs). An approximation, said plainly: epoch e of the LONG-epoch cosine schedule stands for a
run of e epochs with its own schedule. The test split is not touched. Prints the table, writes
``sweep.json`` into the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from demo import steps
from shared import demo_videos
from training.pretrain_demo_clip import ensure_demo_clip

LRS = (3e-3, 1e-2, 3e-2)
LONG = 8  # epochs of each sweep run (7 steps an epoch)
EPOCHS = (4, 6, 8)  # candidate epoch counts, read at these epochs of the LONG runs
STEPS_PER_EPOCH = 7


def _val_curve(run_dir: Path) -> dict[int, float]:
    """{epoch: val t2v R@1} of a sweep run (its evaluation after every epoch)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"] // STEPS_PER_EPOCH: r["t2v_R1"] for r in records if "t2v_R1" in r}


def _rows(data, clip, captions, out: Path, lr: float, quiet: bool) -> dict[str, dict[int, float]]:
    """Val t2v R@1 after each epoch of the four ablation rows trained at ``lr`` for LONG epochs (seed 0)."""
    curves = {}
    for i, (name, flags) in enumerate(steps.ABLATIONS.items()):
        run_dir = out / f"lr{lr:g}" / f"train-{i}"
        if not (run_dir / "adapters" / "last.json").is_file():  # a re-run resumes the sweep
            args = steps.train_args(data, clip, captions, run_dir, flags, False, 0, lr=lr, epochs=LONG)
            steps.run_command(*args, "--set", "diagnose_every=0", quiet=quiet)
        curves[name] = _val_curve(run_dir)
    return curves


def run_sweep(out: Path, *, quiet: bool = True) -> dict:
    out = Path(out).resolve()
    data = demo_videos.ensure_demo_data(progress=not quiet)
    clip = ensure_demo_clip(progress=not quiet)
    captions = steps.import_reference_captions(data, out, quiet)
    curves = {lr: _rows(data, clip, captions, out, lr, quiet) for lr in LRS}

    def mean(lr: float, epoch: int) -> float:
        return float(np.mean([c[epoch] for c in curves[lr].values()]))

    best_lr = max(LRS, key=lambda lr: mean(lr, LONG))
    best_epochs = max(EPOCHS, key=lambda e: (mean(best_lr, e), -e))
    names = list(steps.ABLATIONS)
    lines = ["| lr | epoch | " + " | ".join(names) + " | mean |", "|---:|---:|" + "---:|" * (len(names) + 1)]
    for lr in LRS:
        for e in EPOCHS:
            cells = " | ".join(f"{curves[lr][n][e]:.1f}" for n in names)
            lines.append(f"| {lr:g} | {e} | {cells} | {mean(lr, e):.1f} |")
    result = {
        "val_t2v_R1": {f"{lr:g}": curves[lr] for lr in LRS},
        "lr": best_lr,
        "epochs": best_epochs,
        "rule": __doc__.split("\n\n")[2],
    }
    (out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\nval t2v R@1 (60 val videos, seed 0), after epoch e of 8:\n" + "\n".join(lines))
    print(f"\nchosen: lr {best_lr:g}, {best_epochs} epochs (mean val t2v R@1 over the four rows)")
    return result
