"""shared.datasets on real annotation files and on small video folders built here; the CLI.

The annotation tests run on the excerpts in ``tests/data`` (a few dozen entries of each real file, see its
README) and, when the complete files are present, on those too, checking the published sizes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.datasets import (
    DATASETS,
    UnsafeVideoIdError,
    VideoItem,
    get_dataset,
    join_paragraph,
    list_datasets,
    register_dataset,
    summarize,
    unique_videos,
)
from shared.datasets.lsmdc import parse_clip_id
from tests.video_files import fresh_listing_cache, touch  # noqa: F401 (autouse fixture)

REPO = Path(__file__).parents[1]
LSMDC_TEST = "LSMDC16_challenge_1000_publictect.csv"


EXCERPTS = Path(__file__).parent / "data"
FULL_FILES = Path(os.environ.get("DISCOVLA_REAL_ANNOTATIONS", Path(__file__).parents[2] / "shared" / "data"))
ANNOTATION_ROOTS = [pytest.param(EXCERPTS, id="excerpts")]
if (FULL_FILES / "msrvtt" / "MSRVTT_JSFUSION_test.csv").is_file():
    ANNOTATION_ROOTS.append(pytest.param(FULL_FILES, id="full"))


@pytest.fixture(scope="session", params=ANNOTATION_ROOTS)
def real_data(request) -> Path:
    """A folder of the benchmarks' real annotation files: the excerpts, then the complete files if present."""
    return request.param


def expected_size(root: Path, excerpt_size: int, published: int) -> int:
    """The number of items a file must give: its own count for an excerpt, the published one in full."""
    return excerpt_size if root == EXCERPTS else published


# --- registry, defaults ---------------------------------------------------------------------------


def test_registry_lists_the_benchmarks_and_names_valid_choices():
    assert {"msrvtt", "didemo", "activitynet", "lsmdc", "folder"} <= set(list_datasets())
    with pytest.raises(ValueError, match=r"unknown dataset 'msvd'.*'didemo'.*'msrvtt'"):
        get_dataset("msvd", "test")
    with pytest.raises(ValueError, match=r"no split 'dev'.*\['train', 'val'\]"):
        get_dataset("activitynet", "dev")


def test_register_dataset_adds_a_name_once(monkeypatch):
    monkeypatch.setitem(DATASETS, "msrvtt", DATASETS["msrvtt"])  # restore the table afterwards
    monkeypatch.delitem(DATASETS, "extra", raising=False)
    register_dataset("extra", DATASETS["didemo"])
    assert "extra" in list_datasets() and get_dataset("extra", "test").name == "didemo"
    monkeypatch.delitem(DATASETS, "extra")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("msrvtt", DATASETS["lsmdc"])


def test_default_roots_follow_discovla_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DISCOVLA_DATA", str(tmp_path))
    dataset = get_dataset("msrvtt", "test")
    assert dataset.annotations == tmp_path / "msrvtt" / "annotations"
    assert dataset.video_root == tmp_path / "msrvtt" / "videos"
    monkeypatch.delenv("DISCOVLA_DATA")
    assert get_dataset("didemo", "test").video_root == Path("data") / "didemo" / "videos"
    explicit = get_dataset("didemo", "test", annotations=tmp_path / "a", video_root=tmp_path / "v")
    assert (explicit.annotations, explicit.video_root) == (tmp_path / "a", tmp_path / "v")


@pytest.mark.parametrize(
    "name, frames, words, window_rule",
    [
        ("msrvtt", 12, 32, "whole"),
        ("didemo", 12, 64, "0-31s"),
        ("activitynet", 12, 64, "whole"),
        ("lsmdc", 12, 32, "clip|movie-window"),
        ("folder", 12, 32, "annotation-window|whole"),
    ],
)
def test_presets_per_dataset(tmp_path, name, frames, words, window_rule):
    (tmp_path / "test.jsonl").write_text("")
    dataset = get_dataset(name, "test" if name != "activitynet" else "val", annotations=tmp_path)
    assert (dataset.frames, dataset.words, dataset.window_rule) == (frames, words, window_rule)
    assert dataset.describe()["window_rule"] == window_rule
    override = get_dataset(name, dataset.split, annotations=tmp_path, frames=32, words=48)
    assert (override.frames, override.words) == (32, 48)


def test_frames_must_be_positive():
    with pytest.raises(ValueError, match="frames must be >= 1, got 0"):
        get_dataset("msrvtt", "test", frames=0)


def test_missing_annotation_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test_data\.json.*--annotations"):
        get_dataset("didemo", "test", annotations=tmp_path).items()


def test_join_paragraph_rule():
    assert join_paragraph(["A man runs.", "  He  falls.\n", "", " \t", "then\nstands"]) == (
        "A man runs. He falls. then stands"
    )


# --- MSRVTT ---------------------------------------------------------------------------------------


def test_msrvtt_test_is_1k_a(real_data, tmp_path):
    with (real_data / "msrvtt" / "MSRVTT_JSFUSION_test.csv").open() as f:
        rows = list(csv.DictReader(f))
    touch(tmp_path, f"all/{rows[0]['video_id']}.mp4")
    items = get_dataset("msrvtt", "test", annotations=real_data / "msrvtt", video_root=tmp_path).items()
    n = expected_size(real_data, len(rows), 1000)
    assert len(items) == n and len(unique_videos(items)) == n
    assert [(i.video_id, i.text) for i in items] == [(r["video_id"], r["sentence"].strip()) for r in rows]
    first = items[0]
    assert (first.path, first.exists, first.window, first.split) == (
        tmp_path / "all" / f"{first.video_id}.mp4",
        True,
        None,
        "test",
    )
    assert first.item_id == f"{first.video_id}_0"
    assert items[1].path == tmp_path / f"{items[1].video_id}.mp4" and not items[1].exists


@pytest.fixture
def msrvtt_train_annotations(real_data, tmp_path) -> Path:
    """The real split files plus a small MSRVTT_data.json (the real one is not shipped here)."""
    folder = tmp_path / "msrvtt"
    folder.mkdir()
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv"):
        shutil.copy(real_data / "msrvtt" / name, folder / name)
    sentences = [
        {"video_id": "video0", "caption": f"sentence {k} of video0 ", "sen_id": k} for k in range(20)
    ]
    sentences.insert(5, {"video_id": "video9770", "caption": "a 1k-A test video", "sen_id": 100})
    sentences += [{"video_id": "video1", "caption": f"video1 says {k}", "sen_id": 200 + k} for k in range(3)]
    (folder / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences, "videos": []}))
    return folder


def test_msrvtt_train_is_9k_split_times_every_sentence(msrvtt_train_annotations):
    train_ids = (msrvtt_train_annotations / "MSRVTT_train.9k.csv").read_text().split()
    assert {"video0", "video1"} <= set(train_ids) and "video9770" not in train_ids
    items = get_dataset("msrvtt", "train", annotations=msrvtt_train_annotations).items()
    assert len(items) == 23  # 20 + 3; the test video's sentence is not a training item
    assert [i.text for i in items[:20]] == [f"sentence {k} of video0" for k in range(20)]
    assert [i.item_id for i in items[:20]] == [f"video0_{k}" for k in range(20)]
    assert items[-1].item_id == "video1_2" and items[-1].text == "video1 says 2"
    assert all(i.window is None and i.split == "train" for i in items)


def test_msrvtt_train7k_uses_the_7k_split(msrvtt_train_annotations):
    seven = set((msrvtt_train_annotations / "MSRVTT_train.7k.csv").read_text().split()[1:])
    items = get_dataset("msrvtt", "train7k", annotations=msrvtt_train_annotations).items()
    assert {i.video_id for i in items} == {"video0", "video1"} & seven


def test_msrvtt_train_without_sentences_file_says_which_file(real_data):
    with pytest.raises(FileNotFoundError, match="MSRVTT_data.json"):
        get_dataset("msrvtt", "train", annotations=real_data / "msrvtt").items()


# --- DiDeMo ---------------------------------------------------------------------------------------


def test_didemo_test_is_one_paragraph_per_video(real_data):
    raw = json.loads((real_data / "didemo" / "test_data.json").read_text())
    videos = list(dict.fromkeys(entry["video"] for entry in raw))
    items = get_dataset("didemo", "test", annotations=real_data / "didemo").items()
    assert [i.video_id for i in items] == videos  # order of first appearance
    assert all(i.window == (0.0, 31.0) for i in items)
    by_id = {i.video_id: i for i in items}
    assert by_id["26292851@N04_4253489686_265c3c8051.m4v"].text == (
        "someone kicks the bug towards some rocks. a man in a red shirt stomps on a centipede. "
        "man in white shirt is seen close up of a millipede on the rocks first time foot swipes at wiggly thing"
    )
    assert all("\n" not in i.text and "  " not in i.text and i.text == i.text.strip() for i in items)


def test_didemo_val_split(real_data):
    raw = json.loads((real_data / "didemo" / "val_data.json").read_text())
    items = get_dataset("didemo", "val", annotations=real_data / "didemo").items()
    assert len(items) == len({entry["video"] for entry in raw}) and items[0].split == "val"


def test_didemo_files_found_whatever_the_extension(real_data, tmp_path):
    touch(tmp_path, "26292851@N04_4253489686_265c3c8051.mp4")  # annotated as .m4v, re-encoded
    touch(tmp_path, "flickr/51035693821@N01_7071386095_a7350f43e0.mpg")  # unchanged, in a sub-folder
    touch(tmp_path, "58792004@N06_8544469262_fd25eddb2e.mov")  # annotated with a bare trailing dot
    items = get_dataset("didemo", "test", annotations=real_data / "didemo", video_root=tmp_path).items()
    found = {i.video_id: i.path.relative_to(tmp_path).as_posix() for i in items if i.exists}
    assert found == {
        "26292851@N04_4253489686_265c3c8051.m4v": "26292851@N04_4253489686_265c3c8051.mp4",
        "51035693821@N01_7071386095_a7350f43e0.mpg": "flickr/51035693821@N01_7071386095_a7350f43e0.mpg",
        "58792004@N06_8544469262_fd25eddb2e.": "58792004@N06_8544469262_fd25eddb2e.mov",
    }


# --- ActivityNet ----------------------------------------------------------------------------------


def test_activitynet_val_1_is_4917_paragraphs(real_data):
    raw = json.loads((real_data / "activitynet" / "val_1.json").read_text())
    items = get_dataset("activitynet", "val", annotations=real_data / "activitynet").items()
    n = expected_size(real_data, len(raw), 4917)
    assert len(items) == n and len(unique_videos(items)) == n
    assert [i.video_id for i in items] == list(raw)
    assert all(i.video_id.startswith("v_") and i.window is None for i in items)
    first = items[0]
    assert first.video_id == "v_uqiMw7tQ1Cc"
    assert first.text == (
        "A weight lifting tutorial is given. "
        "The coach helps the guy in red with the proper body placement and lifting technique."
    )


def test_activitynet_train_has_10009_videos(real_data):
    raw = json.loads((real_data / "activitynet" / "train.json").read_text())
    items = get_dataset("activitynet", "train", annotations=real_data / "activitynet").items()
    assert len(items) == expected_size(real_data, len(raw), 10009)
    first = next(iter(raw))
    assert (items[0].video_id, items[0].text) == (first, join_paragraph(raw[first]["sentences"]))


def test_activitynet_files_with_or_without_v_prefix(real_data, tmp_path):
    touch(tmp_path, "v_uqiMw7tQ1Cc.mp4")
    touch(tmp_path, "bXdq2zI1Ms0.mkv")  # named without the prefix
    touch(tmp_path, "FsS_NCZEfaI.mp4")  # both spellings present: the annotation's id wins
    touch(tmp_path, "v_FsS_NCZEfaI.webm")
    items = get_dataset(
        "activitynet", "val", annotations=real_data / "activitynet", video_root=tmp_path
    ).items()
    by_id = {i.video_id: i for i in items}
    assert by_id["v_uqiMw7tQ1Cc"].path == tmp_path / "v_uqiMw7tQ1Cc.mp4"
    assert by_id["v_bXdq2zI1Ms0"].path == tmp_path / "bXdq2zI1Ms0.mkv" and by_id["v_bXdq2zI1Ms0"].exists
    assert by_id["v_FsS_NCZEfaI"].path == tmp_path / "v_FsS_NCZEfaI.webm"
    assert sum(i.exists for i in items) == 3
    missing = next(i for i in items if not i.exists)
    assert missing.path == tmp_path / f"{missing.video_id}.mp4"


# --- LSMDC ----------------------------------------------------------------------------------------


def test_lsmdc_test_is_1000_clips(real_data):
    lines = (real_data / "lsmdc" / LSMDC_TEST).read_text().splitlines()
    items = get_dataset("lsmdc", "test", annotations=real_data / "lsmdc").items()
    n = expected_size(real_data, len(lines), 1000)
    assert len(items) == n == len({i.video_id for i in items})
    assert [(i.video_id, i.text) for i in items] == [
        (ln.split("\t")[0], ln.split("\t")[5].strip()) for ln in lines
    ]


def test_lsmdc_clip_id_window():
    assert parse_clip_id("3086_UGLY_TRUTH_00.23.23.000-00.23.28.886") == ("3086_UGLY_TRUTH", 1403.0, 1408.886)
    assert parse_clip_id("1054_Harry_Potter_and_the_prisoner_of_azkaban_01.44.29.000-01.44.31.167") == (
        "1054_Harry_Potter_and_the_prisoner_of_azkaban",
        6269.0,
        6271.167,
    )
    with pytest.raises(ValueError, match="HH.MM.SS.mmm"):
        parse_clip_id("no_time_suffix")


def test_lsmdc_clip_file_or_window_in_movie_file(real_data, tmp_path):
    clip_a = "3086_UGLY_TRUTH_00.23.23.000-00.23.28.886"
    clip_b = "3071_THE_DESCENDANTS_01.41.52.043-01.41.54.754"
    touch(tmp_path, f"3086_UGLY_TRUTH/{clip_a}.avi")  # its own clip file
    touch(tmp_path, "3086_UGLY_TRUTH.mkv")  # a movie file too: the clip file wins
    touch(tmp_path, "movies/3071_THE_DESCENDANTS.mkv")  # only the movie: a window in it
    items = get_dataset("lsmdc", "test", annotations=real_data / "lsmdc", video_root=tmp_path).items()
    by_id = {i.video_id: i for i in items}
    assert (by_id[clip_a].path, by_id[clip_a].window) == (
        tmp_path / "3086_UGLY_TRUTH" / f"{clip_a}.avi",
        None,
    )
    assert by_id[clip_b].path == tmp_path / "movies" / "3071_THE_DESCENDANTS.mkv"
    assert by_id[clip_b].window == pytest.approx((6112.043, 6114.754))
    other = [i for i in items if not i.video_id.startswith(("3086_UGLY_TRUTH", "3071_THE_DESCENDANTS"))][0]
    movie = parse_clip_id(other.video_id)[0]
    assert (other.exists, other.window, other.path) == (
        False,
        None,
        tmp_path / movie / f"{other.video_id}.avi",
    )


def test_lsmdc_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / LSMDC_TEST).write_text("a_00.00.01.000-00.00.02.000\t1\t2\t3\t4\tok\nbroken line\n")
    with pytest.raises(ValueError, match=rf"{LSMDC_TEST}:2: expected 6 tab-separated fields"):
        get_dataset("lsmdc", "test", annotations=tmp_path).items()


# --- folder ---------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_folder_jsonl_keeps_every_text_and_window(tmp_path):
    touch(tmp_path, "clips/cat.mp4")
    ann = write_jsonl(
        tmp_path / "captions.jsonl",
        [
            {"video_id": "cat", "text": "a cat sleeps"},
            {"video_id": "cat", "text": "the cat wakes up", "start": 2, "end": 5.5},
            "",
            {"video_id": "dog", "text": " a dog  barks ", "start": None, "end": None},
        ],
    )
    dataset = get_dataset("folder", "mine", annotations=ann)
    assert dataset.video_root == tmp_path  # defaults to the annotation file's folder
    items = dataset.items()
    assert [(i.item_id, i.text, i.window, i.exists) for i in items] == [
        ("cat_0", "a cat sleeps", None, True),
        ("cat_1", "the cat wakes up", (2.0, 5.5), True),
        ("dog_0", "a dog barks", None, False),
    ]
    assert items[0].path == tmp_path / "clips" / "cat.mp4" and items[0].split == "mine"


def test_folder_csv_in_an_annotation_folder(tmp_path):
    videos, ann = tmp_path / "videos", tmp_path / "ann"
    touch(videos, "a.webm")
    ann.mkdir()
    with (ann / "test.csv").open("w", newline="") as f:
        csv.writer(f).writerows(
            [
                ["video_id", "text", "start", "end", "note"],
                ["a", "first, with a comma", "", "", "x"],
                ["a", "two", 1, 3, ""],
            ]
        )
    items = get_dataset("folder", "test", annotations=ann, video_root=videos).items()
    assert [(i.video_id, i.text, i.window, i.path) for i in items] == [
        ("a", "first, with a comma", None, videos / "a.webm"),
        ("a", "two", (1.0, 3.0), videos / "a.webm"),
    ]


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("{not json", "not valid JSON"),
        ('["video_id", "text"]', "expected a JSON object"),
        ({"text": "no id"}, "missing or empty 'video_id'"),
        ({"video_id": "v", "text": "  "}, "missing or empty 'text'"),
        ({"video_id": "v", "text": "t", "start": 1}, "give both"),
        ({"video_id": "v", "text": "t", "start": "soon", "end": 2}, "start='soon'"),
        ({"video_id": "v", "text": "t", "start": -1, "end": 2}, "start=-1"),
        ({"video_id": "v", "text": "t", "start": 4, "end": 2}, "expected start < end"),
    ],
)
def test_folder_malformed_jsonl_names_file_and_line(tmp_path, bad_row, message):
    ann = write_jsonl(tmp_path / "ann.jsonl", [{"video_id": "ok", "text": "fine"}, bad_row])
    with pytest.raises(ValueError, match=message) as err:
        get_dataset("folder", "x", annotations=ann).items()
    assert f"{ann}:2:" in str(err.value)


def test_folder_malformed_csv_names_file_and_line(tmp_path):
    ann = tmp_path / "ann.csv"
    ann.write_text("video_id,text\nok,fine\nbad,too,many\n")
    with pytest.raises(ValueError, match=rf"{ann}:3: more fields"):
        get_dataset("folder", "x", annotations=ann).items()
    ann.write_text("id,caption\nok,fine\n")
    with pytest.raises(ValueError, match=r"header lacks \['video_id', 'text'\]"):
        get_dataset("folder", "x", annotations=ann).items()


@pytest.mark.parametrize("video_id", ["../../etc/passwd", "/etc/passwd", "sub/../../x"])
def test_folder_unsafe_ids_are_rejected(tmp_path, video_id):
    ann = write_jsonl(tmp_path / "ann.jsonl", [{"video_id": video_id, "text": "t"}])
    with pytest.raises(UnsafeVideoIdError, match=rf"{video_id!r}.*ann.jsonl:1"):
        get_dataset("folder", "x", annotations=ann).items()


def test_symlink_escaping_the_video_root_fails_the_listing(tmp_path):
    root = tmp_path / "videos"
    secret = touch(tmp_path, "private/secret.mp4")
    root.mkdir()
    (root / "secret.mp4").symlink_to(secret)
    ann = write_jsonl(root / "ann.jsonl", [{"video_id": "secret", "text": "t"}])
    with pytest.raises(UnsafeVideoIdError, match="'secret'.*outside the video root"):
        get_dataset("folder", "x", annotations=ann).items()


def test_folder_items_feed_the_frame_sampler(video_dir, tmp_path):
    from shared.frames import sample_frames

    ann = write_jsonl(
        tmp_path / "ann.jsonl",
        [
            {"video_id": "long_30fps", "text": "whole"},
            {"video_id": "long_30fps", "text": "part", "start": 4, "end": 10},
        ],
    )
    dataset = get_dataset("folder", "x", annotations=ann, video_root=video_dir)
    whole, part = dataset.items()
    assert whole.path == video_dir / "long_30fps.mp4" and whole.exists
    sampled = sample_frames(part.path, dataset.frames, part.window)
    assert sampled.frames.shape[0] == dataset.frames == 12
    assert 4.0 <= sampled.timestamps.min() and sampled.timestamps.max() <= 10.0


def test_summary_counts_items_videos_and_missing(tmp_path):
    items = [
        VideoItem("a", tmp_path / "a.mp4", None, None, "t1", "x", "a_0", True),
        VideoItem("a", tmp_path / "a.mp4", 1.0, 2.0, "t2", "x", "a_1", True),
        VideoItem("b", tmp_path / "b.mp4", None, None, "t3", "x", "b_0", False),
    ]
    summary = summarize(items, n_examples=2)
    assert (summary["items"], summary["videos"], summary["missing_videos"], summary["windowed_items"]) == (
        3,
        2,
        1,
        1,
    )
    assert summary["missing_examples"] == [str(tmp_path / "b.mp4")] and len(summary["examples"]) == 2


# --- CLI ------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.datasets", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_summary_and_jsonl(real_data, tmp_path):
    touch(tmp_path, "video9770.mp4")
    touch(tmp_path, "video9771.avi")
    common = ["--dataset", "msrvtt", "--split", "test", "--annotations", str(real_data / "msrvtt")]
    n_rows = len((real_data / "msrvtt" / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()) - 1
    n = expected_size(real_data, n_rows, 1000)
    summary = run_cli(*common, "--video-root", str(tmp_path))
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert {f"items: {n}", f"videos: {n}", f"missing videos: {n - 2}"} <= set(lines)
    assert "video9770_0" in summary.stdout

    listing = run_cli(*common, "--video-root", str(tmp_path), "--jsonl")
    assert listing.returncode == 0, listing.stderr
    records = [json.loads(line) for line in listing.stdout.splitlines()]
    assert len(records) == n and f"items: {n}" in listing.stderr
    assert records[1] == {
        "video_id": "video9771",
        "path": str(tmp_path / "video9771.avi"),
        "start": None,
        "end": None,
        "text": "a little girl does gymnastics",
        "item_id": "video9771_0",
        "split": "test",
        "exists": True,
    }


def test_cli_folder_jsonl_and_errors(tmp_path):
    ann = write_jsonl(tmp_path / "ann.jsonl", [{"video_id": "v", "text": "t", "start": 1, "end": 2}])
    listing = run_cli("--dataset", "folder", "--split", "mine", "--annotations", str(ann), "--jsonl")
    assert listing.returncode == 0, listing.stderr
    record = json.loads(listing.stdout)
    assert (record["start"], record["end"], record["path"]) == (1.0, 2.0, str(tmp_path / "v.mp4"))

    write_jsonl(ann, [{"video_id": "../v", "text": "t"}])
    failed = run_cli("--dataset", "folder", "--split", "mine", "--annotations", str(ann))
    assert failed.returncode == 1 and "unsafe video id '../v'" in failed.stderr and failed.stdout == ""
    missing = run_cli("--dataset", "didemo", "--split", "test", "--annotations", str(tmp_path / "none"))
    assert missing.returncode == 1 and "test_data.json" in missing.stderr
    write_jsonl(ann, [{"video_id": "v", "text": ""}])  # a malformed row: error naming the file, no traceback
    malformed = run_cli("--dataset", "folder", "--split", "mine", "--annotations", str(ann))
    assert malformed.returncode == 1 and malformed.stderr.startswith(f"error: {ann}")
    assert "Traceback" not in malformed.stderr + failed.stderr + missing.stderr
    usage = run_cli("--dataset", "nosuch", "--split", "test")  # usage errors exit 2
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
