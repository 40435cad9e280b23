"""An S3-compatible server on 127.0.0.1 for tests: moto's server mode, one process, stopped by pid.

::

    from tests.s3_server import S3Server

    with S3Server() as s3:                       # or the session fixture ``s3`` (tests/conftest.py)
        s3.make_bucket("videos")
        uri = s3.uri("videos", "msrvtt/video0.mp4")  # s3://videos/msrvtt/video0.mp4?endpoint_override=...&scheme=http
        env = s3.env()                           # AWS_* credentials and region for subprocesses
        s3.apply_env()                           # the same, in this process (pyarrow reads them)

Credentials and endpoint travel the ecosystem's way: the standard ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` variables, and pyarrow's own URI options
(``endpoint_override``, ``scheme``) in every URI; nothing of the project's own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.ray_cluster import free_port

LOOPBACK = "127.0.0.1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    """``moto_server`` on a free loopback port; see the module docstring."""

    def __init__(self, start_timeout_s: float = 60.0):
        self.port = free_port()
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        """``host:port``, as pyarrow's ``endpoint_override`` takes it."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def query(self) -> str:
        return f"endpoint_override={self.endpoint}&scheme=http"

    def uri(self, bucket: str, key: str = "") -> str:
        """``s3://bucket/key`` with this server's endpoint as pyarrow URI options."""
        path = f"{bucket}/{key}".rstrip("/")
        return f"s3://{path}?{self.query}"

    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env.update(CREDENTIALS)
        return env

    def apply_env(self) -> None:
        os.environ.update(CREDENTIALS)

    def client(self):
        """A boto3 client for this server (bucket set-up and inspection in tests)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def make_bucket(self, name: str) -> str:
        """Create ``name`` (no error if it exists); returns ``s3://name?...``."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return self.uri(name)

    def upload_dir(self, local: str | Path, bucket: str, prefix: str) -> list[str]:
        """Upload every file below ``local`` to ``bucket/prefix/<relative path>``; returns the keys."""
        client = self.client()
        keys = []
        local = Path(local)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{path.relative_to(local).as_posix()}".lstrip("/")
            client.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        )

    # ---- life cycle -------------------------------------------------------------------------------

    def start(self) -> S3Server:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
            "moto_server"
        )
        command = [exe, "-H", LOOPBACK, "-p", str(self.port)] if exe else None
        if command is None:
            command = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)]
        self._proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with status {self._proc.returncode}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"moto_server did not listen on {self.endpoint} within {self.start_timeout_s:.0f} s"
        )

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
