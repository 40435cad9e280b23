"""A decode process that dies the way a real decoder can (a segfault in the decoder library, the
out-of-memory killer), for the failure tests.

:func:`install` is a Ray ``worker_process_setup_hook`` (``ray.init(runtime_env={"worker_process_setup_hook":
"tests.fault_decode.install"})``): in every Ray worker process it wraps the frame sampler of the caption
stage's decode tasks so that the process exits at once (``os._exit``) when asked to decode a file whose
name starts with :data:`CRASH_PREFIX`. Every other file decodes as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

CRASH_PREFIX = "zz_crash"


def install() -> None:
    import captioning.workers as workers

    sample_frames = workers.sample_frames

    def dies_on_crash_files(path, *args, **kwargs):
        if Path(path).name.startswith(CRASH_PREFIX):
            os._exit(11)  # as after SIGSEGV: no exception, no cleanup, the process is gone
        return sample_frames(path, *args, **kwargs)

    workers.sample_frames = dies_on_crash_files
