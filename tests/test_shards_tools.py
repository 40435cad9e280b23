"""Caption-set tools: merge, the authors' JSON both ways, validate, info, the HTML viewer and the CLI."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.shards import main as cli
from shared.shards import (
    CaptionSetError,
    IncompatibleProvenanceError,
    load_caption_set,
    make_rows,
    write_manifest,
    write_shard,
)
from shared.shards.example import example_provenance, example_rows, write_example_set
from shared.shards.interop import export_json, import_json, read_pairs, split_keys
from shared.shards.merge import merge_caption_sets
from shared.shards.validate import validate_caption_set
from shared.shards.viewer import render_view

MSRVTT_TEST = Path(__file__).parent / "data" / "msrvtt" / "MSRVTT_JSFUSION_test.csv"  # an excerpt: tests/data
IDS = [f"video{i}" for i in range(10)]


def _set(root, ids, *, failed=(), seed=0, provenance=None, num_frames=4):
    prov = provenance or example_provenance(num_frames)
    write_shard(root, "test", 0, 1, example_rows(ids, num_frames, failed=failed, seed=seed), prov)
    write_manifest(root)
    return load_caption_set(root, allow_incomplete=True)


def test_merge_keeps_one_run_per_video_preferring_ok(tmp_path):
    a = _set(tmp_path / "a", IDS[:6], failed=["video2", "video3"], seed=1)
    b = _set(tmp_path / "b", IDS[3:], seed=2)
    manifest = merge_caption_sets([tmp_path / "a", tmp_path / "b"], tmp_path / "out", num_shards=3)
    merged = load_caption_set(tmp_path / "out")
    assert sorted(merged.captions) == sorted(set(IDS) - {"video2"}) and merged.failed == {"video2"}
    assert merged.captions["video3"] == b.captions["video3"]  # a failed it, b has it whole
    assert merged.captions["video4"] == a.captions["video4"]  # both ok: the first input wins
    assert merged.captions["video4"] != b.captions["video4"]
    assert [s["file"] for s in manifest["shards"]] == [
        f"data/test-0000{i}-of-00003.parquet" for i in range(3)
    ]
    assert [m["source"] for m in manifest["provenance"]["merged_from"]] == [
        str(tmp_path / "a"),
        str(tmp_path / "b"),
    ]


def test_merge_refuses_incompatible_provenance_unless_allowed(tmp_path):
    _set(tmp_path / "a", IDS[:5])
    _set(
        tmp_path / "b",
        IDS[5:],
        provenance=example_provenance(model="other/llava", sampling={"temperature": 1}),
    )
    with pytest.raises(IncompatibleProvenanceError) as err:
        merge_caption_sets([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert set(err.value.differences) == {"model", "sampling"}
    manifest = merge_caption_sets(
        [tmp_path / "a", tmp_path / "b"], tmp_path / "out", allow_mismatch=("model", "sampling")
    )
    assert manifest["provenance"]["merge_mismatch"] == ["model", "sampling"]
    _set(tmp_path / "c", IDS[:2], num_frames=6)
    with pytest.raises(CaptionSetError, match="captions have 6 frames per video, the trainer samples 4"):
        merge_caption_sets([tmp_path / "a", tmp_path / "c"], tmp_path / "out2", allow_mismatch=True)


def test_split_keys_rules():
    assert split_keys(["video7010_a man is singing"]) == {
        "video7010_a man is singing": ("video7010", "a man is singing")
    }
    with pytest.raises(CaptionSetError, match="activitynet video ids contain '_'.*--video-ids FILE"):
        split_keys(["v_QOlSCBRmfWY_a woman talks"], dataset="activitynet")
    known = {"v_QOlSCBRmfWY", "v_QOl"}
    assert split_keys(["v_QOlSCBRmfWY_a woman talks"], known_ids=known) == {
        "v_QOlSCBRmfWY_a woman talks": ("v_QOlSCBRmfWY", "a woman talks")
    }
    with pytest.raises(CaptionSetError, match="no known video id"):
        split_keys(["v_other_a woman"], known_ids=known)


def test_authors_json_round_trip_with_real_msrvtt_sentences(tmp_path):
    pairs = read_pairs(MSRVTT_TEST)[:8]
    ids = sorted({vid for vid, _ in pairs})
    write_example_set(tmp_path / "ours", ids, num_frames=12, failed=[ids[0]])
    out = tmp_path / "authors.json"
    assert export_json(tmp_path / "ours", out, pairs=pairs) == 7  # the failed video has no captions
    data = json.loads(out.read_text())
    vid, sentence = pairs[1]
    assert data[f"{vid}_{sentence}"] == load_caption_set(tmp_path / "ours").captions[vid]
    manifest = import_json(out, tmp_path / "back", dataset="msrvtt", split="test", num_shards=2)
    back = load_caption_set(tmp_path / "back", num_frames=12)
    assert back.captions == load_caption_set(tmp_path / "ours").captions
    assert manifest["provenance"]["prompt_preset"] == "imported"
    assert manifest["provenance"]["source_json"]["sha256"]


def test_import_with_known_ids_and_repeated_videos(tmp_path):
    data = {
        "v_ab_c_first sentence": ["x0", "x1"],
        "v_ab_c_second sentence": ["x0", "x1"],
        "v_zz_a dog": ["y0", "y1"],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    import_json(
        tmp_path / "a.json",
        tmp_path / "set",
        dataset="activitynet",
        split="val",
        video_ids=["v_ab_c", "v_zz"],
    )
    cs = load_caption_set(tmp_path / "set")
    assert cs.captions == {"v_ab_c": ["x0", "x1"], "v_zz": ["y0", "y1"]}
    (tmp_path / "d.json").write_text(json.dumps({**data, "v_zz_a cat": ["other", "y1"]}))
    with pytest.raises(
        CaptionSetError, match="keys 'v_zz_a dog' and 'v_zz_a cat' both belong to video 'v_zz' but"
    ):
        import_json(
            tmp_path / "d.json",
            tmp_path / "set4",
            dataset="activitynet",
            split="val",
            video_ids=["v_ab_c", "v_zz"],
        )
    assert not (tmp_path / "set4").exists()
    (tmp_path / "b.json").write_text(
        json.dumps({"video1_a": ["c"] * 3, "video2_b": ["c"] * 4, "video3_c": ["c"] * 4})
    )
    with pytest.raises(CaptionSetError, match=r"key 'video1_a' has 3 captions, 2 other videos have 4"):
        import_json(tmp_path / "b.json", tmp_path / "set2", dataset="msrvtt", split="test")
    (tmp_path / "c.json").write_text(json.dumps({"video1_a": "not a list"}))
    with pytest.raises(CaptionSetError, match="c.json: value of key 'video1_a' must be a non-empty list"):
        import_json(tmp_path / "c.json", tmp_path / "set3", dataset="msrvtt", split="test")


def test_validate_reports_every_finding(tmp_path):
    write_example_set(tmp_path, IDS, num_shards=2, failed=["video1"])
    assert validate_caption_set(tmp_path, expect_video_ids=IDS).ok
    (tmp_path / "data" / "test-00009-of-00010.parquet").write_bytes(b"stray")
    report = validate_caption_set(tmp_path, expect_video_ids=IDS + ["video77"], num_frames=12)
    messages = [f"{f.level}: {f.message}" for f in report.findings]
    assert not report.ok
    assert any(m.startswith("error: 1 of 11 expected videos have no captions") for m in messages), messages
    assert any(m.startswith("error: captions have 4 frames per video") for m in messages), messages
    assert any(m.startswith("error: a shard file the manifest does not list") for m in messages), messages
    assert any(m.startswith("warning: 1 videos have failed frames") for m in messages), messages
    assert report.summary["missing_videos"] == 1 and report.summary["rows"] == 40


def test_info_table_and_json(tmp_path, capsys):
    write_example_set(tmp_path, IDS, failed=["video1", "video2"])
    assert cli(["info", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"test\s+40\s+10\s+8\s+2\s", text), text
    assert "llava-hf/llava-v1.6-mistral-7b-hf" in text and "VideoDecodeError: example failure" in text
    assert cli(["info", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"]["test"]["failed_videos"] == 2 and info["top_errors"][0]["rows"] == 8


def test_viewer_shows_frames_next_to_captions(tmp_path):
    from shared.frames import sample_indices
    from shared.synthetic import make_test_video

    write_example_set(tmp_path / "set", ["video0", "video1", "video2"], num_frames=4, failed=["video2"])
    videos = tmp_path / "videos"
    videos.mkdir()
    make_test_video(videos / "video0.mp4", seconds=4, fps=30.0)  # sampled frames 0, 30, 60, 90 = recorded
    make_test_video(videos / "video1.mp4", seconds=8, fps=30.0)  # another cut of the video: indices differ
    out = tmp_path / "view"
    render_view(tmp_path / "set", out, n_videos=3, video_root=videos)
    assert [p.name for p in out.iterdir()] == ["index.html"]
    page = (out / "index.html").read_text()
    sections = dict(re.findall(r"<h2>(video\d)</h2>(.*?)</table></div>", page, flags=re.S))
    assert sections["video0"].count("data:image/jpeg;base64,") == 4
    assert "video0 frame 3:" in sections["video0"] and "Frame indices differ" not in sections["video0"]
    now = sample_indices(8 * 30, 30.0, 4).tolist()
    assert f"Frame indices differ: recorded [0, 30, 60, 90], sampled now {now}" in sections["video1"]
    assert (
        "No video file reachable" in sections["video2"]
        and "VideoDecodeError: example failure" in sections["video2"]
    )


def test_viewer_escapes_text_and_works_without_videos(tmp_path):
    rows = make_rows("msrvtt", "test", "video0", [0, 30], [0.0, 1.0], ["<script>alert(1)</script>", "ok"])
    write_shard(tmp_path / "set", "test", 0, 1, rows, example_provenance(2))
    write_manifest(tmp_path / "set")
    page = render_view(tmp_path / "set", tmp_path / "view").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "captions only" in page and "data:image" not in page


def test_cli_export_import_view_round_trip(tmp_path, capsys):
    write_example_set(tmp_path / "ours", IDS[:4])
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        csv.writer(f).writerows([["video_id", "sentence"], ["video0", "a cat"], ["video1", "a dog"]])
    assert cli(["export-json", str(tmp_path / "ours"), str(tmp_path / "a.json"), "--pairs", str(pairs)]) == 0
    assert sorted(json.loads((tmp_path / "a.json").read_text())) == ["video0_a cat", "video1_a dog"]
    assert (
        cli(["export-json", str(tmp_path / "ours"), str(tmp_path / "b.json")]) == 2
    )  # needs sentences: usage
    assert (
        cli(
            [
                "import-json",
                str(tmp_path / "a.json"),
                str(tmp_path / "back"),
                "--dataset-name",
                "msrvtt",
                "--split",
                "test",
            ]
        )
        == 0
    )
    assert cli(["validate", str(tmp_path / "back"), "--frames", "4"]) == 0
    assert cli(["view", str(tmp_path / "back"), str(tmp_path / "view"), "--videos", "2"]) == 0
    assert (tmp_path / "view" / "index.html").exists()


@pytest.mark.slow
def test_module_entry_point(tmp_path):
    write_example_set(tmp_path, IDS[:3])
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.shards", "validate", str(tmp_path), "--frames", "12"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "captions have 4 frames per video, the trainer samples 12" in done.stderr


def test_cli_view_and_validate_with_a_dataset_adapter(tmp_path, capsys):
    from shared.synthetic import make_test_video

    write_example_set(tmp_path / "set", ["video0", "video1"], num_frames=4)
    (tmp_path / "videos").mkdir()
    make_test_video(tmp_path / "videos" / "video0.mp4", seconds=4, fps=30.0)
    ann = tmp_path / "test.jsonl"
    ann.write_text(
        "\n".join(
            json.dumps({"video_id": v, "text": t})
            for v, t in [
                ("video0", "a man <b>cooks</b>"),
                ("video0", "someone cooks"),
                ("video1", "a dog"),
                ("video2", "a cat"),
            ]
        )
    )
    dataset = ["--dataset", "folder", "--annotations", str(ann), "--video-root", str(tmp_path / "videos")]
    assert cli(["view", str(tmp_path / "set"), str(tmp_path / "view"), *dataset]) == 0
    page = (tmp_path / "view" / "index.html").read_text()
    video0 = page[page.index("<h2>video0</h2>") : page.index("<h2>video1</h2>")]
    assert "a man &lt;b&gt;cooks&lt;/b&gt;" in video0 and "someone cooks" in video0
    assert video0.count("data:image/jpeg") == 4 and "a dog" in page
    assert cli(["validate", str(tmp_path / "set"), *dataset]) == 1  # video2 of the dataset has no captions
    assert "1 of 3 expected videos have no captions, e.g. ['video2']" in capsys.readouterr().err
