"""Training outputs on object storage: ``output_dir=s3://...`` on a real S3-compatible server (moto, 127.0.0.1).

A tiny run written to S3 equals the same run written to local disk (adapters bit for bit, the same
metrics); a run interrupted after a checkpoint resumes from S3 and ends with the undisturbed run's
adapters; evaluation, indexing and ``load_model`` read adapters from S3 exactly as from a folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file

from shared.storage_errors import StorageError
from tests.helpers import colour_folder, free_port, tiny_config
from training.checkpoint import CheckpointError
from training.recipe import TrainRecipe
from training.run_dir import RunDir

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

BUCKET = "runs"
# 6 steps over 2+ epochs, a checkpoint every 2 steps, evaluations at 3 and 6 (adapters/best)
RUN = dict(batch_size=4, epochs=3, save_every=2, eval_every=3, warmup_ratio=0.2)
TIMING = ("samples_per_s",)  # the only fields of a metrics record that depend on the clock


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The 8 colour videos as the ``folder`` dataset (train and test splits) and their caption set."""
    root, captions = colour_folder(tmp_path_factory.mktemp("colours"))
    return root, captions


def _config(data, output_dir, **fields):
    root, captions = data
    return tiny_config(
        root / "unused", captions=str(captions), dataset="folder", annotations=str(root), **RUN, **fields
    ).replace(output_dir=str(output_dir))


def _train(cfg, stop_after=None, resume=False):
    recipe = TrainRecipe(cfg, resume=resume, progress=False).setup()
    try:
        return recipe.train(stop_after=stop_after), recipe
    finally:
        recipe.cleanup()


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory):
    """The reference: the run on local disk."""
    out = tmp_path_factory.mktemp("local") / "run"
    _train(_config(data, out))
    return out


def _read(s3, bucket: str, key: str) -> bytes:
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _assert_same_tensors(data: bytes, path) -> None:
    """Bit-identical tensors (the safetensors header's key order is not deterministic, so not the bytes)."""
    remote, local = load(data), load_file(str(path))
    assert remote.keys() == local.keys(), path
    for key, tensor in local.items():
        assert torch.equal(remote[key], tensor), f"{path}: {key}"


def _records(lines: bytes | str) -> list[dict]:
    text = lines.decode() if isinstance(lines, bytes) else lines
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in text.splitlines()]


def test_a_run_on_s3_equals_the_same_run_on_local_disk(s3, data, local_run):
    s3.make_bucket(BUCKET)
    uri = s3.uri(BUCKET, "equal/run")
    final, recipe = _train(_config(data, uri))
    assert not recipe.out.exists()  # the working folder is gone; everything is on S3

    keys = s3.keys(BUCKET, "equal/run/")  # keys ending in "/" are pyarrow's empty directory markers
    names = {k.removeprefix("equal/run/") for k in keys if not k.endswith("/")}
    local = {p.relative_to(local_run).as_posix() for p in local_run.rglob("*") if p.is_file()}
    tb = {n for n in local if n.startswith("tb/")}
    assert names - {n for n in names if n.startswith("tb/")} == local - tb  # the same files, nothing else
    assert len({n for n in names if n.startswith("tb/")}) == len(tb) >= 1  # (event file names hold a time)
    for name in (
        "adapters/last/adapters.safetensors",
        "adapters/best/adapters.safetensors",
        "checkpoint/optimizer.safetensors",
    ):
        _assert_same_tensors(_read(s3, BUCKET, f"equal/run/{name}"), local_run / name)
    for name in (
        "adapters/last/adapter_config.json",
        "adapters/best.json",
        "checkpoint/trainer_state.json",
        "checkpoint/rng_rank0.json",
    ):
        assert _read(s3, BUCKET, f"equal/run/{name}") == (local_run / name).read_bytes(), name
    remote_metrics = _records(_read(s3, BUCKET, "equal/run/metrics.jsonl"))
    assert remote_metrics == _records((local_run / "metrics.jsonl").read_text())
    assert [r["step"] for r in remote_metrics if "total" in r] == [1, 2, 3, 4, 5, 6]

    summary = json.loads(_read(s3, BUCKET, "equal/run/summary.json"))
    assert summary["final"] == json.loads((local_run / "summary.json").read_text())["final"] == final
    assert summary["adapters"]["last"] == s3.uri(BUCKET, "equal/run/adapters/last")  # loadable as given
    config = _read(s3, BUCKET, "equal/run/config.yaml").decode()
    assert f"output_dir: {uri}" in config


def test_a_run_interrupted_after_a_checkpoint_resumes_from_s3(s3, data, local_run):
    s3.make_bucket(BUCKET)
    uri = s3.uri(BUCKET, "resumed/run")
    assert _train(_config(data, uri), stop_after=5)[0] is None  # "crash" after step 5: checkpoint at 4
    assert json.loads(_read(s3, BUCKET, "resumed/run/checkpoint/trainer_state.json"))["position"]["step"] == 4
    assert not [k for k in s3.keys(BUCKET, "resumed/run/") if "checkpoint.tmp" in k]  # promoted

    _, recipe = _train(_config(data, uri), resume=True)
    run_info = json.loads(_read(s3, BUCKET, "resumed/run/run_info.json"))
    assert run_info["resumed_from_step"] == 4
    for name in ("adapters/last/adapters.safetensors", "checkpoint/optimizer.safetensors"):
        _assert_same_tensors(_read(s3, BUCKET, f"resumed/run/{name}"), local_run / name)
    records = _records(_read(s3, BUCKET, "resumed/run/metrics.jsonl"))
    assert [r["step"] for r in records if "total" in r] == [1, 2, 3, 4, 5, 6]  # one history, no repeats
    assert records == _records((local_run / "metrics.jsonl").read_text())


def test_resume_without_a_remote_checkpoint_names_the_uri(s3, data):
    s3.make_bucket(BUCKET)
    with pytest.raises(
        CheckpointError, match=r"no checkpoint at s3://runs/nothing/here/checkpoint \("
    ) as err:
        TrainRecipe(_config(data, s3.uri(BUCKET, "nothing/here")), resume=True)
    assert "\n" not in str(err.value) and "endpoint_override" not in str(err.value)
    unreachable = "s3://runs/x?endpoint_override=127.0.0.1:9&scheme=http"
    with pytest.raises(CheckpointError, match=r"^s3://runs/x/checkpoint: cannot read .*127.0.0.1:9") as err:
        RunDir(unreachable).checkpoint_to_resume()
    assert "\n" not in str(err.value)
    missing = r"^s3://nobucket/run/config.yaml: cannot write the run's file \(the bucket 'nobucket' does not"
    with pytest.raises(StorageError, match=missing) as err:
        TrainRecipe(_config(data, s3.uri("nobucket", "run")), progress=False).setup()
    assert "\n" not in str(err.value)


def test_a_checkpoint_caught_mid_replacement_is_still_found(s3, local_run):
    """The remote checkpoint is replaced without a rename: a crash after its marker was deleted leaves
    the complete copy in checkpoint.tmp/, which resume takes."""
    s3.make_bucket(BUCKET)
    s3.upload_dir(local_run / "checkpoint", BUCKET, "torn/run/checkpoint.tmp")
    s3.upload_dir(local_run / "checkpoint" / "adapters", BUCKET, "torn/run/checkpoint/adapters")
    run = RunDir(s3.uri(BUCKET, "torn/run"))
    try:
        folder = run.checkpoint_to_resume()
        local = sorted(p.relative_to(local_run / "checkpoint") for p in (local_run / "checkpoint").rglob("*"))
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == local
        assert (folder / "trainer_state.json").read_bytes() == (
            local_run / "checkpoint" / "trainer_state.json"
        ).read_bytes()
    finally:
        run.close()


def test_evaluate_index_and_load_model_read_adapters_from_s3(s3, data, local_run, tmp_path):
    from pipelines.evaluate import main as evaluate_cli
    from pipelines.index import main as index_cli
    from search import store
    from training import api

    s3.make_bucket(BUCKET)
    s3.upload_dir(local_run / "adapters", BUCKET, "shared/adapters")
    remote = s3.uri(BUCKET, "shared/adapters/best")
    local = str(local_run / "adapters" / "best")

    texts = ["a red video", "a blue video"]
    a, b = api.load_model(local), api.load_model(remote)
    assert torch.equal(api.encode_texts(a, texts), api.encode_texts(b, texts))

    root, _ = data
    common = ["--dataset", "folder", "--annotations", str(root), "--video-root", str(root)]
    common += ["--num-workers", "0", "--batch-size", "4", "--cache-dir", "none", "-q"]
    for name, adapters in (("local", local), ("s3", remote)):
        assert evaluate_cli([*common, "--adapters", adapters, "--out", str(tmp_path / name)]) == 0
    metrics = [json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("local", "s3")]
    assert metrics[0]["t2v"] == metrics[1]["t2v"] and metrics[0]["v2t"] == metrics[1]["v2t"]

    for name, adapters in (("local", local), ("s3", remote)):
        videos = ["--videos", str(root), "--adapters", adapters, "--out", str(tmp_path / f"index-{name}")]
        assert index_cli([*videos, "--pretrained", "none", "-q"]) == 0
    manifests = [store.read_manifest(tmp_path / f"index-{n}") for n in ("local", "s3")]
    tables = [
        store.read_table(tmp_path / f"index-{n}" / m["entries"]).sort_by("video_id")
        for n, m in zip(("local", "s3"), manifests, strict=True)
    ]
    assert tables[0].num_rows == 8 and tables[0]["video_id"].to_pylist() == tables[1]["video_id"].to_pylist()
    assert (store.embeddings_of(tables[0]) == store.embeddings_of(tables[1])).all()
    assert manifests[1]["provenance"]["adapters"] == remote  # as given, so that queries can load it
    assert manifests[1]["provenance"]["adapters_sha256"] == manifests[0]["provenance"]["adapters_sha256"]

    missing = s3.uri(BUCKET, "shared/adapters/nowhere")
    with pytest.raises(
        api.AdapterLoadError, match=r"^s3://runs/shared/adapters/nowhere/adapter_config.json: "
    ):
        api.load_model(missing)


def test_the_ray_launcher_writes_the_run_and_ray_trains_storage_to_s3(s3, local_run, tmp_path):
    """``pipelines.train --launcher ray`` on a one-node Ray (its own processes, torn down by pid): the run
    and Ray Train's own storage (``<output_dir>/ray``) land in the bucket; the adapters are the local run's."""
    from tests.ray_cluster import LocalRayCluster

    s3.make_bucket(BUCKET)
    uri = s3.uri(BUCKET, "ray/run")
    command = [sys.executable, "-m", "pipelines.train", "--preset", str(local_run / "config.yaml")]
    command += ["--set", f"output_dir={uri}", "--no-progress", "--launcher", "ray", "--ray-workers", "1"]
    with LocalRayCluster(head_cpus=2) as cluster:
        threads = str(torch.get_num_threads())  # the local run's: CPU sums depend on the thread count
        env = s3.env(cluster.env({**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(ROOT)}))
        done = subprocess.run(
            [*command, "--ray-address", cluster.address],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    keys = s3.keys(BUCKET, "ray/run/")
    assert any(k.endswith("checkpoint_manager_snapshot.json") for k in keys)  # Ray Train's storage
    assert [k for k in keys if k.startswith("ray/run/ray/") and "/checkpoint_" in k]  # its checkpoints
    remote = load(_read(s3, BUCKET, "ray/run/adapters/last/adapters.safetensors"))
    local = load_file(str(local_run / "adapters" / "last" / "adapters.safetensors"))
    assert remote.keys() == local.keys()
    for name, tensor in local.items():
        torch.testing.assert_close(remote[name], tensor, rtol=0, atol=0, msg=name)


def test_storage_locations_name_what_a_run_reads_and_writes(s3, data):
    from training.config import storage_locations

    root, captions = data
    uri = s3.uri(BUCKET, "where/run")
    inputs, outputs = storage_locations(_config(data, uri))
    assert inputs == [str(root), str(root), str(captions)]  # folder dataset: videos beside annotations
    assert outputs == [uri]
    cfg = _config(data, uri).replace(video_root="s3://videos/x", pretrained="/weights/clip.safetensors")
    assert storage_locations(cfg)[0] == [
        str(root),
        "s3://videos/x",
        str(captions),
        "/weights/clip.safetensors",
    ]


def _ddp_worker(rank: int, world: int, port: int, cfg) -> None:
    """One of ``world`` torchrun-like processes (the env:// rendezvous torchrun sets up)."""
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    os.environ.update(env, LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    _train(cfg)
    os._exit(0)  # skip gloo's teardown (see tests/test_distributed.py)


def test_two_processes_write_one_run_to_s3_with_every_ranks_rng_state(s3, data):
    """Under torchrun each process has its own working folder; rank 0 publishes, and the checkpoint holds
    every rank's RNG state (gathered to rank 0), so a resume on other machines restores them all."""

    s3.make_bucket(BUCKET)
    cfg = _config(data, s3.uri(BUCKET, "ddp/run"), reference_world_size=2)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), cfg), nprocs=2, join=True)
    names = {k.removeprefix("ddp/run/") for k in s3.keys(BUCKET, "ddp/run/") if not k.endswith("/")}
    assert {"checkpoint/rng_rank0.json", "checkpoint/rng_rank1.json", "summary.json"} <= names
    assert not [n for n in names if n.startswith("checkpoint.tmp")]
    rng = [json.loads(_read(s3, BUCKET, f"ddp/run/checkpoint/rng_rank{r}.json")) for r in (0, 1)]
    assert all(set(state) >= {"python", "numpy", "torch"} for state in rng)
    records = _records(_read(s3, BUCKET, "ddp/run/metrics.jsonl"))
    assert [r["step"] for r in records if "total" in r] == [1, 2, 3, 4, 5, 6]
