"""shared.paths: ids resolve to files inside the video root, by name whatever the extension; unsafe ids fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared import paths
from shared.paths import (
    UnsafeVideoIdError,
    VideoIndex,
    check_video_id,
    clear_index_cache,
    resolve_video,
    split_video_extension,
    video_index,
)
from tests.video_files import fresh_listing_cache, touch  # noqa: F401 (autouse fixture)


def test_id_finds_file_whatever_the_extension(tmp_path):
    touch(tmp_path, "video1.webm")
    touch(tmp_path, "video2.MOV")
    touch(tmp_path, "video3.mkv")
    assert resolve_video(tmp_path, "video1") == tmp_path / "video1.webm"
    assert resolve_video(tmp_path, "video2") == tmp_path / "video2.MOV"
    assert resolve_video(tmp_path, "video3") == tmp_path / "video3.mkv"


def test_earlier_extension_wins_then_shallower_path(tmp_path):
    touch(tmp_path, "a.avi")
    touch(tmp_path, "a.mp4")
    touch(tmp_path, "sub/b.mp4")
    touch(tmp_path, "b.mp4")
    assert resolve_video(tmp_path, "a", extensions=(".mp4", ".avi")) == tmp_path / "a.mp4"
    assert resolve_video(tmp_path, "a", extensions=(".avi", ".mp4")) == tmp_path / "a.avi"
    assert resolve_video(tmp_path, "b") == tmp_path / "b.mp4"


def test_exact_name_wins_over_added_extension(tmp_path):
    touch(tmp_path, "clip.m4v")
    touch(tmp_path, "clip.m4v.mp4")
    assert resolve_video(tmp_path, "clip.m4v") == tmp_path / "clip.m4v"


def test_id_with_extension_finds_a_re_encoded_file(tmp_path):
    touch(tmp_path, "26292851@N04_4253489686_265c3c8051.mp4")
    touch(tmp_path, "58792004@N06_8544469262_fd25eddb2e.mov")
    assert resolve_video(tmp_path, "26292851@N04_4253489686_265c3c8051.m4v").name == (
        "26292851@N04_4253489686_265c3c8051.mp4"
    )
    # DiDeMo has ids with a bare trailing dot
    assert resolve_video(tmp_path, "58792004@N06_8544469262_fd25eddb2e.").name == (
        "58792004@N06_8544469262_fd25eddb2e.mov"
    )


def test_dots_inside_an_id_are_not_an_extension(tmp_path):
    clip = "3086_UGLY_TRUTH_00.23.23.000-00.23.28.886"
    touch(tmp_path, f"3086_UGLY_TRUTH/{clip}.avi")
    touch(tmp_path, "3086_UGLY_TRUTH_00.23.23.mp4")  # what a naive stem split would match
    assert resolve_video(tmp_path, clip) == tmp_path / "3086_UGLY_TRUTH" / f"{clip}.avi"
    assert split_video_extension(clip) == (clip, "")
    assert split_video_extension("x.MP4") == ("x", ".MP4")


def test_files_in_sub_folders_are_found_and_nested_ids_match_relative_paths(tmp_path):
    touch(tmp_path, "all/video7.mp4")
    touch(tmp_path, "part1/x.mp4")
    touch(tmp_path, "part2/x.mp4")
    assert resolve_video(tmp_path, "video7") == tmp_path / "all" / "video7.mp4"
    assert resolve_video(tmp_path, "part2/x") == tmp_path / "part2" / "x.mp4"
    assert resolve_video(tmp_path, "part2/x.mp4") == tmp_path / "part2" / "x.mp4"


def test_non_video_files_do_not_match_by_stem(tmp_path):
    touch(tmp_path, "video1.json")
    found = video_index(tmp_path).resolve("video1")
    assert not found.exists and found.path == tmp_path / "video1.mp4"


def test_missing_file_points_at_expected_location(tmp_path):
    index = video_index(tmp_path)
    assert index.resolve("video9") == paths.Resolved(tmp_path / "video9.mp4", False)
    assert index.resolve("x.m4v") == paths.Resolved(tmp_path / "x.m4v", False)
    assert index.find("video9") is None


def test_missing_root_is_not_an_error(tmp_path):
    found = video_index(tmp_path / "absent").resolve("video0")
    assert found.path == tmp_path / "absent" / "video0.mp4" and not found.exists


@pytest.mark.parametrize(
    "video_id",
    ["../secret", "a/../../b", "..", "sub/..", "/etc/passwd", "\\server\\x", "C:evil", "", " ", "a\x00b"],
)
def test_unsafe_ids_are_rejected_naming_the_id(tmp_path, video_id):
    touch(tmp_path, "ok.mp4")
    with pytest.raises(UnsafeVideoIdError) as err:
        resolve_video(tmp_path, video_id)
    assert repr(video_id) in str(err.value) and err.value.video_id == video_id
    assert isinstance(err.value, ValueError)


def test_safe_ids_are_normalised():
    assert check_video_id("./a//b.mp4") == "a/b.mp4"
    assert check_video_id("x..y") == "x..y"  # dots inside a name are fine


def test_symlink_escaping_the_root_is_rejected(tmp_path):
    root, outside = tmp_path / "videos", touch(tmp_path, "elsewhere/leak.mp4")
    root.mkdir()
    os.symlink(outside, root / "leak.mp4")
    with pytest.raises(UnsafeVideoIdError, match="'leak'.*outside the video root"):
        resolve_video(root, "leak")


def test_symlink_inside_the_root_is_allowed(tmp_path):
    target = touch(tmp_path, "store/real.mp4")
    os.symlink(target, tmp_path / "alias.mp4")
    assert resolve_video(tmp_path, "alias") == tmp_path / "alias.mp4"


def test_symlinked_folders_are_not_followed(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    touch(tmp_path, "outside/v.mp4")
    os.symlink(tmp_path / "outside", root / "linked")
    assert not video_index(root).resolve("v").exists


def test_root_reached_through_a_symlink_works(tmp_path):
    touch(tmp_path, "real_root/v.mp4")
    os.symlink(tmp_path / "real_root", tmp_path / "link_root")
    assert resolve_video(tmp_path / "link_root", "v") == tmp_path / "link_root" / "v.mp4"


def test_one_listing_per_root_and_no_stat_per_id(tmp_path, monkeypatch):
    for i in range(50):
        touch(tmp_path, f"video{i}.mp4")
    calls = []
    real_scandir = os.scandir
    monkeypatch.setattr(paths.os, "scandir", lambda p: calls.append(p) or real_scandir(p))
    index = video_index(tmp_path)
    assert len(calls) == 1 and index.n_files == 50

    def no_stat(*args, **kwargs):
        raise AssertionError("resolution must not touch the file system")

    monkeypatch.setattr(paths.os, "stat", no_stat)
    monkeypatch.setattr(Path, "exists", no_stat)
    monkeypatch.setattr(Path, "is_file", no_stat)
    for i in range(60):  # 50 present, 10 missing
        assert video_index(tmp_path).resolve(f"video{i}").exists == (i < 50)
    assert len(calls) == 1


def test_cache_is_per_root_and_can_be_cleared(tmp_path):
    assert not video_index(tmp_path).resolve("late").exists
    touch(tmp_path, "late.mp4")
    assert not video_index(tmp_path).resolve("late").exists  # cached listing
    clear_index_cache()
    assert video_index(tmp_path).resolve("late").exists


def test_extensions_must_not_be_empty(tmp_path):
    with pytest.raises(ValueError, match="extensions"):
        VideoIndex(tmp_path, ())
