"""Caption engines that fail the way real ones do, for the failure tests (loaded by import path as the
backend ``"tests.fault_engine:<Class>"``, in the engine actors' own processes).

- :class:`DiesOnTallFrames`: the real transformers engine (same captions, same provenance), except that
  its process dies at once (``os._exit``, as after a CUDA error or the out-of-memory killer) when asked
  to caption a frame :data:`POISON_HEIGHT` pixels tall;
- :class:`NeverStarts`: raises while loading, as an engine given a context longer than its model's does.
"""

from __future__ import annotations

import os

import numpy as np

from captioning.engines.base import CaptionEngine
from captioning.engines.transformers_engine import TransformersEngine

POISON_HEIGHT = 40  # the poison video is generated 64x40; the others 64x48, the warm-up frame 64x64


class DiesOnTallFrames(TransformersEngine):
    def caption(self, images):
        if any(np.asarray(image).shape[0] == POISON_HEIGHT for image in images):
            os._exit(3)
        return super().caption(images)


class NeverStarts(CaptionEngine):
    name = "never-starts"

    def __init__(self, spec):
        super().__init__(spec)
        raise ValueError(
            f"max_model_len {spec.max_model_len} is longer than the model's context of 128 tokens\n"
            "Traceback lines that should not reach the user"
        )

    def caption(self, images):
        raise AssertionError("never built")

    def provenance(self):
        raise AssertionError("never built")
