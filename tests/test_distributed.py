"""training.distributed: helpers without a process group, and the gather's gradient semantics on 2 gloo ranks.

The two-process test checks what the trainer relies on: every rank's loss on the gathered batch equals the
single-process loss on the same global batch, the per-rank gradients (each rank back-propagating its own
slice) sum to the single-process gradient, and under DDP with the loss scaled by
``reference_loss_scale(W, W_ref)`` every rank ends with the full-batch gradient / W_ref.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tests.helpers import free_port
from training.distributed import (
    gather_dict,
    gather_features,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    reference_loss_scale,
)
from training.losses import discovla_loss

D_IN, D, FRAMES, LAMBDA, W_REF = 6, 8, 3, 100.0, 4


class ToyEncoders(torch.nn.Module):
    """Linear text / frame / pseudo-caption encoders with normalised outputs, as training.model returns."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.text = torch.nn.Parameter(torch.randn(D, D_IN, generator=g, dtype=torch.float64))
        self.frame = torch.nn.Parameter(torch.randn(D, D_IN, generator=g, dtype=torch.float64))
        self.caption = torch.nn.Parameter(torch.randn(D, D_IN, generator=g, dtype=torch.float64))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames = F.normalize(batch["frames"] @ self.frame.t(), dim=-1)  # [b, F, D]
        return {
            "text": F.normalize(batch["text"] @ self.text.t(), dim=-1),  # [b, D]
            "video": F.normalize(frames.mean(1), dim=-1),  # [b, D]
            "frames": frames,
            "pseudo": F.normalize(batch["captions"] @ self.caption.t(), dim=-1),
        }  # [b, F, D]


def _global_batch(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "text": torch.randn(n, D_IN, generator=g, dtype=torch.float64),
        "frames": torch.randn(n, FRAMES, D_IN, generator=g, dtype=torch.float64),
        "captions": torch.randn(n, FRAMES, D_IN, generator=g, dtype=torch.float64),
    }


def _loss(model, batch, gather: bool) -> torch.Tensor:
    feats = model(batch)
    if gather:
        feats = gather_dict(feats)
    return discovla_loss(feats["text"], feats["video"], feats["frames"], feats["pseudo"], LAMBDA)["total"]


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def _worker(rank: int, world: int, port: int, out: str, sizes: list[int]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        full = _global_batch(sum(sizes))
        start = sum(sizes[:rank])
        local = {k: v[start : start + sizes[rank]] for k, v in full.items()}
        model = ToyEncoders()
        loss = _loss(model, local, gather=True)  # plain backward: this rank's slice only
        loss.backward()
        raw = _grads(model)
        ddp_model = ToyEncoders()
        ddp = torch.nn.parallel.DistributedDataParallel(ddp_model)
        (_loss(ddp, local, gather=True) * reference_loss_scale(world, W_REF)).backward()  # DDP averages
        tensors = {f"raw.{k}": v for k, v in raw.items()} | {
            f"ddp.{k}": v for k, v in _grads(ddp_model).items()
        }
        tensors["loss"] = loss.detach().reshape(1)
        save_file(tensors, str(Path(out) / f"rank{rank}.safetensors"))
        info = {
            "rank": get_rank(),
            "world": get_world_size(),
            "main": is_main_process(),
            "dist": is_distributed(),
        }
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(info))
        dist.barrier()  # both ranks have written their results
    except BaseException:
        dist.destroy_process_group()
        raise
    # Skip gloo's teardown: destroying the group while the peer's gloo threads still run sometimes aborts
    # the process ("terminate called without an active exception", SIGABRT) after the results are written.
    os._exit(0)


def test_helpers_without_process_group():
    assert not is_distributed() and get_rank() == 0 and get_world_size() == 1 and is_main_process()
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_features(x) is x
    assert gather_dict({"a": x, "b": None}) == {"a": x, "b": None}


def test_reference_loss_scale_rule():
    assert reference_loss_scale(1, 4) == 0.25  # one GPU reproducing the 4-GPU reference
    assert reference_loss_scale(4, 4) == 1.0
    assert reference_loss_scale(8, 4) == 2.0
    assert reference_loss_scale() == 1 / 4  # current world size (1 here) against the default W_ref = 4
    with pytest.raises(ValueError, match="world_size=0"):
        reference_loss_scale(0)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("sizes", [[3, 3], [4, 2]], ids=["even", "uneven"])
def test_two_gloo_ranks_match_one_process(tmp_path, sizes):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), sizes), nprocs=2, join=True)
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [i["rank"] for i in infos] == [0, 1] and all(i["world"] == 2 and i["dist"] for i in infos)
    assert [i["main"] for i in infos] == [True, False]

    model = ToyEncoders()
    single = _loss(model, _global_batch(sum(sizes)), gather=False)
    single.backward()
    expected = _grads(model)
    for r in ranks:  # the same global-batch loss on every rank
        assert float(r["loss"]) == pytest.approx(float(single.detach()), rel=1e-12)
    for name, grad in expected.items():
        per_rank = [r[f"raw.{name}"] for r in ranks]
        assert all(g.abs().sum() > 0 for g in per_rank)  # each rank contributes its own slice
        assert not torch.allclose(per_rank[0], grad)  # ... and only its slice, not the whole gradient
        torch.testing.assert_close(per_rank[0] + per_rank[1], grad, rtol=1e-10, atol=1e-12)
        for r in ranks:  # DDP average of the W/W_ref-scaled loss = full-batch gradient / W_ref
            torch.testing.assert_close(r[f"ddp.{name}"], grad / W_REF, rtol=1e-10, atol=1e-12)
