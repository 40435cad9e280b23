"""The caption command on a real multi-node Ray cluster on this machine (``tests.ray_cluster``): a head
with no CPUs and two worker nodes, each its own raylet. One engine actor is killed mid-run, then one worker
node's raylet: each run finishes, its rows equal those of an undisturbed run, nothing is written twice,
and ``validate`` passes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from captioning.tiny_model import save_tiny_llava_next
from shared.shards import read_caption_rows
from shared.shards.validate import validate_caption_set
from shared.synthetic import make_test_video
from tests.caption_runs import tiny_caption_command
from tests.ray_cluster import LocalRayCluster, _cmdline, _parent

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VIDEOS = [f"clip{i:02d}" for i in range(24)]
F = 2
SHARD_SIZE = 4  # 24 videos -> 6 shards


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_data")
    videos = root / "videos"
    videos.mkdir()
    for seed, video_id in enumerate(VIDEOS):
        make_test_video(videos / f"{video_id}.mp4", 1.5, 8.0, size=(64, 48), seed=seed)
    (videos / "test.jsonl").write_text("".join(json.dumps({"video_id": v, "text": v}) + "\n" for v in VIDEOS))
    return {"videos": videos, "model": save_tiny_llava_next(root / "tiny-llava")}


@pytest.fixture(scope="module")
def cluster():
    with LocalRayCluster(head_cpus=0) as cluster:
        nodes = [cluster.add_node(num_cpus=3), cluster.add_node(num_cpus=3)]
        yield cluster, nodes


def _command(data, out, address: str) -> list[str]:
    return tiny_caption_command(
        data["videos"] / "test.jsonl",
        out,
        data["model"],
        frames=F,
        max_tokens=4,
        shard_size=SHARD_SIZE,
        options=[
            "--engines",
            "2",
            "--gpus-per-engine",
            "0",
            "--cpus-per-engine",
            "1",
            "--ray-address",
            address,
        ],
    )


def _caption(cluster, data, out, disturb=None) -> str:
    """Run the command against the cluster; ``disturb()`` is called once the first shard is written."""
    log = out.parent / f"{out.name}.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            _command(data, out, cluster.address),
            cwd=REPO,
            env=cluster.env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            if disturb is not None:
                deadline = time.monotonic() + 180
                while not list((out / "_stats").glob("*.json")) and proc.poll() is None:
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.05)
                assert proc.poll() is None, "the run ended before it could be disturbed"
                disturb()
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def _rows(out) -> list[tuple]:
    rows = sorted(tuple(r.values()) for r in read_caption_rows(out).table.to_pylist())
    assert len({(r[2], r[3]) for r in rows}) == len(rows) == len(VIDEOS) * F  # none lost, none doubled
    return rows


@pytest.fixture(scope="module")
def undisturbed(cluster, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster_runs") / "undisturbed"
    text = _caption(cluster[0], data, out)
    assert "captioned 24 videos" in text and "engine restarts" not in text
    return _rows(out)


def _busy_engine(cluster: LocalRayCluster) -> int:
    """An engine actor process of this cluster that is captioning right now."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        busy = [
            pid for pid in cluster.processes() if _cmdline(pid).startswith("ray::EngineWorker.caption_call")
        ]
        if busy:
            return busy[0]
        time.sleep(0.01)
    raise AssertionError("no busy engine actor found")


def test_an_engine_actor_killed_mid_run(cluster, data, undisturbed, tmp_path):
    import os

    out = tmp_path / "actor-killed"
    text = _caption(cluster[0], data, out, disturb=lambda: os.kill(_busy_engine(cluster[0]), signal.SIGKILL))
    assert "engine restarts: 1" in text
    assert _rows(out) == undisturbed
    assert validate_caption_set(out).ok


def test_a_worker_node_lost_mid_run(cluster, data, undisturbed, tmp_path):
    ray_cluster, nodes = cluster
    out = tmp_path / "node-lost"

    def kill_the_node_of_a_busy_engine():
        raylet = _parent(_busy_engine(ray_cluster))
        (node,) = [n for n in nodes if raylet in n.raylet_pids(ray_cluster.temp_dir)]
        ray_cluster.kill_node(node)

    text = _caption(ray_cluster, data, out, disturb=kill_the_node_of_a_busy_engine)
    assert "engine restarts: " in text  # the engine on the lost node was replaced on the other one
    assert _rows(out) == undisturbed
    assert validate_caption_set(out).ok
