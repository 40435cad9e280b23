"""Every manifest reader checks the types of the fields it uses and names the field (issue 21, §5).

Caption sets (``shared.shards.read_manifest``, the shards CLI) and frame stores (``FrameStore``,
``frame_store_info``, the framestore CLI) with valid JSON of the wrong type in one field: one error that
names the field, exit 1 from the CLI, never a ``TypeError``. (Video indexes: tests/test_search_bad_input.py.)
"""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines import framestore as framestore_cli
from pipelines import shards as shards_cli
from shared.datasets import VideoItem
from shared.framestore import Codec, FrameStore, FrameStoreError, build_frame_store, frame_store_info
from shared.shards import CaptionSetError, read_manifest
from shared.shards.example import write_example_set
from shared.synthetic import make_test_video


def _edit(root, change) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _set(manifest, path: str, value) -> None:
    *parents, last = path.split(".")
    node = manifest
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value


# (field, value, what the message says): the same for caption sets and frame stores
WRONG = [
    ("shards.0.rows", "3", 'field "shards[0].rows" is "3", expected a whole number'),
    ("shards.0.sha256", None, 'field "shards[0].sha256" is null, expected a string'),
    ("shards.0.bytes", True, 'field "shards[0].bytes" is true, expected a whole number'),
    ("splits.SPLIT.missing_shards", None, 'field "splits.SPLIT.missing_shards" is null, expected a list'),
    ("splits.SPLIT.complete", "yes", 'field "splits.SPLIT.complete" is "yes", expected true or false'),
    ("splits.SPLIT.videos", 2.5, 'field "splits.SPLIT.videos" is 2.5, expected a whole number'),
]


@pytest.fixture(scope="module")
def caption_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions") / "set"
    write_example_set(root, ["a", "b", "c", "d"], num_frames=2, num_shards=2, split="test")
    return root


@pytest.fixture(scope="module")
def frame_store(tmp_path_factory):
    base = tmp_path_factory.mktemp("frames")
    items = [
        VideoItem(
            f"v{i}",
            make_test_video(base / f"v{i}.mp4", 2, 8, size=(64, 48), seed=i),
            None,
            None,
            f"clip {i}",
            "train",
            f"v{i}_0",
            True,
        )
        for i in range(2)
    ]
    build_frame_store(
        items,
        base / "store",
        codec=Codec("png"),
        dataset="folder",
        split="train",
        num_frames=2,
        short_side=32,
        shard_size=1,
        progress=False,
    )
    return base / "store"


@pytest.mark.parametrize(("field", "value", "message"), WRONG, ids=[w[0] for w in WRONG])
def test_caption_set_manifest_names_the_wrong_field(tmp_path, caption_set, capsys, field, value, message):
    root = tmp_path / "set"
    shutil.copytree(caption_set, root)
    _edit(root, lambda m: _set(m, field.replace("SPLIT", "test"), value))
    message = message.replace("SPLIT", "test")
    with pytest.raises(CaptionSetError) as caught:
        read_manifest(root)
    assert message in str(caught.value) and "manifest.json" in str(caught.value)
    assert shards_cli.main(["validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("field", "value", "message"), WRONG, ids=[w[0] for w in WRONG])
def test_frame_store_manifest_names_the_wrong_field(tmp_path, frame_store, capsys, field, value, message):
    root = tmp_path / "store"
    shutil.copytree(frame_store, root)
    _edit(root, lambda m: _set(m, field.replace("SPLIT", "train"), value))
    message = message.replace("SPLIT", "train")
    for read in (FrameStore, frame_store_info):
        with pytest.raises(FrameStoreError) as caught:
            read(root)
        assert message in str(caught.value) and "manifest.json" in str(caught.value)
    for command in ("info", "validate"):
        assert framestore_cli.main([command, str(root)]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_frame_store_without_splits_object_is_named(tmp_path, frame_store):
    root = tmp_path / "store"
    shutil.copytree(frame_store, root)
    _edit(root, lambda m: m.update(splits=None))
    with pytest.raises(FrameStoreError, match='field "splits" is null, expected an object'):
        frame_store_info(root)


def test_unknown_keys_in_a_frame_store_entry_are_ignored(tmp_path, frame_store):
    root = tmp_path / "store"
    shutil.copytree(frame_store, root)
    _edit(root, lambda m: m["shards"][0].update(note="checked by hand"))
    assert len(FrameStore(root)) == 2


@pytest.mark.parametrize("quality", [None, "95", 9.5])
def test_a_codec_quality_of_the_wrong_type_is_named(tmp_path, frame_store, quality):
    root = tmp_path / "store"
    shutil.copytree(frame_store, root)
    _edit(root, lambda m: m["provenance"]["codec"].update(quality=quality))
    with pytest.raises(FrameStoreError, match="codec quality .*expected a whole number 1-100"):
        FrameStore(root)
