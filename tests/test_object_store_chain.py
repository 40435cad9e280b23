"""The whole chain on a cluster whose nodes share nothing but an object store, against the same chain on one
machine's disk.

The cluster (``tests.ray_cluster``) is a head without CPUs plus two worker nodes, each in its own mount
namespace with a private tmpfs over the Ray temp folder and over ``node_local`` (a folder the driver has
too), so that what one node writes locally no other process sees. An S3 server (moto, ``tests.s3_server``)
on 127.0.0.1 is the only shared storage. The code, the tiny models and the annotation files are on every
node, as an image or a package would put them there; the videos are only in the bucket.

1. ``pipelines.caption --video-root s3://... --out s3://... --save-frames`` on the cluster;
2. ``pipelines.train --launcher ray`` from the S3 caption set and frame store with ``output_dir=s3://...``,
   a worker node killed after Ray Train registered the first checkpoint (Ray restarts the worker on the
   node left, from the checkpoint in the bucket);
3. ``pipelines.evaluate --adapters s3://... --video-root s3://...``.

The reference runs the same three commands on local files with one machine's Ray (captioning) and the local
launcher: captions, adapters and metrics must be equal. Local outputs on the cluster are refused up front.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load

from captioning.tiny_model import save_tiny_llava_next
from shared.shards.example import write_example_set
from tests.caption_runs import tiny_caption_command
from tests.helpers import colour_videos
from tests.ray_cluster import private_disk_cluster, private_disks_supported, registered_checkpoint_step

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(private_disks_supported() is not None, reason=str(private_disks_supported())),
]
REPO = Path(__file__).resolve().parents[1]
BUCKET = "chain"
F, SHORT = 4, 32  # the demo preset's frames; DiscoVLA-Tiny's input size
STEPS = 16  # 8 epochs x 2 batches of 4


@pytest.fixture(scope="module")
def data(tmp_path_factory, s3):
    root = tmp_path_factory.mktemp("chain")
    videos = root / "videos"
    videos.mkdir()
    items = colour_videos(videos, n=8)
    annotations = root / "annotations"
    annotations.mkdir()
    for split in ("train", "test"):
        rows = [{"video_id": f"{i.video_id}.mp4", "text": i.text} for i in items]
        (annotations / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s3.make_bucket(BUCKET)
    s3.upload_dir(videos, BUCKET, "videos")
    return {
        "root": root,
        "videos": videos,
        "annotations": annotations,
        "model": save_tiny_llava_next(root / "tiny-llava"),
    }


@pytest.fixture(scope="module")
def node_local(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("node-local")


@pytest.fixture(scope="module")
def cluster(node_local):
    with private_disk_cluster(node_local) as c:
        yield c


def _run(command: list[str], env: dict, log: Path, timeout: float = 400, during=None) -> str:
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            if during is not None:
                during(proc)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 0, text[-5000:]
    return text


def _env(base: dict, s3) -> dict:
    return {**s3.env(base), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _caption(data, video_root: str, out: str, ray: list[str]) -> list[str]:
    options = ["--video-root", video_root, "--save-frames", "--save-frames-size", str(SHORT)]
    options += ["--save-frames-codec", "png", "--engines", "2", "--gpus-per-engine", "0"]
    options += ["--cpus-per-engine", "1", *ray]
    annotations = data["annotations"] / "train.jsonl"
    return tiny_caption_command(
        annotations, out, data["model"], frames=F, max_tokens=4, shard_size=4, options=options, split="train"
    )


def _train(
    data, video_root: str, captions: str, out: str, launcher: list[str], frame_store: bool = True
) -> list[str]:
    sets = {
        "annotations": str(data["annotations"]),
        "video_root": video_root,
        "captions": captions,
        "output_dir": out,
        "batch_size": "4",
        "epochs": "8",
        "save_every": "4",
        "eval_every": "0",
        "eval_batch_size": "4",
        "num_workers": "0",
        "lr": "3e-3",
        "seed": "0",
    }
    if frame_store:
        sets["frame_store"] = _join(captions, "frames")
    return [
        sys.executable,
        "-m",
        "pipelines.train",
        "--preset",
        "demo",
        "--pretrained",
        "none",
        "--no-progress",
        *launcher,
        *[a for key, value in sets.items() for a in ("--set", f"{key}={value}")],
    ]


def _evaluate(data, video_root: str, adapters: str, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipelines.evaluate",
        "--dataset",
        "folder",
        "--split",
        "test",
        "--annotations",
        str(data["annotations"]),
        "--video-root",
        video_root,
        "--adapters",
        adapters,
        "--pretrained",
        "none",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]


def _join(uri_or_path: str, *names: str) -> str:
    """``names`` appended to a local path or inside a URI (its query kept)."""
    base, _, query = uri_or_path.partition("?")
    joined = "/".join([base.rstrip("/"), *names])
    return f"{joined}?{query}" if query else joined


def _caption_rows(s3, prefix: str | None, local: Path | None) -> list[tuple]:
    """(video_id, frame_pos, caption) of every row of the set's data/ files."""
    if prefix is not None:
        client = s3.client()
        tables = [
            pq.read_table(__import__("io").BytesIO(client.get_object(Bucket=BUCKET, Key=k)["Body"].read()))
            for k in s3.keys(BUCKET, f"{prefix}/data/")
            if k.endswith(".parquet")
        ]
    else:
        tables = [pq.read_table(p) for p in sorted((local / "data").glob("*.parquet"))]
    rows = [(r["video_id"], r["frame_pos"], r["caption"]) for t in tables for r in t.to_pylist()]
    return sorted(rows)


def _s3_bytes(s3, key: str) -> bytes:
    return s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _registered_step(s3, prefix: str) -> int | None:
    """The step of the latest checkpoint Ray Train's controller registered in the bucket, if any."""
    for key in s3.keys(BUCKET, prefix):
        if key.endswith("checkpoint_manager_snapshot.json"):
            if (step := registered_checkpoint_step(_s3_bytes(s3, key))) is not None:
                return step
    return None


def test_the_chain_on_object_storage_equals_the_chain_on_local_disk(cluster, data, s3, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    s3_videos = s3.uri(BUCKET, "videos")
    s3_captions, s3_run = s3.uri(BUCKET, "captions"), s3.uri(BUCKET, "run")
    env = _env(cluster.env(), s3)

    # the chain on the cluster, every location in the bucket
    _run(
        _caption(data, s3_videos, s3_captions, ["--ray-address", cluster.address]), env, logs / "caption.log"
    )

    def kill_a_node_after_the_first_checkpoint(proc):
        deadline = time.monotonic() + 300
        while _registered_step(s3, "run/") is None and proc.poll() is None:
            assert time.monotonic() < deadline, "Ray Train registered no checkpoint"
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before a node could be killed"
        victim = cluster.node_running("RayTrainWorker")
        assert victim is not None, "no node runs the training worker"
        cluster.kill_node(victim)

    ray_launcher = ["--launcher", "ray", "--ray-address", cluster.address, "--ray-workers", "1"]
    _run(
        _train(data, s3_videos, s3_captions, s3_run, [*ray_launcher, "--max-failures", "2"]),
        env,
        logs / "train.log",
        timeout=600,
        during=kill_a_node_after_the_first_checkpoint,
    )
    # evaluation on the driver's machine, reading the adapters and the videos from the bucket
    _run(
        _evaluate(data, s3_videos, _join(s3_run, "adapters", "last"), tmp_path / "eval-s3"),
        env,
        logs / "e.log",
    )

    # the same chain on one machine's disk
    local = tmp_path / "local"
    local_env = _env(os.environ, s3)
    _run(
        _caption(data, str(data["videos"]), str(local / "captions"), ["--num-cpus", "3"]),
        local_env,
        logs / "lc",
    )
    _run(
        _train(
            data, str(data["videos"]), str(local / "captions"), str(local / "run"), ["--launcher", "local"]
        ),
        local_env,
        logs / "lt",
    )
    _run(
        _evaluate(
            data, str(data["videos"]), str(local / "run" / "adapters" / "last"), tmp_path / "eval-local"
        ),
        local_env,
        logs / "le",
    )

    # captions: the same rows
    assert _caption_rows(s3, "captions", None) == _caption_rows(s3, None, local / "captions")
    assert "frames/manifest.json" in [k.removeprefix("captions/") for k in s3.keys(BUCKET, "captions/")]
    # training: restarted from a checkpoint in the bucket, and the same adapters as on local disk
    info = json.loads(_s3_bytes(s3, "run/run_info.json"))
    assert 0 < info["resumed_from_step"] < STEPS, info
    remote = load(_s3_bytes(s3, "run/adapters/last/adapters.safetensors"))
    mine = load((local / "run" / "adapters" / "last" / "adapters.safetensors").read_bytes())
    assert remote.keys() == mine.keys()
    for name, tensor in mine.items():
        torch.testing.assert_close(remote[name], tensor, rtol=0, atol=0, msg=name)
    for name in ("metrics.jsonl", "config.yaml", "summary.json", "curves.png"):
        assert f"run/{name}" in s3.keys(BUCKET, "run/"), name
    # evaluation: the same metrics
    s3_metrics = json.loads((tmp_path / "eval-s3" / "metrics.json").read_text())
    local_metrics = json.loads((tmp_path / "eval-local" / "metrics.json").read_text())
    s3_metrics.pop("setup"), local_metrics.pop("setup")  # names the adapters' location
    assert s3_metrics == local_metrics and "t2v" in str(s3_metrics.keys())


def test_local_outputs_on_the_cluster_are_refused_up_front_naming_the_node(
    cluster, data, s3, node_local, tmp_path
):
    env = _env(cluster.env(), s3)
    s3_videos = s3.uri(BUCKET, "videos")
    example = tmp_path / "captions"  # a caption set in the bucket for the trainer's inputs
    ids = [f"{c}.mp4" for c in ("red", "green")]
    write_example_set(example, ids, num_frames=F, num_shards=1, dataset="folder", split="train")
    s3.upload_dir(example, BUCKET, "refusal-captions")
    for name, command in [
        ("caption", _caption(data, s3_videos, str(node_local / "out"), ["--ray-address", cluster.address])),
        (
            "train",
            _train(
                data,
                s3_videos,
                s3.uri(BUCKET, "refusal-captions"),
                str(node_local / "run"),
                ["--launcher", "ray", "--ray-address", cluster.address, "--ray-workers", "1"],
                frame_store=False,
            ),
        ),
    ]:
        started = time.monotonic()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, (name, done.stdout[-3000:], done.stderr[-3000:])
        error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert error and "cannot see the output location" in error[0] and "on Ray node 127.0.0.1" in error[0]
        assert str(node_local) in error[0], error[0]
        assert "Traceback" not in done.stderr
        assert time.monotonic() - started < 120, name
