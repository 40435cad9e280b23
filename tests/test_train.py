"""End-to-end training on generated colour videos with the tiny CLIP: learning, resume, accumulation, DDP."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from shared.shards import load_caption_set
from tests.helpers import colour_captions, colour_videos, free_port, tiny_config
from training.recipe import TrainRecipe, cosine_with_warmup
from training.reporting import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def colour_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    items = colour_videos(root / "videos")
    captions = colour_captions(root / "captions", items, frames=4)
    return items, str(captions)


def _recipe(cfg, items, **kwargs):
    return TrainRecipe(cfg, train_items=items, eval_items=items, **kwargs).setup()


def _adapters(run_dir):
    return load_file(str(run_dir / "adapters" / "last" / "adapters.safetensors"))


def test_cosine_schedule_with_warmup():
    assert cosine_with_warmup(0, 10, 100) == 0.0  # the reference starts from lr 0
    assert cosine_with_warmup(5, 10, 100) == pytest.approx(0.5)
    assert cosine_with_warmup(10, 10, 100) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 10, 100) == pytest.approx(0.5)
    assert cosine_with_warmup(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_training_lowers_loss_and_raises_r1(colour_set, tmp_path):
    items, captions = colour_set
    recipe = _recipe(tiny_config(tmp_path / "run", captions=captions, epochs=14, eval_every=7), items)
    before = recipe.evaluate()
    final = recipe.train()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    losses = [r["total"] for r in records if "total" in r]
    assert len(losses) == 14 and all(k in records[0] for k in ("vid", "img", "kd", "lr", "grad_norm"))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    from training.reporting import t2v_r1

    assert t2v_r1(final) > t2v_r1(before)
    out = tmp_path / "run"
    for name in (
        "config.yaml",
        "run_info.json",
        "curves.png",
        "summary.json",
        "adapters/best/adapters.safetensors",
        "adapters/last/adapter_config.json",
        "checkpoint/trainer_state.json",
    ):
        assert (out / name).exists(), name
    assert json.loads((out / "adapters" / "last.json").read_text())["step"] == 14
    best = json.loads((out / "adapters" / "best.json").read_text())
    assert (
        best["step"] in (7, 14)
        and json.loads((out / "summary.json").read_text())["best"]["step"] == best["step"]
    )
    assert any((out / "tb").iterdir())


def test_interrupted_and_resumed_run_ends_with_the_same_adapters(colour_set, tmp_path):
    items, captions = colour_set
    kwargs = dict(
        captions=captions, batch_size=4, epochs=3, save_every=2, warmup_ratio=0.2
    )  # 6 steps, 2 epochs+
    _recipe(tiny_config(tmp_path / "full", **kwargs), items).train()
    crashed = _recipe(tiny_config(tmp_path / "cut", **kwargs), items)
    assert crashed.train(stop_after=5) is None  # "crash" after step 5: the checkpoint holds step 4
    resumed = _recipe(tiny_config(tmp_path / "cut", **kwargs), items, resume=True)
    assert (resumed.step, resumed.epoch, resumed.batch_in_epoch) == (4, 2, 0)
    resumed.train()
    full, cut = _adapters(tmp_path / "full"), _adapters(tmp_path / "cut")
    assert full.keys() == cut.keys()
    for name in full:
        torch.testing.assert_close(cut[name], full[name], rtol=0, atol=1e-6, msg=name)
    steps = [r["step"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl") if "total" in r]
    assert steps == [1, 2, 3, 4, 5, 6]  # the interrupted run's step 5 record was replaced, not duplicated
    full_losses = [r["total"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if "total" in r]
    cut_losses = [r["total"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl") if "total" in r]
    assert cut_losses == pytest.approx(full_losses, abs=1e-6)


def test_resume_refuses_a_different_schedule(colour_set, tmp_path):
    items, captions = colour_set
    _recipe(tiny_config(tmp_path / "r", captions=captions, epochs=1), items).train()
    with pytest.raises(ValueError, match="batch_size"):
        _recipe(tiny_config(tmp_path / "r", captions=captions, epochs=1, batch_size=4), items, resume=True)


def _first_step(recipe) -> tuple[dict, dict]:
    """Losses and parameter gradients of the first global batch (before clipping and AdamW)."""
    batch = next(iter(recipe._loader(0, 0)))
    losses = {k: float(v.detach()) for k, v in recipe._backward(batch).items()}
    grads = {n: p.grad.clone() for n, p in recipe.raw_model.named_parameters() if p.requires_grad}
    recipe.optimizer.zero_grad(set_to_none=True)
    return losses, grads


def _assert_same_step(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    for key in ("total", "vid", "img", "kd"):
        assert b[0][key] == pytest.approx(a[0][key], abs=1e-5), key
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(b[1][name], a[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_micro_batches_give_the_global_batch_gradient(colour_set, tmp_path):
    """Gradient caching: 4 chunks of 2 give the loss and gradient of one batch of 8."""
    items, captions = colour_set
    steps = [
        _first_step(
            _recipe(tiny_config(tmp_path / f"m{micro}", captions=captions, micro_batch_size=micro), items)
        )
        for micro in (None, 2)
    ]
    _assert_same_step(*steps)
    assert any(g.abs().max() > 0 for g in steps[0][1].values())


def test_loss_is_scaled_by_world_size_over_reference(colour_set, tmp_path):
    items, captions = colour_set
    ref1, ref4 = (
        _first_step(
            _recipe(tiny_config(tmp_path / f"r{r}", captions=captions, reference_world_size=r), items)
        )
        for r in (1, 4)
    )
    assert ref4[0]["total"] == pytest.approx(ref1[0]["total"])  # the reported loss is not scaled
    for name in ref1[1]:
        torch.testing.assert_close(ref4[1][name], ref1[1][name] / 4, rtol=1e-5, atol=1e-9)


def _ddp_worker(rank: int, world: int, port: int, cfg, items, out) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    recipe = TrainRecipe(cfg, train_items=items, eval_items=items, device="cpu").setup()
    assert recipe.world_size == world and recipe.rank == rank
    losses, grads = _first_step(recipe)  # DDP has averaged the gradients over the ranks
    save_file(grads, str(out / f"grads{rank}.safetensors"), metadata={k: str(v) for k, v in losses.items()})
    recipe.train()  # the whole loop (gather, DDP, barrier-guarded evaluation and checkpoint) runs too
    recipe.cleanup()  # a barrier: both ranks are done
    os._exit(
        0
    )  # skip gloo's teardown, which can abort a rank after its results are written (see test_distributed)


def test_ddp_two_processes_match_one_process_on_the_same_global_batch(colour_set, tmp_path):
    from safetensors import safe_open

    items, captions = colour_set
    common = dict(captions=captions, epochs=1, reference_world_size=4)  # global batch 8 = 2 ranks x 4
    one = _first_step(_recipe(tiny_config(tmp_path / "one", **common), items))
    cfg = tiny_config(tmp_path / "two", **common)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), cfg, items, tmp_path), nprocs=2, join=True)
    for rank in (0, 1):
        path = tmp_path / f"grads{rank}.safetensors"
        with safe_open(str(path), "pt") as f:
            losses = {k: float(v) for k, v in f.metadata().items()}
        _assert_same_step(one, (losses, load_file(str(path))))
    assert (tmp_path / "two" / "adapters" / "last" / "adapters.safetensors").is_file()
    assert [r["step"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl") if "total" in r] == [1]


def test_caption_set_is_checked_against_the_sampler(colour_set, tmp_path):
    items, captions = colour_set
    assert load_caption_set(captions).num_frames == 4
    with pytest.raises(Exception, match="num_frames|frames"):
        _recipe(tiny_config(tmp_path / "x", captions=captions, frames=6), items)
