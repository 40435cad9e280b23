"""The demo's results page (demo.results): the per-kind table with the teacher beside each row, the loss
diagnostics table and picture, strict JSON; from hand-made evaluations and training logs (no training)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from demo.results import DIAG_COLUMNS, KIND_COLUMNS, write_results


def _recall(r1: float) -> dict:
    return {"R1": r1, "R5": 80.0, "R10": 90.0, "MdR": 1.0, "MnR": 2.0}


def _evaluation(static: float, change: float, teacher_change: float) -> dict:
    every = (42 * static + 18 * change) / 60
    return {
        "t2v": _recall(every),
        "v2t": _recall(every),
        "num_texts": 60,
        "num_videos": 60,
        "groups": {
            "static": {"t2v": _recall(static), "v2t": _recall(static), "num_texts": 42, "num_videos": 42},
            "change": {"t2v": _recall(change), "v2t": _recall(change), "num_texts": 18, "num_videos": 18},
        },
        "teacher": {
            "t2v": _recall(50.0),
            "v2t": _recall(50.0),
            "num_videos": 60,
            "groups": {
                "static": {"t2v": _recall(60.0), "v2t": _recall(60.0), "num_videos": 42},
                "change": {"t2v": _recall(teacher_change), "v2t": _recall(teacher_change), "num_videos": 18},
            },
        },
    }


def _run_dir(tmp_path, name: str, cos_img: float | None) -> object:
    """A training folder whose metrics.jsonl has diagnostics records at steps 1 and 7."""
    run = tmp_path / name
    run.mkdir()
    records = []
    for step in (1, 7):
        diag = {"vid": {"value": 2.0, "grad_norm": 1.0, "cos_vid": 1.0}}
        if cos_img is not None:
            diag["img"] = {"value": 3.0, "grad_norm": 2.0, "cos_vid": cos_img}
            diag["kd"] = {"value": 0.5, "grad_norm": 0.5, "cos_vid": -cos_img}
        records.append({"step": step, "total": 2.0, "diag": diag})
        records.append({"step": step + 1, "total": 1.9})  # a step without diagnostics
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_results_page_has_the_per_kind_table_the_teacher_and_the_diagnostics(tmp_path):
    evaluations = {
        seed: {
            "zero-shot": _evaluation(20.0, 10.0, 5.0),
            "LoRA": _evaluation(60.0 + seed, 30.0, 5.0),
            "full": _evaluation(50.0, 20.0 + 2 * seed, 5.0),
        }
        for seed in (0, 1)
    }
    run_dirs = {
        seed: {
            "zero-shot": None,
            "LoRA": _run_dir(tmp_path, f"lora-{seed}", None),
            "full": _run_dir(tmp_path, f"full-{seed}", 0.2 + 0.2 * seed),
        }
        for seed in (0, 1)
    }
    out = tmp_path / "out"
    text = write_results(
        out,
        evaluations,
        run_dirs,
        [{"step": "x", "wall_s": 1.0, "cpu_s": 1.0}],
        {},
        {"lr": 0.01, "epochs": 8},
    )
    results = json.loads(
        (out / "results" / "demo_results.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"demo_results.json holds {c}: not strict JSON"),
    )
    kinds = results["kinds"]
    assert set(kinds) == {"zero-shot", "LoRA", "full"} and set(kinds["full"]) == set(KIND_COLUMNS)
    assert kinds["LoRA"]["t2v R@1 static"]["values"] == [60.0, 61.0]
    assert kinds["full"]["t2v R@1 change"]["mean"] == 21.0
    assert kinds["full"]["teacher t2v R@1 change"]["mean"] == 5.0
    diags = results["diagnostics"]
    assert set(diags) == {"LoRA", "full"} and set(diags["full"]) == set(DIAG_COLUMNS)
    assert diags["full"]["cos(img, vid)"]["values"] == pytest.approx([0.2, 0.4])
    assert diags["full"]["cos(kd, vid)"]["mean"] == pytest.approx(-0.3)
    assert diags["full"]["α·|g_img| / |g_vid|"]["mean"] == pytest.approx(0.3 * 2.0)
    assert diags["LoRA"]["cos(img, vid)"]["mean"] is None  # no image-level term in that run
    page = (out / "results" / "index.html").read_text()
    assert "<h2>R@1 per kind of text, and the teacher&#x27;s</h2>" in page
    assert "<th>teacher t2v R@1 change</th>" in page and "<td>21.0 ± 1.4</td>" in page
    assert "<img src='diagnostics.png'" in page and "<img src='ablation.png'" in page
    assert "| full | 50.0 ± 0.0 | 21.0 ± 1.4 |" in text  # the per-kind table printed at the end
    for picture in ("ablation.png", "diagnostics.png"):
        assert Image.open(out / "results" / picture).size[0] > 600
