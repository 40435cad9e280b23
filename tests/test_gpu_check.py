"""scripts/gpu_check.sh: the CPU-only answer (clear message, exit 0), the guarded rows, the time budget.

The GPU figures themselves need a GPU; here the same rows run with ``--device cpu --tiny`` (tiny models,
tiny workloads) so that everything except the CUDA calls is exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=environ, timeout=600)


def test_cpu_only_machine_gets_a_clear_message_and_exit_0():
    proc = run_script(CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device is visible" in proc.stdout and "Nothing to measure" in proc.stdout
    assert "| row |" not in proc.stdout  # no table of empty figures


def test_help_and_unknown_rows(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--rows", "train-b32-fp32,train-b99-fp8"])
    assert exit_info.value.code == 2
    assert "unknown rows ['train-b99-fp8']" in capsys.readouterr().err
    assert "train-b16-bf16" in gpu_check.build_parser().format_help()


def test_rows_past_the_budget_are_reported_not_run(capsys):
    rc = gpu_check.main(
        ["--device", "cpu", "--tiny", "--budget-s", "0", "--rows", "train-b32-fp32,caption-vllm"]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert out.count("skipped: time budget used up") == 2
    assert "| train-b32-fp32 |" in out and "| caption-vllm |" in out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_row_measures_a_real_step(precision):
    r = gpu_check.train_step("DiscoVLA-Tiny", precision, gpu_check.TINY, torch.device("cpu"))
    assert r["s_per_step"] > 0 and r["peak_gb"] is None  # no GPU memory figure on the CPU


def test_eval_row_counts_videos():
    r = gpu_check.eval_videos("DiscoVLA-Tiny", "bf16", gpu_check.TINY, torch.device("cpu"))
    assert r["videos_per_s"] > 0


@pytest.mark.slow
def test_a_failing_row_prints_an_error_row_and_the_others_still_run():
    """The vLLM row's interpreter does not exist: an error row; the rows around it are measured."""
    proc = run_script(
        "--device",
        "cpu",
        "--tiny",
        "--rows",
        "train-b32-fp32,caption-vllm,caption-transformers",
        "--vllm-python",
        "/nonexistent/python",
    )
    assert proc.returncode == 1, proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table] == [
        "| row",
        "| train-b32-fp32",
        "| caption-vllm",
        "| caption-transformers",
    ]
    assert table[1].endswith("| ok |") and table[3].endswith("| ok |")
    assert "could not start /nonexistent/python" in table[2]
    s_per_step = float(table[1].split("|")[2])
    frames_per_s = float(table[3].split("|")[4])
    assert s_per_step > 0 and frames_per_s > 0
