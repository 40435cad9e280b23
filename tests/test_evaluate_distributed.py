"""Evaluation sharded across ranks gives exactly the one-process result: 2 gloo processes (mp.spawn) on the
library, and ``torchrun`` on ``python -m pipelines.train`` / ``python -m pipelines.evaluate``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.helpers import colour_folder, colour_videos, free_port, randomize_trainables
from training.distributed import shard_range

FRAMES, WORDS = 4, 16
ROOT = Path(__file__).resolve().parents[1]


def test_shard_range_covers_everything_once_in_rank_order():
    for n in (0, 1, 5, 7, 8):
        for world in (1, 2, 3):
            shares = [shard_range(n, r, world) for r in range(world)]
            assert [i for s in shares for i in s] == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def _items(root: Path):
    """7 distinct videos (uneven over 2 ranks) and 9 texts: two videos carry a second sentence."""
    items = colour_videos(root, n=7)
    extra = [
        dataclasses.replace(items[i], text=f"another {items[i].text}", item_id=f"{items[i].video_id}_1")
        for i in (1, 4)
    ]
    return items[:3] + extra[:1] + items[3:6] + extra[1:] + items[6:]


def _model_and_data(items):
    from training.augment import VideoTransform
    from training.data import RetrievalDataset, clip_tokenizer
    from training.model import DiscoVLAConfig, build_model

    torch.manual_seed(0)
    model = build_model(
        DiscoVLAConfig(backbone="DiscoVLA-Tiny", pretrained=None, num_frames=FRAMES, max_words=WORDS)
    )
    randomize_trainables(model)  # non-zero adapters, so that they matter
    data = RetrievalDataset(
        items,
        num_frames=FRAMES,
        transform=VideoTransform.from_model(model.preprocess_cfg),
        tokenizer=clip_tokenizer("DiscoVLA-Tiny", WORDS),
        on_decode_error="blank",
        normalize=False,
    )
    return model, data


def _rank(rank: int, world: int, port: int, items, out: str) -> None:
    import torch.distributed as dist

    from training.evaluate import evaluate

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, data = _model_and_data(items)
    metrics = evaluate(
        model, data, batch_size=2, num_workers=1, progress=False, dsl=True, cache_dir=Path(out) / "cache"
    )
    again = evaluate(
        model, data, batch_size=2, num_workers=1, progress=False, dsl=True, cache_dir=Path(out) / "cache"
    )  # rank 0 reads the cache, the others wait for it
    Path(f"{out}/metrics{rank}.json").write_text(json.dumps([metrics, again], sort_keys=True))
    dist.barrier()
    os._exit(0)  # skip gloo's teardown (see test_distributed)


@pytest.mark.slow
def test_two_ranks_evaluate_exactly_as_one_process(tmp_path):
    from training.evaluate import evaluate, extract_features

    items = _items(tmp_path / "videos")
    mp.spawn(_rank, args=(2, free_port(), items, str(tmp_path)), nprocs=2, join=True)
    model, data = _model_and_data(items)
    single = extract_features(model, data, batch_size=2, progress=False)
    expected = evaluate(model, data, batch_size=2, progress=False, dsl=True)
    assert (expected["num_texts"], expected["num_videos"]) == (9, 7)
    (cache,) = (tmp_path / "cache").glob("features-*.safetensors")  # the gathered features, written by rank 0
    feats = load_file(str(cache))
    torch.testing.assert_close(feats["text_feats"], single["text_feats"], rtol=0, atol=1e-6)
    torch.testing.assert_close(feats["video_feats"], single["video_feats"], rtol=0, atol=1e-6)
    for rank in (0, 1):  # every rank returns the same metrics, computed and cached by rank 0
        metrics, cached = json.loads((tmp_path / f"metrics{rank}.json").read_text())
        assert metrics == expected and cached == expected


# ---------------------------------------------------------------------- torchrun, end to end
def _torchrun(module: str, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _single_process_metrics(run_dir: Path, which: str) -> dict:
    """The run's eval split through one process, with the adapters ``which`` (last/best) of the run."""
    from training.adapters import load_adapters
    from training.config import resolve_config
    from training.data import build_dataset
    from training.evaluate import evaluate
    from training.model import build_model

    cfg = resolve_config(run_dir / "config.yaml")
    torch.manual_seed(cfg.seed)  # the frozen random weights the recipe built
    model = build_model(cfg.model_config())
    load_adapters(model, run_dir / "adapters" / which)
    data = build_dataset(cfg, model.preprocess_cfg, train=False)
    return evaluate(model, data, batch_size=cfg.eval_batch_size, progress=False)


@pytest.mark.slow
def test_torchrun_training_evaluates_every_few_steps_like_one_process(tmp_path):
    root, captions = colour_folder(tmp_path / "data", FRAMES)
    out = tmp_path / "run"
    sets = [
        f"annotations={root}",
        f"captions={captions}",
        f"output_dir={out}",
        "batch_size=4",
        "max_steps=4",
        "eval_every=2",
        "eval_batch_size=3",
        "num_workers=1",
        "lr=3e-3",
        "seed=0",
    ]
    _torchrun(
        "pipelines.train",
        "--preset",
        "demo",
        "--pretrained",
        "none",
        "-q",
        *[a for s in sets for a in ("--set", s)],
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval" in r]
    assert [r["step"] for r in evaluations] == [2, 4]
    assert json.loads((out / "run_info.json").read_text())["world_size"] == 2
    final = json.loads((out / "summary.json").read_text())["final"]
    last = evaluations[-1][
        "eval"
    ]  # the final evaluation: it adds the teacher report (the set covers the split)
    teacher = final.pop("teacher")
    assert teacher == last.pop("teacher") and teacher["num_videos"] == 8
    assert final == last == _single_process_metrics(out, "last")
    best = json.loads((out / "adapters" / "best.json").read_text())
    assert best["metrics"] == _single_process_metrics(out, "best")

    # python -m pipelines.evaluate under torchrun: the same adapters, the same numbers as one process
    args = [
        "--dataset",
        "folder",
        "--annotations",
        str(root),
        "--adapters",
        str(out / "adapters" / "last"),
        "--pretrained",
        "none",
        "--words",
        "16",
        "--batch-size",
        "3",
        "--num-workers",
        "1",
        "-q",
        "--cache-dir",
        "none",
        "--out",
        str(tmp_path / "eval"),
    ]
    _torchrun("pipelines.evaluate", *args)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written.pop("setup")["adapters"] == str(out / "adapters" / "last")
    assert written == final  # pretrained none: the frozen weights of seed 0, as the run's (seed=0)
