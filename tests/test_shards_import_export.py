"""The authors' JSON both ways, on real annotation entries: export keys the authors' loader finds, an
import that never guesses.

Annotation excerpts (tests/data/<dataset>/shards_excerpt, see tests/data/README.md): DiDeMo test entries,
five of whose videos have descriptions with trailing spaces or newlines; ActivityNet Captions val_1
entries, four with "_" inside the YouTube id and four with sentences that start with spaces.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from pipelines.shards import main as cli
from shared.shards import CaptionSetError, load_caption_set
from shared.shards.annotations import annotation_pairs
from shared.shards.example import example_provenance, write_example_set
from shared.shards.interop import export_json, import_json

DATA = Path(__file__).parent / "data"
DIDEMO = DATA / "didemo/shards_excerpt"
ANET = DATA / "activitynet/shards_excerpt"


def _authors_didemo_keys() -> list[str]:
    """The keys the authors' loader asks for: video + "_" + its descriptions joined by " ", untouched."""
    texts: dict[str, list[str]] = {}
    for entry in json.loads((DIDEMO / "test_data.json").read_text()):
        texts.setdefault(entry["video"], []).append(entry["description"])
    return [f"{video}_{' '.join(parts)}" for video, parts in texts.items()]


def _authors_anet_keys() -> list[str]:
    data = json.loads((ANET / "val_1.json").read_text())
    return [f"{video}_{' '.join(entry['sentences'])}" for video, entry in data.items()]


def _set(root: Path, dataset: str, split: str, ids: list[str], failed=()) -> None:
    write_example_set(
        root,
        ids,
        4,
        num_shards=2,
        dataset=dataset,
        split=split,
        failed=failed,
        provenance=example_provenance(4, dataset=dataset),
    )


def test_export_keys_are_the_sentences_as_the_annotation_file_spells_them(tmp_path):
    keys = _authors_didemo_keys()
    assert any(k != " ".join(k.split()) for k in keys)  # trailing spaces, newlines, double spaces
    ids = [k.split("_")[0] + "_" + k.split("_")[1] + "_" + k.split("_")[2].split(" ")[0] for k in keys]
    pairs = annotation_pairs("didemo", "test", DIDEMO)
    assert [v for v, _ in pairs] == ids
    _set(tmp_path / "set", "didemo", "test", ids, failed=ids[-1:])
    out = tmp_path / "didemo.json"
    assert (
        cli(
            [
                "export-json",
                str(tmp_path / "set"),
                str(out),
                "--dataset",
                "didemo",
                "--annotations",
                str(DIDEMO),
                "--split",
                "test",
            ]
        )
        == 0
    )
    exported = json.loads(out.read_text())
    captions = load_caption_set(tmp_path / "set").captions
    for key, video in zip(keys[:-1], ids, strict=False):  # the authors' loader finds every key
        assert exported[key] == captions[video]
    assert keys[-1] not in exported and len(exported) == len(keys) - 1  # the failed video is left out


def test_activitynet_export_and_import_round_trip_with_the_dataset(tmp_path, capsys):
    keys = _authors_anet_keys()
    ids = [v for v, _ in annotation_pairs("activitynet", "val", ANET)]
    assert any(k.count("_") > 2 for k in keys) and any("_  " in k or "  " in k for k in keys)
    _set(tmp_path / "set", "activitynet", "val", ids)
    out = tmp_path / "anet.json"
    dataset = ["--dataset", "activitynet", "--annotations", str(ANET)]
    assert cli(["export-json", str(tmp_path / "set"), str(out), "--split", "val", *dataset]) == 0
    assert sorted(json.loads(out.read_text())) == sorted(keys)
    # without ids the keys cannot be split: refused with the remedy, nothing written
    assert (
        cli(
            [
                "import-json",
                str(out),
                str(tmp_path / "guess"),
                "--dataset-name",
                "activitynet",
                "--split",
                "val",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "activitynet video ids contain '_'" in err and "--dataset NAME --annotations DIR" in err, err
    assert not (tmp_path / "guess").exists()
    # the same file under another dataset name: split at the first "_", every key became video "v"
    assert (
        cli(["import-json", str(out), str(tmp_path / "guess"), "--dataset-name", "mine", "--split", "val"])
        == 1
    )
    err = capsys.readouterr().err
    assert "both belong to video 'v' but carry different captions" in err and "--video-ids FILE" in err, err
    assert (
        cli(
            [
                "import-json",
                str(out),
                str(tmp_path / "back"),
                "--dataset-name",
                "activitynet",
                "--split",
                "val",
                *dataset,
            ]
        )
        == 0
    )
    assert load_caption_set(tmp_path / "back").captions == load_caption_set(tmp_path / "set").captions


def test_a_key_two_known_ids_could_claim_is_settled_by_the_annotation_or_refused(tmp_path):
    """A user's id list holds both v_FsS and v_FsS_NCZEfaI (a real ActivityNet id with '_' inside)."""
    data = json.loads((ANET / "val_1.json").read_text())
    video = "v_FsS_NCZEfaI"
    sentence = " ".join(data[video]["sentences"])
    key = f"{video}_{sentence}"
    (tmp_path / "a.json").write_text(json.dumps({key: ["c0", "c1"]}))
    with pytest.raises(
        CaptionSetError,
        match=r"could belong to the video ids \['v_FsS', 'v_FsS_NCZEfaI'\]; with "
        "ids alone this cannot be decided: pass --dataset",
    ):
        import_json(
            tmp_path / "a.json",
            tmp_path / "ids",
            dataset="activitynet",
            split="val",
            video_ids=["v_FsS", video],
        )
    assert not (tmp_path / "ids").exists()
    # the annotation lists both ids; only (v_FsS_NCZEfaI, sentence) is an annotated pair
    pairs = [(video, sentence), ("v_FsS", "NCZEfaI_something else")]
    import_json(tmp_path / "a.json", tmp_path / "ok", dataset="activitynet", split="val", pairs=pairs)
    assert load_caption_set(tmp_path / "ok").captions == {video: ["c0", "c1"]}
    both = [(video, sentence), ("v_FsS", key[len("v_FsS_") :])]
    with pytest.raises(CaptionSetError, match="and both"):
        import_json(tmp_path / "a.json", tmp_path / "both", dataset="activitynet", split="val", pairs=both)


def test_bad_keys_are_named_not_shard_files(tmp_path):
    keys = _authors_didemo_keys()[:3]
    good = {k: [f"caption {i}" for i in range(4)] for k in keys}
    dataset = dict(dataset="didemo", split="test", pairs=annotation_pairs("didemo", "test", DIDEMO))
    cases = {
        "surrogate.json": (
            {**good, keys[1]: ["ok", "ok", "\ud800 lone surrogate", "ok"]},
            f"key {keys[1]!r}: text that is not valid Unicode",
        ),
        "long.json": ({**good, keys[2]: ["x" * 9000, "ok", "ok", "ok"]}, f"key {keys[2]!r}: "),
        "lengths.json": (
            {**good, keys[0]: ["a", "b"]},
            f"key {keys[0]!r} has 2 captions, 2 other videos have 4",
        ),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(
            json.dumps(content)
        )  # ensure_ascii: the surrogate is written as \ud800, as JSON allows
        with pytest.raises(CaptionSetError) as err:
            import_json(path, tmp_path / name.replace(".json", ""), **dataset)
        assert message in str(err.value) and "data/" not in str(err.value), str(err.value)
        assert not (tmp_path / name.replace(".json", "")).exists()


def test_validate_without_video_root_says_nothing_about_video_folders(tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setenv("DISCOVLA_DATA", str(tmp_path / "nowhere"))
    ids = [v for v, _ in annotation_pairs("didemo", "test", DIDEMO)]
    _set(tmp_path / "set", "didemo", "test", ids[:-1])
    with caplog.at_level(logging.INFO):
        code = cli(["validate", str(tmp_path / "set"), "--dataset", "didemo", "--annotations", str(DIDEMO)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"1 of {len(ids)} expected videos have no captions, e.g. [{ids[-1]!r}]" in err
    assert "video root" not in err + caplog.text and "nowhere" not in err + caplog.text


def test_msrvtt_export_keys_and_import_without_ids(tmp_path):
    """MSRVTT ids have no '_': keys split at their first '_' without ids, and the round trip is exact."""
    msrvtt = DATA / "msrvtt/shards_excerpt"
    pairs = annotation_pairs("msrvtt", "test", msrvtt)
    with (msrvtt / "MSRVTT_JSFUSION_test.csv").open(newline="") as f:
        assert pairs == [(row["video_id"], row["sentence"]) for row in csv.DictReader(f)]
    ids = sorted({v for v, _ in pairs})
    _set(tmp_path / "set", "msrvtt", "test", ids)
    out = tmp_path / "msrvtt.json"
    assert export_json(tmp_path / "set", out, pairs=pairs) == len(pairs)
    import_json(out, tmp_path / "back", dataset="msrvtt", split="test")
    assert load_caption_set(tmp_path / "back").captions == load_caption_set(tmp_path / "set").captions
