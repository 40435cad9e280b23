"""Ray Train on a real multi-node Ray cluster on 127.0.0.1: a killed worker node costs nothing but time.

The cluster (tests.ray_cluster) is a head without CPUs plus two worker nodes with 2 CPUs each, every node its
own ``ray start``. ``python -m pipelines.train --launcher ray --ray-address ... --ray-workers 2`` trains the
tiny configuration; once Ray Train holds the first reported checkpoint, the raylet of the node running the
training workers is killed (SIGKILL, with its workers). Ray restarts the worker group on the surviving node
from that checkpoint, and the final adapters equal those of an undisturbed run with the same seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import colour_folder
from tests.ray_cluster import LocalRayCluster, registered_checkpoint_step

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STEPS = 24  # 12 epochs x 2 global batches of 4 (8 videos): time to kill a node mid-run


def _train_command(address: str, root: Path, captions: Path, out: Path) -> list[str]:
    sets = [
        f"annotations={root}",
        f"captions={captions}",
        f"output_dir={out}",
        "batch_size=4",
        "epochs=12",
        "save_every=4",
        "eval_every=0",
        "eval_batch_size=4",
        "num_workers=0",
        "lr=3e-3",
        "seed=0",
    ]
    return [
        sys.executable,
        "-m",
        "pipelines.train",
        "--preset",
        "demo",
        "--pretrained",
        "none",
        "--no-progress",
        "--launcher",
        "ray",
        "--ray-address",
        address,
        "--ray-workers",
        "2",
        "--max-failures",
        "2",
        *[a for s in sets for a in ("--set", s)],
    ]


def _registered_step(out: Path) -> int | None:
    """The step of the latest checkpoint Ray Train's controller has registered (its manager's snapshot)."""
    for snapshot in out.glob("ray/*/checkpoint_manager_snapshot.json"):
        with contextlib.suppress(OSError):
            if (step := registered_checkpoint_step(snapshot.read_text())) is not None:
                return step
    return None


def _adapters(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapters" / "last" / "adapters.safetensors"))


@pytest.fixture(scope="module")
def cluster(monkeypatch_module):
    # a dead node is declared dead after ~2 s instead of Ray's default ~15-30 s
    monkeypatch_module.setenv("RAY_health_check_period_ms", "500")
    monkeypatch_module.setenv("RAY_health_check_failure_threshold", "3")
    monkeypatch_module.setenv("RAY_health_check_timeout_ms", "500")
    with LocalRayCluster(head_cpus=0) as c:
        c.add_node(num_cpus=2)
        c.add_node(num_cpus=2)
        yield c


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_training_survives_a_killed_worker_node_with_the_same_adapters(cluster, tmp_path):
    root, captions = colour_folder(tmp_path / "data")
    env = {**cluster.env(), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    calm = tmp_path / "undisturbed"
    done = subprocess.run(
        _train_command(cluster.address, root, captions, calm),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((calm / "run_info.json").read_text())["resumed_from_step"] == 0

    hit = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(
        _train_command(cluster.address, root, captions, hit),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while (
            (registered := _registered_step(hit)) is None
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert registered is not None, "Ray Train registered no checkpoint"
        assert proc.poll() is None, "training ended before a node could be killed"
        victim = cluster.node_running("RayTrainWorker")
        assert victim is not None, "no node runs the training workers"
        cluster.kill_node(victim)
        assert proc.wait(timeout=300) == 0, (tmp_path / "killed.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        log.close()

    resumed = json.loads((hit / "run_info.json").read_text())["resumed_from_step"]
    assert registered <= resumed < STEPS, f"not restarted from a checkpoint (resumed_from_step={resumed})"
    calm_adapters, hit_adapters = _adapters(calm), _adapters(hit)
    assert calm_adapters.keys() == hit_adapters.keys()
    for name, tensor in calm_adapters.items():
        torch.testing.assert_close(hit_adapters[name], tensor, rtol=0, atol=0, msg=name)
    records = [json.loads(line) for line in (hit / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "total" in r] == list(
        range(1, STEPS + 1)
    )  # one history, no repeats
