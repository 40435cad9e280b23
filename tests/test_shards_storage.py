"""Caption shards on an S3-compatible server (moto, started on 127.0.0.1) and in other Parquet readers."""

import json
import logging
import socket

import pyarrow.fs as pafs
import pytest

from shared.frames import SamplerConfig
from shared.shards import CaptionSetError, completed_shards, load_caption_set, read_manifest, write_manifest
from shared.shards.example import example_provenance, example_rows, write_example_set
from shared.shards.merge import merge_caption_sets
from shared.shards.validate import validate_caption_set

IDS = [f"video{i}" for i in range(12)]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free local port with an empty bucket ``caps``; yields (endpoint, boto3 client)."""
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="caps")
    yield endpoint, client
    server.stop()


@pytest.fixture
def s3fs(s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")  # for URIs: pyarrow reads credentials from the environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    endpoint, client = s3
    fs = pafs.S3FileSystem(
        endpoint_override=endpoint, scheme="http", access_key="x", secret_key="x", region="us-east-1"
    )
    return fs, endpoint, client


def _keys(client, prefix):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket="caps", Prefix=prefix).get("Contents", []))


def test_write_and_load_through_a_uri_with_query_parameters(s3fs):
    fs, endpoint, client = s3fs
    uri = f"s3://caps/sets/uri?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    write_example_set(uri, IDS, num_shards=3, failed=["video5"])
    assert _keys(client, "sets/uri/") == [
        "sets/uri/_stats/test-00000-of-00003.json",
        "sets/uri/_stats/test-00001-of-00003.json",
        "sets/uri/_stats/test-00002-of-00003.json",
        "sets/uri/data/test-00000-of-00003.parquet",
        "sets/uri/data/test-00001-of-00003.parquet",
        "sets/uri/data/test-00002-of-00003.parquet",
        "sets/uri/manifest.json",
    ]
    assert not [k for k in _keys(client, "sets/uri/") if ".tmp" in k]  # no renames on object stores
    cs = load_caption_set(uri, expect_sampler=SamplerConfig(4).provenance(), num_frames=4)
    assert len(cs) == 11 and cs.failed == {"video5"}
    assert cs.captions["video7"][2].startswith("video7 frame 2:")
    # the same set through an explicit filesystem object, with and without the scheme
    assert load_caption_set("caps/sets/uri", filesystem=fs).captions == cs.captions
    assert read_manifest("s3://caps/sets/uri/manifest.json", filesystem=fs)["splits"]["test"]["videos"] == 12


def test_completion_protocol_on_s3(s3fs):
    fs, _, client = s3fs
    root = "caps/sets/resume"
    prov = example_provenance()
    from shared.shards import write_shard

    write_shard(root, "test", 0, 2, example_rows(IDS[:6]), prov, filesystem=fs)
    # a worker that died after its data file but before its stats file
    client.put_object(Bucket="caps", Key="sets/resume/data/test-00001-of-00002.parquet", Body=b"PAR1 partial")
    assert set(completed_shards(root, "test", filesystem=fs)) == {0}
    with pytest.raises(CaptionSetError, match="no manifest.json: the caption set is being written"):
        load_caption_set(root, filesystem=fs)
    # a data file overwritten after its stats file: the checksum catches it
    client.put_object(Bucket="caps", Key="sets/resume/data/test-00000-of-00002.parquet", Body=b"garbage")
    assert completed_shards(root, "test", filesystem=fs) == {}
    write_shard(root, "test", 0, 2, example_rows(IDS[:6]), prov, filesystem=fs)
    write_shard(root, "test", 1, 2, example_rows(IDS[6:]), prov, filesystem=fs)
    write_manifest(root, filesystem=fs)
    assert len(load_caption_set(root, filesystem=fs)) == 12


def test_validate_and_merge_on_s3(s3fs):
    fs, _, client = s3fs
    write_example_set("caps/sets/m1", IDS[:6], filesystem=fs, failed=["video1"])
    assert validate_caption_set("caps/sets/m1", filesystem=fs).ok
    before = _keys(client, "sets/m1/")
    manifest = merge_caption_sets(["caps/sets/m1"], "caps/sets/merged", num_shards=2, filesystem=fs)
    assert manifest["splits"]["test"]["videos"] == 6 and _keys(client, "sets/m1/") == before
    client.put_object(Bucket="caps", Key="sets/m1/data/test-00001-of-00002.parquet", Body=b"x" * 100)
    report = validate_caption_set("s3://caps/sets/m1", filesystem=fs)
    assert not report.ok and any("checksum mismatch" in f.message for f in report.findings)


def test_other_readers_load_the_shards_unchanged(tmp_path):
    write_example_set(tmp_path, IDS, num_shards=3, failed=["video4"])
    data = tmp_path / "data"
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(data)  # a directory: only Parquet files live there
    assert len(frame) == 48 and set(frame["status"]) == {"ok", "failed"}
    ds = pytest.importorskip("pyarrow.dataset")
    assert ds.dataset(data, format="parquet").count_rows() == 48
    duckdb = pytest.importorskip("duckdb")
    n_failed = duckdb.sql(f"select count(distinct video_id) from '{data}/*.parquet' where status = 'failed'")
    assert n_failed.fetchall() == [(1,)]
    pl = pytest.importorskip("polars")
    assert pl.read_parquet(data).filter(pl.col("frame_pos") == 3).height == 12
    datasets = pytest.importorskip("datasets")
    hf = datasets.load_dataset(
        "parquet", data_files=str(data / "*.parquet"), split="train", cache_dir=str(tmp_path / "hf_cache")
    )
    assert hf.num_rows == 48 and hf.features["frame_pos"].dtype == "int32"
    by_split = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / "hf_cache2"))
    assert list(by_split) == ["test"] and by_split["test"].num_rows == 48  # splits from the file names


def test_footer_survives_other_writers_and_manifest_is_the_fallback(tmp_path):
    """pandas round trips drop our footer key: the reader then names the file and says why."""
    pd = pytest.importorskip("pandas")
    write_example_set(tmp_path, IDS, num_shards=1)
    shard = tmp_path / "data" / "test-00000-of-00001.parquet"
    pd.read_parquet(shard).to_parquet(tmp_path / "rewritten.parquet")
    with pytest.raises(CaptionSetError, match="rewritten.parquet.*no 'discovla.captions' key"):
        load_caption_set(tmp_path / "rewritten.parquet")
    assert json.loads((tmp_path / "manifest.json").read_text())["provenance"]["sampler"]["num_frames"] == 4
