"""One writer at a time (shared.lease): a second writer is refused naming the holder, a holder killed with
kill -9 stops blocking (at once on this host, when its lease expires from another host), on a local
folder and on an object store (moto's S3 server); two ``pipelines.caption`` runs started at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.lease import LEASE_NAME, OutputBusyError, OutputLease
from shared.shards.storage import resolve

REPO = Path(__file__).resolve().parents[1]
BUCKET = "leases"


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    """An output location: a local folder, or a prefix in the session's S3 server."""
    if request.param == "local":
        return str(tmp_path / "out")
    s3 = request.getfixturevalue("s3")
    s3.make_bucket(BUCKET)
    return s3.uri(BUCKET, f"{request.node.name.replace('[', '-').rstrip(']')}/out")


def _lease_record(out: str) -> dict | None:
    loc = resolve(out).join(LEASE_NAME)
    return json.loads(loc.read_bytes()) if loc.exists() else None


def test_a_second_writer_is_refused_naming_the_holder(out):
    with OutputLease(out, what="caption"):
        held = _lease_record(out)
        with pytest.raises(OutputBusyError) as caught:
            OutputLease(out, what="framestore build").acquire()
        message = str(caught.value)
        assert "\n" not in message and message.startswith(out.split("?")[0])
        assert f"another caption run on host {socket.gethostname()!r}, pid {os.getpid()}" in message
        assert f"started {held['started_at']}" in message
    assert _lease_record(out) is None  # released
    with OutputLease(out, what="framestore build"):  # and free again
        assert _lease_record(out)["what"] == "framestore build"


@pytest.mark.parametrize("stop", [RuntimeError("engine died"), KeyboardInterrupt()])
def test_the_lease_is_released_on_an_error_or_an_interrupt(tmp_path, stop):
    with pytest.raises(type(stop)):
        with OutputLease(tmp_path, what="caption"):
            assert (tmp_path / LEASE_NAME).is_file()
            raise stop
    assert not (tmp_path / LEASE_NAME).exists()


def test_the_holder_renews_its_lease_past_its_expiry(tmp_path):
    with OutputLease(tmp_path, what="caption", ttl_s=1.5, renew_s=0.3):
        first = _lease_record(str(tmp_path))["expires_at"]
        time.sleep(2.0)  # longer than the ttl: only renewals keep it
        assert _lease_record(str(tmp_path))["expires_at"] > first + 1.0
        with pytest.raises(OutputBusyError):
            OutputLease(tmp_path, what="caption").acquire()


HOLDER = """
import sys, time
from shared.lease import OutputLease
lease = OutputLease(sys.argv[1], what="caption", ttl_s=float(sys.argv[2]), renew_s=float(sys.argv[2]) / 4)
lease.acquire()
print("held", flush=True)
time.sleep(600)
"""


def _start_holder(out: str, ttl_s: float, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", HOLDER, out, str(ttl_s)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        raise AssertionError(f"the holder did not take the lease: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_holder_killed_on_this_host_is_taken_over_at_once(out):
    holder = _start_holder(out, ttl_s=60)
    try:
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            OutputLease(out, what="caption").acquire()
    finally:
        _kill9(holder)
    started = time.monotonic()
    with OutputLease(out, what="caption"):  # its lease has 60 s left, but its process is gone
        assert time.monotonic() - started < 10
        assert _lease_record(out)["pid"] == os.getpid()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare for another hostname"
)
def test_a_holder_killed_on_another_host_blocks_until_its_lease_expires(s3):
    """The holder runs in its own UTS namespace, so its host name is not ours: no liveness check can
    see it, only the lease's expiry frees the location, as for a node lost with its process."""
    s3.make_bucket(BUCKET)
    out = s3.uri(BUCKET, "other-host/out")
    holder = _start_holder(
        out, ttl_s=4, prefix=("unshare", "--uts", "sh", "-c", 'hostname other-node && exec "$@"', "sh")
    )
    _kill9(holder)
    killed = time.monotonic()
    with pytest.raises(OutputBusyError, match="on host 'other-node'"):
        OutputLease(out, what="caption").acquire()
    while True:
        try:
            with OutputLease(out, what="caption"):
                waited = time.monotonic() - killed
                break
        except OutputBusyError:
            assert time.monotonic() - killed < 30, "the expired lease was never taken over"
            time.sleep(0.5)
    assert 1.0 < waited < 15  # its last renewal + ttl 4 s (+ settle and polling)


# ---- two caption runs at once --------------------------------------------------------------------------


@pytest.mark.slow
def test_two_caption_runs_at_once_the_second_is_refused_up_front(tmp_path):
    from captioning.tiny_model import save_tiny_llava_next
    from shared.shards import read_manifest
    from shared.synthetic import make_test_video
    from tests.caption_runs import tiny_caption_command

    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in range(3):
        make_test_video(videos / f"v{seed}.mp4", 2.0, 10.0, size=(64, 48), seed=seed)
    annotations = videos / "test.jsonl"
    annotations.write_text("".join(json.dumps({"video_id": f"v{i}", "text": "x"}) + "\n" for i in range(3)))
    model = save_tiny_llava_next(tmp_path / "tiny-llava")
    out = tmp_path / "captions"
    command = tiny_caption_command(
        annotations, out, model, frames=2, max_tokens=3, shard_size=2, options=["--num-cpus", "2"]
    )
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / LEASE_NAME).exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run took no lease"
            time.sleep(0.1)
        started = time.monotonic()
        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert time.monotonic() - started < 30
        assert second.returncode == 1, second.stdout + second.stderr
        assert (
            f"is being written by another caption run on host {socket.gethostname()!r}, pid {first.pid}"
            in (second.stderr)
        )
        assert "to caption:" not in second.stdout  # refused before planning, so before Ray
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-3000:]
    assert read_manifest(out)["splits"]["test"]["videos"] == 3
    assert not (out / LEASE_NAME).exists()


def test_a_merge_into_an_output_held_by_another_run_is_refused(tmp_path, capsys):
    from pipelines import shards as shards_cli
    from shared.shards import load_caption_set
    from shared.shards.example import write_example_set

    write_example_set(tmp_path / "a", ["v0", "v1", "v2"], num_shards=1)
    out = tmp_path / "merged"
    with OutputLease(out, what="caption"):
        assert shards_cli.main(["merge", str(out), str(tmp_path / "a")]) == 1
    assert "is being written by another caption run" in capsys.readouterr().err
    assert not (out / "data").exists()  # refused before writing anything
    assert shards_cli.main(["merge", str(out), str(tmp_path / "a")]) == 0
    assert len(load_caption_set(out)) == 3 and not (out / LEASE_NAME).exists()


def test_an_output_the_credentials_cannot_write_is_one_line_before_anything_runs(s3, monkeypatch):
    """A server that checks credentials (moto: INITIAL_NO_AUTH_ACTION_COUNT=0) does not know the test
    keys: taking the lease is the first request, and it fails in one line naming the lease's URI."""
    from shared.storage_errors import StorageError
    from tests.s3_server import S3Server

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with S3Server() as strict:
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        out = strict.uri(BUCKET, "captions")
        with pytest.raises(StorageError) as caught:
            OutputLease(out, what="caption").acquire()
    lease_uri = strict.uri(BUCKET, f"captions/{LEASE_NAME}")
    assert str(caught.value).startswith(f"{lease_uri}: access denied (check the credentials")
    assert "\n" not in str(caught.value)
