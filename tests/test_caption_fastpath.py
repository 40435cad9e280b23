"""`python -m pipelines.caption` refuses, or says "nothing to do", before Ray starts or a model loads.

The dataset is the DiDeMo excerpt in tests/data/didemo/shards_excerpt (real test annotations, 10 videos);
videos are generated for 8 of them, 2 are missing. A finished run is made by writing what a run leaves
(every shard with the provenance of these settings, and the manifest), so these tests need no engine; the
slow test at the end makes it with a real run (Ray, a tiny random LLaVA-NeXT) instead. The real CLI runs
in subprocesses under ``python -X importtime``, whose list of imported modules shows that neither Ray
nor torch was imported. Wall time is measured by ``python -m benchmarks.caption --fast-path``, not here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from captioning.plan import RunRefusedError, prepare_run
from pipelines.caption import build_parser, prepare
from shared.shards import (
    completed_shards,
    failed_rows,
    make_provenance,
    make_rows,
    read_manifest,
    write_shard,
)
from shared.synthetic import make_test_video

REPO = Path(__file__).resolve().parents[1]
ANNOTATIONS = Path(__file__).parent / "data/didemo/shards_excerpt"
IDS = list(dict.fromkeys(e["video"] for e in json.loads((ANNOTATIONS / "test_data.json").read_text())))
MISSING = IDS[3:5]  # no file under the video root
F = 4


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("didemo_videos")
    for seed, video_id in enumerate(IDS):
        if video_id not in MISSING:  # DiDeMo files are found by name whatever the extension on disk
            make_test_video(root / f"{Path(video_id).stem}.mp4", 2.0, 5.0, size=(64, 48), seed=seed)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model directory as resolve_model sees it (never loaded on these paths)."""
    root = tmp_path_factory.mktemp("model")
    (root / "config.json").write_text(json.dumps({"model_type": "llava_next"}))
    return root


def _argv(videos: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        "didemo",
        "--split",
        "test",
        "--annotations",
        str(ANNOTATIONS),
        "--video-root",
        str(videos),
        "--out",
        str(out),
        "--model",
        str(model),
        "--backend",
        "transformers",
        "--frames",
        str(F),
        "--image-size",
        "64",
        "--shard-size",
        "3",
        "--gpus",
        "0",
        "--no-progress",
        *extra,
    ]


def _finish(argv: list[str], failed: tuple[str, ...] = ()) -> None:
    """Write what a finished run of ``argv`` leaves: missing videos and ``failed`` get failed rows."""
    items, cfg, video_source, plan = prepare(build_parser().parse_args(argv))
    known = {k: v for k, v in plan.provenance.items() if k not in ("schema_version", "prompt_sha256")}
    provenance = make_provenance(
        engine="transformers", dtype="float32", chat_template_sha256="0" * 64, **known
    )
    for work in plan.work:
        rows = []
        for video in work.todo:
            if not video.exists:
                rows += failed_rows(
                    "didemo", "test", video.video_id, F, f"decode: file not found: {video.path}"
                )
            elif video.video_id in failed:
                rows += failed_rows(
                    "didemo", "test", video.video_id, F, "caption: RuntimeError: engine failure"
                )
            else:
                rows += make_rows(
                    "didemo",
                    "test",
                    video.video_id,
                    [0, 2, 4, 6],
                    [0.0, 0.4, 0.8, 1.2],
                    [f"{video.video_id} frame {i}" for i in range(F)],
                )
        write_shard(cfg.out, "test", work.index, work.num_shards, rows, provenance)
    from shared.shards import write_manifest

    write_manifest(cfg.out)


def _cli(argv: list[str]) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter, with the list of every module it imported."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipelines.caption", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _imported(done: subprocess.CompletedProcess) -> set[str]:
    return {
        m.group(1).strip() for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", done.stderr, re.M)
    }


def _assert_no_engine_imports(done: subprocess.CompletedProcess) -> None:
    modules = _imported(done)
    assert "pipelines.caption" in modules or "captioning.plan" in modules  # the list is complete
    for heavy in ("ray", "torch", "transformers", "vllm"):
        assert heavy not in modules, f"{heavy} was imported"


def test_a_finished_run_says_nothing_to_do_without_ray(tmp_path, videos, model_dir):
    out = tmp_path / "out"
    argv = _argv(videos, model_dir, out)
    _finish(argv)
    before = {i: s.sha256 for i, s in completed_shards(out, "test").items()}
    (out / "manifest.json").unlink()  # a run that crashed after its last shard: the manifest is written now
    done = _cli(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing to do: 4 of 4 shards of split 'test' (10 videos) are done" in done.stdout, done.stdout
    _assert_no_engine_imports(done)
    assert read_manifest(out)["splits"]["test"]["complete"]
    assert {i: s.sha256 for i, s in completed_shards(out, "test").items()} == before


def test_clashing_settings_are_refused_without_ray(tmp_path, videos, model_dir):
    out = tmp_path / "out"
    _finish(_argv(videos, model_dir, out))
    done = _cli(_argv(videos, model_dir, out, "--prompt", "What is happening here?"))
    assert done.returncode == 1
    assert "error:" in done.stderr and "holds captions made with other settings" in done.stderr
    assert (
        "prompt_text: existing 'Describe this image in one short sentence.', this run 'What is happening"
        in done.stderr
    ), done.stderr[-2000:]
    _assert_no_engine_imports(done)
    done = _cli(_argv(videos, model_dir, out, "--image-size", "96", "--max-tokens", "20"))
    assert done.returncode == 1 and "image_resolution" in done.stderr and "sampling" in done.stderr
    assert "prompt_sha256" not in done.stderr
    _assert_no_engine_imports(done)


def test_every_setting_that_changes_captions_is_compared_before_an_engine(tmp_path, videos, model_dir):
    out = tmp_path / "out"
    argv = _argv(videos, model_dir, out)
    _finish(argv)
    other_model = tmp_path / "other-model"
    other_model.mkdir()
    (other_model / "config.json").write_text(json.dumps({"model_type": "llava_next", "other": 1}))
    cases = {
        "model": _argv(videos, other_model, out),
        "sampler": _argv(videos, model_dir, out, "--frames", "6"),
        "dtype": [*argv, "--dtype", "bfloat16"],
        "sampling": [*argv, "--temperature", "0.7"],
    }
    for key, changed in cases.items():
        with pytest.raises(RunRefusedError, match=key):
            prepare(build_parser().parse_args(changed))
    _, cfg, _, plan = prepare(build_parser().parse_args([*argv, "--engines", "2", "--videos-per-call", "3"]))
    assert plan.nothing_to_do  # execution settings are free to change


def test_missing_videos_are_counted_with_the_paths_looked_for(tmp_path, videos, model_dir):
    out = tmp_path / "out"
    items, cfg, video_source, plan = prepare(build_parser().parse_args(_argv(videos, model_dir, out)))
    assert [v.video_id for v in plan.missing] == sorted(MISSING)
    text = plan.format()
    assert "to caption: 10 of 10 videos in 4 of 4 shards" in text
    assert f"2 of these 10 videos are missing from the video root {videos}" in text
    for video in plan.missing[:2]:
        assert f"{video.video_id} -> {video.path}" in text and str(video.path).startswith(str(videos))


def test_retry_failed_counts_failed_videos_that_now_have_a_file(tmp_path, videos, model_dir):
    out = tmp_path / "out"
    argv = _argv(videos, model_dir, out)
    engine_failed = IDS[0]
    _finish(argv, failed=(engine_failed,))  # 3 failed videos: 2 missing files, 1 engine failure
    items, cfg, _, _ = prepare(build_parser().parse_args(argv))
    plan = prepare_run(
        items,
        replace(cfg, retry_failed=True),
        dataset="didemo",
        split="test",
        video_source={"video_root": str(videos), "window_rule": "0-31s"},
    )
    assert [v.video_id for v in plan.todo] == [engine_failed]
    assert sorted(plan.still_missing) == sorted(MISSING)
    assert (
        "--retry-failed: 1 failed videos now have a file and are retried; 2 still have no file"
        in plan.format()
    )
    retry = plan.work[0]
    assert retry.is_retry and engine_failed not in retry.kept_rows["video_id"].to_pylist()
    done = _cli([*argv, "--retry-failed", "--prompt", "frame-caption-action-v1"])  # still refused first
    assert done.returncode == 1 and "prompt" in done.stderr
    _assert_no_engine_imports(done)


def test_decode_error_rows_name_the_path_looked_for(tmp_path):
    from captioning.workers import DecodeOptions, decode_video

    path = tmp_path / "videos" / "gone.mp4"
    decoded = decode_video("gone", str(path), None, DecodeOptions(F, None, 10.0))
    assert decoded.error == f"decode: file not found: {path}"


@pytest.mark.slow
def test_after_a_real_run_a_rerun_says_nothing_to_do_without_ray(tmp_path, videos):
    """One real run (Ray, the tiny LLaVA-NeXT, transformers on CPU), then the same command again."""
    from captioning.tiny_model import save_tiny_llava_next

    model = save_tiny_llava_next(tmp_path / "tiny-llava")
    argv = _argv(videos, model, tmp_path / "out", "--max-tokens", "4", "--num-cpus", "2", "--engines", "1")
    first = _cli(argv)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 of these 10 videos are missing from the video root" in first.stdout
    again = _cli(argv)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr[-2000:]
    _assert_no_engine_imports(again)
    refused = _cli([*argv[:-6], "--frames", "6", *argv[-6:]])
    assert refused.returncode == 1 and "sampler" in refused.stderr
    _assert_no_engine_imports(refused)
