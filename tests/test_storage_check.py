"""The storage check on a real 3-node Ray cluster whose worker nodes share no disk (a private tmpfs each),
with an S3 server (moto) as the only shared storage: object-store locations pass on every node, local
paths that only the driver sees are refused in one line naming the node, and the tokens are removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.storage_check import StorageCheck, StorageCheckError
from shared.synthetic import make_test_video
from tests.ray_cluster import private_disk_cluster, private_disks_supported

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(private_disks_supported() is not None, reason=str(private_disks_supported())),
]


@pytest.fixture(scope="module")
def node_local(tmp_path_factory) -> Path:
    """A folder that the driver sees, and that each worker node sees as its own empty tmpfs."""
    return tmp_path_factory.mktemp("node-local")


@pytest.fixture(scope="module")
def cluster(node_local):
    with private_disk_cluster(node_local, num_cpus=1) as c:
        yield c


@pytest.fixture(scope="module")
def bucket(s3):
    s3.make_bucket("storage-check")
    client = s3.client()
    client.put_object(Bucket="storage-check", Key="videos/v0.mp4", Body=b"\0" * 4096)
    return "storage-check"


def test_object_store_locations_pass_on_every_node_and_leave_nothing(cluster, s3, bucket):
    check = StorageCheck(outputs=[s3.uri(bucket, "runs/a")], inputs=[s3.uri(bucket, "videos/v0.mp4")])
    with cluster.connect():
        check.on_cluster()
    assert check.seconds["nodes"] == 3  # the head and both worker nodes ran the probe
    assert not [k for k in s3.keys(bucket, "runs/a") if ".storage-check-" in k]


def test_a_local_output_that_nodes_do_not_share_is_refused_naming_the_node(cluster, node_local):
    out = node_local / "captions"
    with cluster.connect(), pytest.raises(StorageCheckError) as info:
        StorageCheck(outputs=[str(out)]).on_cluster()
    message = str(info.value)
    assert "\n" not in message
    assert str(out) in message and "cannot see the output location" in message
    assert "on Ray node 127.0.0.1 (node id" in message and "object store URI" in message
    assert not [p for p in out.iterdir() if p.name.startswith(".storage-check-")]  # token removed


def test_a_local_input_only_the_driver_has_is_refused(cluster, node_local):
    video = node_local / "only-here.mp4"
    video.write_bytes(b"\0" * 4096)
    with cluster.connect(), pytest.raises(StorageCheckError) as info:
        StorageCheck(inputs=[str(video)]).on_cluster()
    assert f"{video}: cannot read the input: no such file, folder or object (on Ray node" in str(info.value)
    with cluster.connect(), pytest.raises(StorageCheckError) as info:
        StorageCheck(inputs=[str(node_local)]).on_cluster()  # a folder the node has, but empty
    assert f"{node_local}: cannot read the input: the folder is empty here (on Ray node" in str(info.value)


def test_a_shared_local_path_passes(cluster, tmp_path):
    """tmp_path is not masked on the nodes: a local path every node sees (NFS, one machine) is fine."""
    (tmp_path / "v.mp4").write_bytes(b"\0" * 10)
    with cluster.connect():
        StorageCheck(outputs=[str(tmp_path / "out")], inputs=[str(tmp_path / "v.mp4")]).on_cluster()


def test_object_store_errors_are_one_line_naming_the_uri(s3, bucket):
    for location, expected in [
        (s3.uri("no-such-bucket", "out"), "the bucket 'no-such-bucket' does not exist"),
        (s3.uri(bucket, "videos/missing.mp4"), "no such file, folder or object"),
        (
            "s3://any/out?endpoint_override=127.0.0.1:1&scheme=http",
            "the endpoint 127.0.0.1:1 cannot be reached",
        ),
    ]:
        check = StorageCheck(outputs=[location]) if "out" in location else StorageCheck(inputs=[location])
        with pytest.raises(StorageCheckError) as info:
            check.on_driver()
        message = str(info.value)
        assert message.startswith(location.split("?")[0]) and expected in message and "\n" not in message


def test_a_read_only_output_is_refused_on_the_driver(tmp_path):
    """A read-only mount (root ignores file modes, so a real read-only tmpfs in a mount namespace)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    code = (
        "from shared.storage_check import StorageCheck, StorageCheckError\n"
        f"try:\n    StorageCheck(outputs=[{str(folder / 'out')!r}]).on_driver()\n"
        "except StorageCheckError as err:\n    print('REFUSED', err)\n"
    )
    script = f'mount -t tmpfs -o ro tmpfs {folder} && exec {sys.executable} -c "$0"'
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert f"REFUSED {folder / 'out'}: cannot write to the output location: read-only file system" in (
        out.stdout
    ), out.stderr[-2000:]


def test_a_read_only_caption_out_is_refused_before_ray_starts(tmp_path):
    """What a user sees: the caption command stops in its first second, naming --out; nothing started."""
    videos, folder = tmp_path / "videos", tmp_path / "ro"
    videos.mkdir()
    folder.mkdir()
    make_test_video(videos / "a.mp4", 1.0, 8.0, size=(64, 48), seed=0)
    (videos / "test.jsonl").write_text('{"video_id": "a", "text": "a clip"}\n')
    command = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "pipelines.caption",
        "--dataset",
        "folder",
        "--annotations",
        str(videos / "test.jsonl"),
        "--out",
        str(folder / "out"),
        "--backend",
        "transformers",
    ]
    script = f'mount -t tmpfs -o ro tmpfs {folder} && exec "$@"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {folder / 'out'}/.discovla-lease.json: read-only file system (choose a writable location)"
    ]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "import time:" in line}
    assert not {"ray", "torch", "transformers"} & imported  # refused before Ray or a model
