"""The authors' JSON shape, both ways: ``{"<video_id>_<sentence>": [F captions]}``.

The released DiscoVLA code looks up ``video_id + "_" + sentence`` for every training (video, sentence)
pair and takes the F frame captions stored there, so one video appears once per sentence.

Public API::

    export_json(path_or_uri, out_path, *, pairs=None, split=None, filesystem=None) -> int
        # pairs: (video_id, sentence) pairs, e.g. from a dataset adapter or MSRVTT_data.json;
        # None writes one key per video: "<video_id>" (our shape, not the authors')
    import_json(json_path, out_root, *, dataset, split, video_ids=None, candidate_fps=1.0,
                num_shards=1, model=UNKNOWN_MODEL, filesystem=None) -> dict   # the new manifest
    split_key(key, known_ids=None) -> (video_id, sentence)
    read_pairs(path) -> list[(video_id, sentence)]     # CSV with video_id + sentence, or MSRVTT_data.json

Key parsing on import: with ``video_ids`` (a dataset's items), a key belongs to the longest known id
followed by "_"; without them the key is split at its first "_", which is right for MSRVTT
(``video7010_a man is ...``) but not for ids that contain "_" (ActivityNet ``v_...``, DiDeMo): pass the
ids there. Imported rows have no frame indices (the JSON has none): ``frame_index``/``timestamp_s``
are null; the sampler in the provenance is ours with F taken from the lists (the authors' rule is the
same, docs/method.md "Frame sampling"); the prompt is unknown, recorded as ``prompt_preset = "imported"`` with
``prompt_sha256`` of :data:`UNKNOWN_PROMPT`.
"""

from __future__ import annotations

import csv
import io
import json
import logging

import pyarrow as pa
import pyarrow.compute as pc

from shared.frames import SamplerConfig
from shared.shards.manifest import write_manifest
from shared.shards.provenance import make_provenance
from shared.shards.reader import load_caption_set
from shared.shards.schema import SCHEMA, CaptionSetError
from shared.shards.storage import resolve, sha256_hex
from shared.shards.writer import write_shard

logger = logging.getLogger(__name__)
UNKNOWN_PROMPT = "<unknown prompt: captions imported from the DiscoVLA authors' JSON>"
UNKNOWN_MODEL = "unknown (imported from the DiscoVLA authors' JSON)"


def split_key(key: str, known_ids=None) -> tuple[str, str]:
    """(video_id, sentence) of an authors' key; see the module docstring for the rule."""
    if known_ids is not None:
        candidates = [vid for vid in _prefixes(key) if vid in known_ids]
        if not candidates:
            raise CaptionSetError("import-json", f"key {key[:80]!r} starts with no known video id followed by '_'")
        vid = max(candidates, key=len)
        return vid, key[len(vid) + 1:]
    vid, sep, sentence = key.partition("_")
    if not sep or not vid:
        raise CaptionSetError("import-json", f"key {key[:80]!r} is not '<video_id>_<sentence>'")
    return vid, sentence


def _prefixes(key: str):
    start = 0
    while (pos := key.find("_", start)) != -1:
        yield key[:pos]
        start = pos + 1


def export_json(path_or_uri, out_path, *, pairs=None, split: str | None = None, filesystem=None) -> int:
    """Write the authors' JSON for the videos with captions; returns the number of keys written."""
    cs = load_caption_set(path_or_uri, split=split, filesystem=filesystem)
    if pairs is None:
        data = dict(sorted(cs.captions.items()))
    else:
        data, missing = {}, set()
        for vid, sentence in pairs:
            if vid in cs.captions:
                data[f"{vid}_{sentence}"] = cs.captions[vid]
            else:
                missing.add(vid)
        if missing:
            logger.warning("%d videos of the pairs have no (ok) captions, e.g. %s", len(missing), sorted(missing)[:5])
    resolve(out_path, filesystem).write_bytes(json.dumps(data, ensure_ascii=False).encode("utf-8"))
    return len(data)


def import_json(json_path, out_root, *, dataset: str, split: str, video_ids=None, candidate_fps: float = 1.0,
                num_shards: int = 1, model: str = UNKNOWN_MODEL, filesystem=None) -> dict:
    """Make a caption set from the authors' JSON; returns its manifest."""
    source = resolve(json_path, filesystem)
    raw = source.read_bytes()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise CaptionSetError(str(source), f"not JSON: {err}") from err
    if not isinstance(data, dict) or not data:
        raise CaptionSetError(str(source), "expected a non-empty object {\"<video_id>_<sentence>\": [captions]}")
    per_video = _captions_per_video(data, str(source), None if video_ids is None else set(video_ids))
    lengths = {len(v) for v in per_video.values()}
    if len(lengths) != 1:
        raise CaptionSetError(str(source), f"videos have different numbers of captions {sorted(lengths)}")
    F = lengths.pop()
    provenance = make_provenance(
        model=model, prompt_text=UNKNOWN_PROMPT, prompt_preset="imported", dataset=dataset,
        sampler=SamplerConfig(num_frames=F, candidate_fps=candidate_fps).provenance(),
        source_json={"name": source.name, "sha256": sha256_hex(raw)},
    )
    table = _rows(per_video, dataset, split, F)
    ids = pc.unique(table["video_id"]).sort()
    for index in range(num_shards):
        chunk = ids[len(ids) * index // num_shards: len(ids) * (index + 1) // num_shards]
        write_shard(out_root, split, index, num_shards, table.filter(pc.is_in(table["video_id"], value_set=chunk)),
                    provenance, filesystem=filesystem)
    return write_manifest(out_root, filesystem=filesystem)


def _captions_per_video(data: dict, where: str, known_ids) -> dict[str, list[str]]:
    per_video: dict[str, list[str]] = {}
    conflicts = 0
    for key, captions in data.items():
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise CaptionSetError(where, f"value of {key[:80]!r} must be a non-empty list of caption strings")
        vid, _ = split_key(key, known_ids)
        if vid in per_video and per_video[vid] != captions:
            conflicts += 1  # the same video under two sentences with different captions: keep the first
            continue
        per_video.setdefault(vid, captions)
    if conflicts:
        logger.warning("%s: %d keys repeat a video with different captions; kept the first", where, conflicts)
    return per_video


def _rows(per_video: dict[str, list[str]], dataset: str, split: str, F: int) -> pa.Table:
    ids = sorted(per_video)
    n = len(ids) * F
    return pa.table({
        "dataset": [dataset] * n, "split": [split] * n,
        "video_id": [vid for vid in ids for _ in range(F)],
        "frame_pos": pa.array(list(range(F)) * len(ids), pa.int32()),
        "frame_index": pa.nulls(n, pa.int64()), "timestamp_s": pa.nulls(n, pa.float64()),
        "caption": [c for vid in ids for c in per_video[vid]],
        "finish_reason": pa.nulls(n, pa.string()), "n_tokens": pa.nulls(n, pa.int32()),
        "status": ["ok"] * n, "error": pa.nulls(n, pa.string()),
    }).cast(SCHEMA)


def read_pairs(path, filesystem=None) -> list[tuple[str, str]]:
    """(video_id, sentence) pairs from a CSV (columns video_id and sentence) or MSRVTT_data.json."""
    loc = resolve(path, filesystem)
    text = loc.read_bytes().decode("utf-8")
    if loc.name.endswith(".json"):
        data = json.loads(text)
        sentences = data.get("sentences") if isinstance(data, dict) else None
        if not isinstance(sentences, list):
            raise CaptionSetError(str(loc), "expected MSRVTT_data.json: {\"sentences\": [{video_id, caption}]}")
        return [(s["video_id"], s["caption"]) for s in sentences]
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"video_id", "sentence"} <= set(reader.fieldnames):
        raise CaptionSetError(str(loc), f"expected CSV columns video_id and sentence, got {reader.fieldnames}")
    return [(row["video_id"], row["sentence"]) for row in reader]
