"""The authors' JSON shape, both ways: ``{"<video_id>_<sentence>": [F captions]}``.

The released DiscoVLA code looks up ``video_id + "_" + sentence`` for every training (video, sentence)
pair and takes the F frame captions stored there, so one video appears once per sentence.

Public API::

    export_json(path_or_uri, out_path, *, pairs=None, split=None, filesystem=None) -> int
        # pairs: (video_id, sentence) pairs as the annotation file spells them
        # (shared.shards.annotations.annotation_pairs, a CSV, MSRVTT_data.json); the keys are
        # video_id + "_" + sentence, character for character. None: one key per video, "<video_id>"
    import_json(json_path, out_root, *, dataset, split, video_ids=None, pairs=None, candidate_fps=1.0,
                num_shards=1, model=UNKNOWN_MODEL, filesystem=None) -> dict   # the new manifest
    split_keys(keys, *, known_ids=None, pairs=None, dataset=None, where="import-json") -> {key: (video_id, sentence)}
    read_pairs(path) -> list[(video_id, sentence)]     # CSV with video_id + sentence, or MSRVTT_data.json

Import never guesses. A key ``a_b_c`` is ``(a, b_c)`` or ``(a_b, c)``:

- with ``pairs`` (a dataset's annotations) or ``video_ids``, a key belongs to the known id followed by
  ``_``; when two known ids fit, the annotation's (video, sentence) pairs decide, and without pairs, or
  when they do not, the key is refused;
- without ids the key is split at its first ``_`` (MSRVTT: ``video7010_a man is ...``), refused for
  datasets whose ids contain ``_`` (DiDeMo, ActivityNet ``v_...``, LSMDC) and whenever two keys of one
  resulting id carry different captions (the sign that ids were cut), with the remedy;
- the keys of one video must carry the same captions, and every list the same length F; a key that
  breaks a rule (or whose text is not valid Unicode, or fails a row check) is named in the error.

Imported rows have no frame indices (the JSON has none): ``frame_index``/``timestamp_s`` are null; the
sampler in the provenance is ours with F taken from the lists (the authors' rule is the same); the
prompt is unknown, recorded as ``prompt_preset = "imported"`` with ``prompt_sha256`` of
:data:`UNKNOWN_PROMPT`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from shared.frames import SamplerConfig
from shared.shards.manifest import write_manifest
from shared.shards.provenance import make_provenance
from shared.shards.reader import load_caption_set
from shared.shards.schema import SCHEMA, CaptionSetError, check_rows
from shared.shards.storage import resolve, sha256_hex
from shared.shards.writer import write_shard

logger = logging.getLogger(__name__)
UNKNOWN_PROMPT = "<unknown prompt: captions imported from the DiscoVLA authors' JSON>"
UNKNOWN_MODEL = "unknown (imported from the DiscoVLA authors' JSON)"


IDS_WITH_UNDERSCORE = ("didemo", "activitynet", "lsmdc")  # their video ids contain "_"
_REMEDY = (
    "pass the video ids: --dataset NAME --annotations DIR (the annotation's ids and sentences) "
    "or --video-ids FILE (one id per line)"
)


def split_keys(
    keys, *, known_ids=None, pairs=None, dataset: str | None = None, where: str = "import-json"
) -> dict[str, tuple[str, str]]:
    """``{key: (video_id, sentence)}`` for the authors' keys; see the module docstring for the rules."""
    if pairs is not None:
        pairs = [(v, s) for v, s in pairs]
        known_ids = {v for v, _ in pairs}
    if known_ids is None:
        if dataset in IDS_WITH_UNDERSCORE:
            raise CaptionSetError(
                where,
                f"{dataset} video ids contain '_', so '<video_id>_<sentence>' keys cannot "
                f"be split without them: {_REMEDY}",
            )
        return {key: _first_underscore(key, where) for key in keys}
    known = set(known_ids)
    sentences = None if pairs is None else {(v, " ".join(s.split())) for v, s in pairs}
    result = {}
    for key in keys:
        candidates = [vid for vid in _prefixes(key) if vid in known]
        if not candidates:
            raise CaptionSetError(where, f"key {_name(key)} starts with no known video id followed by '_'")
        if len(candidates) > 1:
            candidates = _by_sentence(key, candidates, sentences, where)
        vid = candidates[0]
        result[key] = (vid, key[len(vid) + 1 :])
    return result


def _by_sentence(key: str, candidates: list[str], sentences, where: str) -> list[str]:
    """The one candidate id whose (id, rest of the key) is an annotated (video, sentence) pair."""
    if sentences is None:
        raise CaptionSetError(
            where,
            f"key {_name(key)} could belong to the video ids {candidates}; with ids alone "
            "this cannot be decided: pass --dataset NAME --annotations DIR so that the "
            "annotation's (video, sentence) pairs decide",
        )
    fits = [vid for vid in candidates if (vid, " ".join(key[len(vid) + 1 :].split())) in sentences]
    if len(fits) != 1:
        raise CaptionSetError(
            where,
            f"key {_name(key)} could belong to the video ids {candidates}, and "
            f"{'both' if fits else 'neither'} (video, sentence) pair(s) are in the "
            "annotations; fix the key or the id list",
        )
    return fits


def _name(key: str) -> str:
    """A key as error messages show it: whole (so it can be searched for in the file) unless very long."""
    return repr(key) if len(key) <= 500 else repr(key[:400]) + "..."


def _first_underscore(key: str, where: str) -> tuple[str, str]:
    vid, sep, sentence = key.partition("_")
    if not sep or not vid:
        raise CaptionSetError(where, f"key {_name(key)} is not '<video_id>_<sentence>'")
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
            logger.warning(
                "%d videos of the pairs have no (ok) captions, e.g. %s", len(missing), sorted(missing)[:5]
            )
    resolve(out_path, filesystem).write_bytes(json.dumps(data, ensure_ascii=False).encode("utf-8"))
    return len(data)


def import_json(
    json_path,
    out_root,
    *,
    dataset: str,
    split: str,
    video_ids=None,
    pairs=None,
    candidate_fps: float = 1.0,
    num_shards: int = 1,
    model: str = UNKNOWN_MODEL,
    filesystem=None,
) -> dict:
    """Make a caption set from the authors' JSON; returns its manifest. Nothing is written unless every
    key passes (see the module docstring)."""
    source = resolve(json_path, filesystem)
    where = str(source)
    raw = source.read_bytes()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise CaptionSetError(where, f"not JSON: {err}") from err
    if not isinstance(data, dict) or not data:
        raise CaptionSetError(where, 'expected a non-empty object {"<video_id>_<sentence>": [captions]}')
    per_video, first_key = _captions_per_video(data, where, video_ids, pairs, dataset)
    F = _frames(per_video, first_key, where)
    provenance = make_provenance(
        model=model,
        prompt_text=UNKNOWN_PROMPT,
        prompt_preset="imported",
        dataset=dataset,
        sampler=SamplerConfig(num_frames=F, candidate_fps=candidate_fps).provenance(),
        source_json={"name": source.name, "sha256": sha256_hex(raw)},
    )
    table = _checked_rows(per_video, first_key, dataset, split, F, where)
    ids = pc.unique(table["video_id"]).sort()
    for index in range(num_shards):
        chunk = ids[len(ids) * index // num_shards : len(ids) * (index + 1) // num_shards]
        write_shard(
            out_root,
            split,
            index,
            num_shards,
            table.filter(pc.is_in(table["video_id"], value_set=chunk)),
            provenance,
            filesystem=filesystem,
        )
    return write_manifest(out_root, filesystem=filesystem)


def _captions_per_video(data: dict, where: str, video_ids, pairs, dataset: str):
    """({video_id: captions}, {video_id: its first key}); the keys of one video must agree."""
    for key, captions in data.items():
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise CaptionSetError(
                where, f"value of key {_name(key)} must be a non-empty list of caption strings"
            )
    parts = split_keys(data, known_ids=video_ids, pairs=pairs, dataset=dataset, where=where)
    per_video: dict[str, list[str]] = {}
    first_key: dict[str, str] = {}
    for key, captions in data.items():
        vid = parts[key][0]
        if vid in per_video and per_video[vid] != captions:
            hint = (
                " (split at the first '_', different videos became one id: " + _REMEDY + ")"
                if video_ids is None and pairs is None
                else ""
            )
            raise CaptionSetError(
                where,
                f"keys {_name(first_key[vid])} and {_name(key)} both belong to video "
                f"{vid!r} but carry different captions{hint}",
            )
        per_video.setdefault(vid, captions)
        first_key.setdefault(vid, key)
    return per_video, first_key


def _frames(per_video: dict[str, list[str]], first_key: dict[str, str], where: str) -> int:
    """F: the length of the lists; a key whose list has another length is named."""
    lengths = Counter(len(v) for v in per_video.values())
    F = lengths.most_common(1)[0][0]
    odd = [vid for vid, captions in per_video.items() if len(captions) != F]
    if odd:
        raise CaptionSetError(
            where,
            f"key {_name(first_key[odd[0]])} has {len(per_video[odd[0]])} captions, "
            f"{lengths[F]} other videos have {F}; every video needs the same number "
            f"(one per sampled frame); lengths found: {dict(sorted(lengths.items()))}",
        )
    return F


def _checked_rows(per_video, first_key, dataset: str, split: str, F: int, where: str) -> pa.Table:
    """The rows, checked as a shard's would be; a failure names the JSON key, not a shard file."""
    try:
        table = _rows(per_video, dataset, split, F)
        check_rows(table, where)
        return table
    except (CaptionSetError, pa.ArrowException, UnicodeError):
        pass
    for vid in sorted(per_video):  # find the key to blame
        try:
            check_rows(_rows({vid: per_video[vid]}, dataset, split, F), where)
        except CaptionSetError as err:
            raise CaptionSetError(where, f"key {_name(first_key[vid])}: {err.problem}") from None
        except (pa.ArrowException, UnicodeError) as err:
            raise CaptionSetError(
                where,
                f"key {_name(first_key[vid])}: text that is not valid Unicode (a lone "
                f"surrogate such as \\ud800 in the JSON?): {err}",
            ) from None
    raise CaptionSetError(where, "rows fail their checks")  # unreachable: some key fails alone


def _rows(per_video: dict[str, list[str]], dataset: str, split: str, F: int) -> pa.Table:
    ids = sorted(per_video)
    n = len(ids) * F
    return pa.table(
        {
            "dataset": [dataset] * n,
            "split": [split] * n,
            "video_id": [vid for vid in ids for _ in range(F)],
            "frame_pos": pa.array(list(range(F)) * len(ids), pa.int32()),
            "frame_index": pa.nulls(n, pa.int64()),
            "timestamp_s": pa.nulls(n, pa.float64()),
            "caption": [c for vid in ids for c in per_video[vid]],
            "finish_reason": pa.nulls(n, pa.string()),
            "n_tokens": pa.nulls(n, pa.int32()),
            "status": ["ok"] * n,
            "error": pa.nulls(n, pa.string()),
        }
    ).cast(SCHEMA)


def read_pairs(path, filesystem=None) -> list[tuple[str, str]]:
    """(video_id, sentence) pairs from a CSV (columns video_id and sentence) or MSRVTT_data.json."""
    loc = resolve(path, filesystem)
    text = loc.read_bytes().decode("utf-8")
    if loc.name.endswith(".json"):
        data = json.loads(text)
        sentences = data.get("sentences") if isinstance(data, dict) else None
        if not isinstance(sentences, list):
            raise CaptionSetError(str(loc), 'expected MSRVTT_data.json: {"sentences": [{video_id, caption}]}')
        return [(s["video_id"], s["caption"]) for s in sentences]
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"video_id", "sentence"} <= set(reader.fieldnames):
        raise CaptionSetError(
            str(loc), f"expected CSV columns video_id and sentence, got {reader.fieldnames}"
        )
    return [(row["video_id"], row["sentence"]) for row in reader]
