"""Shared pytest fixtures: small real videos generated once per test session with ``shared.synthetic``.

Every frame of these clips shows its own frame number (``shared.synthetic.read_frame_index``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.synthetic import BROKEN_KINDS, make_broken_video, make_test_video, make_vfr_test_video
from tests.s3_server import CREDENTIALS

# name -> (seconds, fps); all 64x48, seed = position in this table
CLIPS = {
    "long_30fps.mp4": (20.0, 30.0),  # 600 frames: more 1 fps candidates than 12
    "ntsc_2997fps.mp4": (15.0, 30000 / 1001),  # 450 frames at 29.97 fps
    "pal_25fps.mp4": (12.0, 25.0),  # 300 frames: exactly 12 candidates at 1 fps
    "short_5s.mp4": (5.0, 30.0),  # 150 frames: fewer than 12 candidates, frames repeat
}
# frame i of vfr.mp4 is shown at VFR_TIMESTAMPS[i]: 30 fps for 2 s, then 5 fps for 2 s, then 15 fps
VFR_TIMESTAMPS = (
    [i / 30 for i in range(60)] + [2 + i / 5 for i in range(10)] + [4 + i / 15 for i in range(30)]
)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """A folder with the ``CLIPS`` above plus ``vfr.mp4`` (100 frames over 6 s, variable frame rate)."""
    root = tmp_path_factory.mktemp("videos")
    for seed, (name, (seconds, fps)) in enumerate(CLIPS.items()):
        make_test_video(root / name, seconds, fps, size=(64, 48), seed=seed)
    make_vfr_test_video(root / "vfr.mp4", VFR_TIMESTAMPS, size=(64, 48), seed=len(CLIPS))
    return root


@pytest.fixture(scope="session")
def broken_videos(tmp_path_factory) -> dict[str, Path]:
    """One undecodable file per ``shared.synthetic.BROKEN_KINDS`` entry, named ``<kind>.mp4``."""
    root = tmp_path_factory.mktemp("broken_videos")
    return {kind: make_broken_video(root / f"{kind}.mp4", kind) for kind in BROKEN_KINDS}


@pytest.fixture(scope="session")
def s3():
    """An S3-compatible server (moto) on 127.0.0.1 for the whole session, with the AWS_* test
    credentials set in this process; ``tests.s3_server.S3Server`` documents the helpers."""
    from tests.s3_server import S3Server

    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    with S3Server() as server:
        server.apply_env()
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
