"""Bad input: each case gets a clear error naming the file, and nothing is written
outside an output directory."""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.shards import main as cli
from shared.shards import FOOTER_KEY, CaptionSetError, load_caption_set, write_manifest
from shared.shards.example import example_provenance, example_rows, write_example_set
from shared.shards.interop import import_json
from shared.shards.merge import merge_caption_sets

IDS = [f"video{i}" for i in range(6)]
SHARD = "data/test-00000-of-00002.parquet"


def _footer(version=1):
    return {"format": "discovla.captions", "schema_version": version, "provenance": example_provenance()}


def _parquet_bytes(table: pa.Table, footer: dict | None) -> bytes:
    if footer is not None:
        table = table.replace_schema_metadata({FOOTER_KEY: json.dumps(footer).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _replace_shard(root, payload: bytes) -> str:
    """Put ``payload`` in place of shard 0 with a consistent stats file and manifest (a set that was
    written bad, not damaged later); returns the shard's path."""
    (root / SHARD).write_bytes(payload)
    stats_path = root / "_stats" / "test-00000-of-00002.json"
    stats = json.loads(stats_path.read_text())
    stats.update(sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload))
    try:  # counts of what the file holds, so that only the problem under test is wrong
        table = pq.read_table(pa.BufferReader(payload))
        rows = table.to_pylist()
        failed = [r for r in rows if r.get("status") != "ok"]
        stats.update(
            rows=len(rows),
            videos=len({r.get("video_id") for r in rows}),
            failed_rows=len(failed),
            failed_videos=len({r.get("video_id") for r in failed}),
        )
    except (pa.ArrowException, OSError, KeyError):
        pass
    stats_path.write_text(json.dumps(stats))
    write_manifest(root, verify=False)
    return str(root / SHARD)


def _assert_rejected(root, capsys, *patterns):
    """load_caption_set and `validate` both fail, naming the shard file and each pattern."""
    with pytest.raises(CaptionSetError) as err:
        load_caption_set(root)
    assert SHARD in str(err.value), str(err.value)
    for pattern in patterns:
        assert pattern in str(err.value), str(err.value)
    assert cli(["validate", str(root)]) == 1
    stderr = capsys.readouterr().err
    assert SHARD in stderr and all(p in stderr for p in patterns), stderr


@pytest.fixture
def root(tmp_path):
    write_example_set(tmp_path / "set", IDS, num_shards=2)
    return tmp_path / "set"


def test_malformed_parquet(root, capsys):
    _replace_shard(root, b"this is not parquet at all" * 10)
    _assert_rejected(root, capsys, "not a readable Parquet file")


def test_truncated_file(root, capsys):
    data = (root / SHARD).read_bytes()
    (root / SHARD).write_bytes(data[: len(data) // 2])  # truncated after the manifest was written
    _assert_rejected(root, capsys, "checksum mismatch")
    with pytest.raises(CaptionSetError, match="test-00000-of-00002.parquet: not a readable Parquet file"):
        load_caption_set(root / SHARD)  # a single file, no manifest to compare with


def test_wrong_schema_version(root, capsys):
    _replace_shard(root, _parquet_bytes(example_rows(IDS[::2]), _footer(version=2)))
    _assert_rejected(root, capsys, "unknown schema version 2")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["schema_version"] = 7
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CaptionSetError, match="manifest.json: unknown schema version 7"):
        load_caption_set(root)


def test_foreign_parquet_without_our_footer(root, capsys):
    _replace_shard(root, _parquet_bytes(example_rows(IDS[::2]), None))
    _assert_rejected(root, capsys, "no 'discovla.captions' key")


def test_wrong_column_types(root, capsys):
    table = example_rows(IDS[::2])
    table = table.set_column(3, "frame_pos", table["frame_pos"].cast(pa.string()))
    _replace_shard(root, _parquet_bytes(table, _footer()))
    _assert_rejected(root, capsys, "column 'frame_pos' has type string, expected int32")


def test_missing_column(root, capsys):
    _replace_shard(root, _parquet_bytes(example_rows(IDS[::2]).drop_columns(["status"]), _footer()))
    _assert_rejected(root, capsys, "missing columns ['status']")


def test_nan_timestamps(root, capsys):
    table = example_rows(IDS[::2])
    ts = table["timestamp_s"].to_numpy().copy()
    ts[5] = np.nan
    _replace_shard(root, _parquet_bytes(table.set_column(5, "timestamp_s", pa.array(ts)), _footer()))
    _assert_rejected(root, capsys, "timestamp_s is NaN", "('video2', 1)")


def test_gigantic_strings(root, capsys):
    table = example_rows(IDS[::2])
    captions = table["caption"].to_pylist()
    captions[0] = "a" * 1_000_000
    _replace_shard(root, _parquet_bytes(table.set_column(6, "caption", pa.array(captions)), _footer()))
    _assert_rejected(root, capsys, "1,000,000 characters")


@pytest.mark.parametrize(
    "bad_id", ["../../etc/passwd", "/abs/video", "C:\\videos\\x", "a/../../b", "", "v\x00"]
)
def test_video_ids_that_look_like_paths(root, capsys, bad_id):
    table = example_rows([bad_id, "video0", "video2"])
    _replace_shard(root, _parquet_bytes(table, _footer()))
    _assert_rejected(root, capsys, "video ids that look like paths")


def test_duplicate_rows_within_a_file(root, capsys):
    table = example_rows(IDS[::2])
    _replace_shard(root, _parquet_bytes(pa.concat_tables([table, table.slice(0, 1)]), _footer()))
    _assert_rejected(root, capsys, "duplicate (video_id, frame_pos)", "video0")


def test_import_never_writes_outside_its_output(tmp_path):
    source = tmp_path / "authors.json"
    source.write_text(json.dumps({"../../escape_a man talks": ["c0", "c1"], "video1_a dog": ["d0", "d1"]}))
    with pytest.raises(CaptionSetError, match="look like paths"):
        import_json(source, tmp_path / "out", dataset="msrvtt", split="test")
    outside = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert outside == ["authors.json"]  # no shard, stats or manifest anywhere


def test_failed_merge_leaves_inputs_untouched(tmp_path, capsys):
    write_example_set(tmp_path / "a", IDS)
    write_example_set(tmp_path / "b", IDS, provenance=example_provenance(prompt_text="Other prompt."))
    write_example_set(tmp_path / "c", IDS)
    (tmp_path / "c" / SHARD).write_bytes(b"corrupt")

    def snapshot():
        return {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    before = snapshot()
    for inputs, message in [(["a", "b"], "prompt_sha256"), (["a", "c"], "checksum mismatch")]:
        with pytest.raises(CaptionSetError, match=message):
            merge_caption_sets([tmp_path / i for i in inputs], tmp_path / "out")
        assert snapshot() == before and not (tmp_path / "out").exists()
    assert cli(["merge", str(tmp_path / "a"), str(tmp_path / "a"), str(tmp_path / "c")]) == 1  # out = input
    assert "choose a new directory" in capsys.readouterr().err
    assert cli(["merge", str(tmp_path / "b"), str(tmp_path / "a")]) == 1  # out holds another set
    assert "output already holds manifest.json" in capsys.readouterr().err
    assert snapshot() == before
