"""Generated caption sets for tests, benchmarks and demos (no model needed).

Public API::

    example_provenance(num_frames=4, **overrides) -> dict
    example_rows(video_ids, num_frames=4, *, dataset="msrvtt", split="test", fps=30.0,
                 failed=(), seed=0) -> pa.Table
    write_example_set(root, video_ids, num_frames=4, *, num_shards=2, dataset="msrvtt", split="test",
                      failed=(), provenance=None, filesystem=None, manifest=True) -> dict | None

Captions read ``"<video_id> frame <pos>: <word>"`` so a test can tell which row a caption came from.
Built column-wise with numpy/pyarrow, so a million rows take about a second.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.frames import SamplerConfig
from shared.shards.manifest import write_manifest
from shared.shards.provenance import make_provenance
from shared.shards.schema import SCHEMA, STATUS_FAILED, STATUS_OK
from shared.shards.writer import write_shard

_WORDS = np.array(
    [
        "a person walks",
        "a dog runs",
        "a car drives",
        "a man talks",
        "a woman cooks",
        "a child plays",
        "a cat sleeps",
        "people dance",
    ]
)


def example_provenance(num_frames: int = 4, **overrides) -> dict:
    values = {
        "model": "llava-hf/llava-v1.6-mistral-7b-hf",
        "model_revision": "main",
        "dtype": "bfloat16",
        "engine": "example",
        "prompt_preset": "one-sentence-v1",
        "prompt_text": "Describe this image in one short sentence.",
        "sampler": SamplerConfig(num_frames=num_frames).provenance(),
        "sampling": {"temperature": 0.0, "max_tokens": 64, "seed": 0},
        "image_resolution": [336, 336],
        "decoder": {"name": "decord", "version": "0.6.0"},
        "dataset": "msrvtt",
    }
    values.update(overrides)
    return make_provenance(**values)


def example_rows(
    video_ids,
    num_frames: int = 4,
    *,
    dataset: str = "msrvtt",
    split: str = "test",
    fps: float = 30.0,
    failed=(),
    seed: int = 0,
) -> pa.Table:
    """F rows per video (sorted by video_id, frame_pos); every row of a video in ``failed`` is failed."""
    ids = np.asarray(list(video_ids), dtype=object)
    F, n = num_frames, len(ids) * num_frames
    rng = np.random.default_rng(seed)
    video_col = pa.array(np.repeat(ids, F), pa.string())
    pos = np.tile(np.arange(F, dtype=np.int32), len(ids))
    frame_index = pos.astype(np.int64) * int(fps)  # one candidate per second
    words = _WORDS[rng.integers(0, len(_WORDS), n)]
    head = pc.binary_join_element_wise(video_col, pa.array(pos.astype(str)), " frame ")
    caption = pc.binary_join_element_wise(head, pa.array(words), ": ")  # "<video_id> frame <pos>: <words>"
    is_failed = pc.is_in(video_col, value_set=pa.array(list(failed), pa.string()))
    status = pc.if_else(is_failed, STATUS_FAILED, STATUS_OK)
    null_str = pa.nulls(n, pa.string())
    columns = {
        "dataset": pa.array([dataset] * n, pa.string()),
        "split": pa.array([split] * n, pa.string()),
        "video_id": video_col,
        "frame_pos": pa.array(pos),
        "frame_index": pa.array(frame_index),
        "timestamp_s": pa.array(frame_index / fps),
        "caption": pc.if_else(is_failed, null_str, caption),
        "finish_reason": pc.if_else(is_failed, null_str, pa.array(["stop"] * n, pa.string())),
        "n_tokens": pc.if_else(
            is_failed, pa.nulls(n, pa.int32()), pa.array(rng.integers(4, 20, n), pa.int32())
        ),
        "status": status,
        "error": pc.if_else(is_failed, pa.array(["VideoDecodeError: example failure"] * n), null_str),
    }
    return pa.table(columns).cast(SCHEMA)


def write_example_set(
    root,
    video_ids,
    num_frames: int = 4,
    *,
    num_shards: int = 2,
    dataset: str = "msrvtt",
    split: str = "test",
    failed=(),
    provenance: dict | None = None,
    filesystem=None,
    manifest: bool = True,
) -> dict | None:
    """Write ``video_ids`` round-robin over ``num_shards`` shards (+ the manifest); returns the manifest."""
    provenance = provenance or example_provenance(num_frames, dataset=dataset)
    ids = list(video_ids)
    for index in range(num_shards):
        rows = example_rows(ids[index::num_shards], num_frames, dataset=dataset, split=split, failed=failed)
        write_shard(root, split, index, num_shards, rows, provenance, filesystem=filesystem)
    return write_manifest(root, filesystem=filesystem) if manifest else None
