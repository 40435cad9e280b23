"""Bad input to the search commands ends in one clear message, never a traceback or a huge allocation.

Manifests edited by hand (valid JSON, wrong types), a number of results far beyond the index, and the
same refusals from the library, the CLI and the page (``search.web``, tested in test_search_web.py).
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from pipelines.search import main as search_cli
from search import BadKError, IndexFormatError, VideoIndex, build_index
from search.ann import AnnBackendMissingError
from tests.helpers import colour_videos, save_noise_adapters


@pytest.fixture(scope="module")
def ann_index(tmp_path_factory):
    """An index of 8 one-colour videos in 1 s windows (16 rows) with a faiss ANN index (exact_below=4)."""
    base = tmp_path_factory.mktemp("bad_input")
    colour_videos(base / "videos")
    index = VideoIndex.build(
        base / "index",
        videos=[base / "videos"],
        adapters=save_noise_adapters(base / "adapters", seed=0),
        pretrained=None,
        window=1,
        exact_below=4,
        progress=False,
    )
    assert index.ann is not None
    return index


# (field, value it is set to, what the message must say)
WRONG_FIELDS = [
    ("entries", None, 'field "entries" is null, expected a string'),
    ("entries", "../outside.parquet", "field \"entries\" is '../outside.parquet', expected a file name"),
    ("count", "16", 'field "count" is "16", expected a whole number'),
    ("count", True, 'field "count" is true, expected a whole number'),
    ("dim", 1.5, 'field "dim" is 1.5, expected a whole number'),
    ("roots", "/videos", 'field "roots" is "/videos", expected a list'),
    ("roots", [3], 'field "roots" is [3], expected a list of strings'),
    ("skipped", [{"path": "x"}], 'lacks the field "skipped[0].key"'),
    ("provenance", [], 'field "provenance" is [], expected an object'),
    ("ann", 7, 'field "ann" is 7, expected a string or null'),
    ("settings", None, 'field "settings" is null, expected an object'),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), WRONG_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in WRONG_FIELDS]
)
def test_manifest_fields_of_the_wrong_type_are_named(tmp_path, ann_index, capsys, field, value, message):
    copy = tmp_path / "index"
    shutil.copytree(ann_index.directory, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, field: value}))
    with pytest.raises(IndexFormatError, match="manifest.json: ") as caught:
        VideoIndex.open(copy)
    assert message in str(caught.value) and "rebuild it" in str(caught.value)
    assert search_cli([str(copy), "--info"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_provenance_fields_of_the_wrong_type_are_named(tmp_path, ann_index):
    copy = tmp_path / "index"
    shutil.copytree(ann_index.directory, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["provenance"]["frames"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match='lacks the field "provenance.frames"'):
        VideoIndex.open(copy)


def test_k_is_clamped_to_the_index_size_on_the_ann_path(ann_index):
    query = ann_index.encoder.encode_texts(["a red video"])[0]
    every = ann_index.search_vector(query, 1_000_000_000)  # an ANN backend would allocate k results
    assert len(every) == len(ann_index) == 16
    assert sorted(r.entry for r in every) == list(range(16))
    exact = ann_index.search_vector(query, 1_000_000_000, exact=True)
    assert len(ann_index.search_vector(query, np.int64(3))) == 3  # numpy integers are whole numbers too
    assert [r.entry for r in every[:5]] == [r.entry for r in exact[:5]]


@pytest.mark.parametrize("k", [0, -5])
def test_k_below_one_is_refused_by_the_library_and_the_cli(ann_index, capsys, k):
    with pytest.raises(BadKError, match=rf"k={k}: expected a whole number of results, at least 1"):
        ann_index.search("a red video", k)
    with pytest.raises(SystemExit) as code:
        search_cli([str(ann_index.directory), "red", "-k", str(k)])
    assert code.value.code == 2  # a usage error
    assert f"k={k}: expected a whole number of results, at least 1" in capsys.readouterr().err


def test_a_missing_usearch_names_the_extra_before_any_work(tmp_path, ann_index, monkeypatch):
    monkeypatch.setitem(sys.modules, "usearch.index", None)  # as if the extra were not installed
    videos = ann_index.roots[0]
    with pytest.raises(AnnBackendMissingError, match=r"pip install 'discovla\[search-usearch\]'"):
        build_index(tmp_path / "i", videos=[videos], adapters=None, pretrained=None, ann_backend="usearch")
    assert not (tmp_path / "i").exists()  # refused before the model was loaded or anything written


def test_usearch_backend_answers_like_exact_search(tmp_path, ann_index):
    pytest.importorskip("usearch", reason="the search-usearch extra is not installed")
    index = VideoIndex.build(
        tmp_path / "index",
        videos=ann_index.roots,
        adapters=ann_index.provenance["adapters"],
        pretrained=None,
        window=1,
        exact_below=4,
        ann_backend="usearch",
        progress=False,
    )
    assert index.manifest["ann"].endswith(".usearch")
    query = index.encoder.encode_texts(["a green video"])[0]
    assert [r.entry for r in index.search_vector(query, 5)] == [
        r.entry for r in index.search_vector(query, 5, exact=True)
    ]


def test_info_as_text_and_as_json(ann_index, capsys):
    assert search_cli([str(ann_index.directory), "--info"]) == 0
    assert capsys.readouterr().out.startswith(f"{ann_index.directory}: 16 entries from 8 videos")
    assert search_cli([str(ann_index.directory), "--info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["entries"], info["files"], info["search"]) == (16, 8, "faiss")
    assert info["model"]["backbone"] == "DiscoVLA-Tiny" and info["skipped"] == []


@pytest.mark.parametrize("window", ["0", "-3"])
def test_a_window_under_a_second_is_a_usage_error(tmp_path, ann_index, capsys, window):
    from pipelines.index import main as index_cli

    argv = ["--videos", ann_index.roots[0], "--adapters", "none", "--out", str(tmp_path / "i"), "-q"]
    assert index_cli([*argv, "--window", window]) == 2
    err = capsys.readouterr().err
    assert f"error: window={window}" in err and "Traceback" not in err and not (tmp_path / "i").exists()
