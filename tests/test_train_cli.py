"""``python -m pipelines.train`` end to end on a folder of generated videos (tiny CLIP, two steps)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipelines.train import main as train_main
from tests.helpers import colour_captions, colour_videos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    items = colour_videos(root, n=4)
    for split in ("train", "test"):
        rows = [{"video_id": f"{i.video_id}.mp4", "text": i.text} for i in items]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the folder adapter keys videos by their file name: caption that id
    named = [dataclasses.replace(i, video_id=f"{i.video_id}.mp4") for i in items]
    captions = colour_captions(root / "captions", named, frames=4)
    return root, captions


def _args(root, captions, out, *extra):
    sets = [
        f"annotations={root}",
        f"captions={captions}",
        f"output_dir={out}",
        "batch_size=4",
        "max_steps=2",
        "eval_batch_size=4",
        "randaugment=rand-m7-n4-mstd0.5-inc1",
        *extra,
    ]
    return ["--preset", "demo", "--pretrained", "none", *[a for s in sets for a in ("--set", s)]]


def test_cli_trains_evaluates_and_resumes(folder_set, tmp_path, capsys):
    root, captions = folder_set
    out = tmp_path / "run"
    assert train_main(_args(root, captions, out)) == 0
    printed = capsys.readouterr().out
    assert "R@1" in printed  # the recall table
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "total" in r] == [1, 2] and "eval" in records[-1]
    assert (out / "adapters" / "last" / "adapters.safetensors").is_file() and (out / "curves.png").is_file()
    assert "max_steps: 2" in (out / "config.yaml").read_text()
    # --resume at the end has nothing left to do but evaluate and save again
    assert train_main(_args(root, captions, out) + ["--resume"]) == 0
    assert json.loads((out / "run_info.json").read_text())["resumed_from_step"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "frames=6"], "captions have 4 frames per video, the trainer samples 6"),  # other sampler
        (["--set", "captions=null"], "need pseudo captions: pass --set captions=DIR"),
        (["--set", "captions=/nonexistent/captions"], "/nonexistent/captions"),
        (["--pretrained", "/nonexistent/ViT.pt"], "/nonexistent/ViT.pt"),
        (
            ["--launcher", "ray", "--ray-address", "127.0.0.1:1"],
            "cannot join the Ray cluster at '127.0.0.1:1'",
        ),
    ],
    ids=["caption-sampler", "no-captions", "missing-captions", "missing-weights", "unreachable-ray"],
)
def test_cli_explains_expected_failures_without_a_traceback(folder_set, tmp_path, capsys, extra, message):
    root, captions = folder_set
    args = _args(root, captions, tmp_path / "x")
    clash = extra == ["--set", "captions=null"]  # settings that clash: a usage error (pipelines.cli)
    assert train_main(args + extra) == (2 if clash else 1)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in err


def test_ray_launcher_runs_the_same_loop(folder_set, tmp_path):
    import ray

    root, captions = folder_set
    out = tmp_path / "ray_run"
    try:
        assert train_main(_args(root, captions, out, "num_workers=0") + ["--launcher", "ray"]) == 0
    finally:
        ray.shutdown()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[:2] == [1, 2] and (out / "adapters" / "last" / "adapters.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["final"] is not None
