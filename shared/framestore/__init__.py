"""Frame stores: the sampled, resized frames of every video, so training and evaluation need not decode.

A frame store is laid out like a caption set (``shared.shards``) and follows its completion protocol::

    <root>/manifest.json                         every shard with rows, bytes and sha256, and the provenance
    <root>/data/<split>-NNNNN-of-NNNNN.parquet   one row per sampled frame; one row group per video
    <root>/_stats/<split>-NNNNN-of-NNNNN.json    per-shard stats; written last = the completion marker

Provenance records the frame sampler (rule, version, F, candidate fps), the window rule, the resolution
(short side and resize rule), the codec and the decoder. Writer, reader and checks::

    build_frame_store(items, out, dataset=..., split=..., short_side=224)        # decode + write, resumable
    write_frame_shard(root, split, i, n, tables, provenance); write_frame_manifest(root)
    store = FrameStore(root, expect_sampler=SamplerConfig(12).provenance(), short_side=224)
    store.frames(video_id, window) -> [F, H, W, 3] uint8 | None
    validate_frame_store(root) -> FrameStoreReport

Every data problem raises :class:`FrameStoreError` (a ``CaptionSetError``) naming the file.
"""

from shared.framestore.build import BuildSummary, build_frame_store, caption_set_shards, sample_video_rows
from shared.framestore.codec import CODECS, Codec
from shared.framestore.provenance import (
    COMPATIBILITY_KEYS,
    check_for_trainer,
    check_frame_provenance,
    check_same_store,
    make_frame_provenance,
)
from shared.framestore.reader import FrameStore
from shared.framestore.schema import (
    FOOTER_KEY,
    FORMAT_NAME,
    FRAME_SCHEMA,
    SCHEMA_VERSION,
    FrameStoreError,
    failed_video_rows,
    video_rows,
)
from shared.framestore.validate import FrameStoreReport, frame_store_info, validate_frame_store
from shared.framestore.writer import (
    completed_frame_shards,
    read_frame_manifest,
    write_frame_manifest,
    write_frame_shard,
)

__all__ = [
    "CODECS",
    "COMPATIBILITY_KEYS",
    "FOOTER_KEY",
    "FORMAT_NAME",
    "FRAME_SCHEMA",
    "SCHEMA_VERSION",
    "BuildSummary",
    "Codec",
    "FrameStore",
    "FrameStoreError",
    "FrameStoreReport",
    "build_frame_store",
    "caption_set_shards",
    "check_for_trainer",
    "check_frame_provenance",
    "check_same_store",
    "completed_frame_shards",
    "failed_video_rows",
    "frame_store_info",
    "make_frame_provenance",
    "read_frame_manifest",
    "sample_video_rows",
    "validate_frame_store",
    "video_rows",
    "write_frame_manifest",
    "write_frame_shard",
]
