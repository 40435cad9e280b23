"""Stand-ins for the caption benchmarks: engines and a decoder that cost nothing (or only waiting), so a
benchmark measures the part of the pipeline it is about. Never among the engines a user can choose:
they are passed by import path as the backend (``"benchmarks.standins:InstantEngine"``, the seam every
custom engine uses) and the decoder is swapped in each Ray worker by a ``worker_process_setup_hook``
(``"benchmarks.standins.fixed_frames"``), as ``tests/fault_decode.py`` does.

- :class:`InstantEngine` answers at once ("a frame", 3 tokens) for every frame.
- :class:`WaitingEngine` sleeps ``engine_kwargs["ms_per_frame"]`` ms per frame (default 5: a 200
  frames/s engine) without using the CPU, as a host thread waits on a GPU; its busy time is that waiting.
- :func:`fixed_frames` makes ``captioning.workers.sample_frames`` return the same small frames for any
  path, without opening a file.

Both engines record the chat template of the model directory they are given (the tiny LLaVA-NeXT of
``captioning.tiny_model``), so the driver's provenance checks pass unchanged.
"""

from __future__ import annotations

import time

import numpy as np

from captioning.engines.base import FINISH_STOP, CaptionEngine, CaptionResult

FIXED_SIZE = (48, 64)  # (H, W) of the stand-in decoder's frames: small, so the object store costs little


class InstantEngine(CaptionEngine):
    name = "instant"

    def __init__(self, spec):
        super().__init__(spec)
        from transformers import AutoProcessor

        from captioning.prompts import chat_template_sha256

        self.template_sha = chat_template_sha256(AutoProcessor.from_pretrained(spec.model))
        self.dtype = spec.dtype if spec.dtype != "auto" else "float32"
        self.busy_seconds = 0.0

    def caption(self, images):
        return [CaptionResult("a frame", FINISH_STOP, 3) for _ in images]

    def provenance(self) -> dict:
        return self.base_provenance(
            model_revision=self.spec.revision,
            dtype=self.dtype,
            chat_template_sha256=self.template_sha,
            packages=("transformers",),
        )


class WaitingEngine(InstantEngine):
    name = "waiting"

    def __init__(self, spec):
        super().__init__(spec)
        self.seconds_per_frame = float(spec.engine_kwargs.get("ms_per_frame", 5.0)) / 1000

    def caption(self, images):
        started = time.perf_counter()
        time.sleep(self.seconds_per_frame * len(images))  # the host waiting on its accelerator: no CPU
        self.busy_seconds += time.perf_counter() - started
        return super().caption(images)


def fixed_frames() -> None:
    """Ray ``worker_process_setup_hook``: every decode returns F fixed frames, whatever the path."""
    import captioning.workers as workers
    from shared.frames import SampledFrames

    def sample_fixed(path, num_frames, **_):
        frames = np.full((num_frames, *FIXED_SIZE, 3), 128, np.uint8)
        indices = np.arange(num_frames, dtype=np.int64) * 25
        return SampledFrames(frames, indices, indices / 25.0, 25.0, int(indices[-1]) + 1)

    workers.sample_frames = sample_fixed
