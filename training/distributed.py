"""Distributed helpers: rank/world size without a process group, an autograd all-gather, the loss scale.

Gradient semantics (the reference's ``AllGather``, CLIP4Clip lineage): every rank gathers the features of
all ranks, computes the *same* global-batch loss L, and back-propagates only through its own slice

    forward:   X = cat(x_0, ..., x_{W-1})         [B, ...] = [Σ_r b_r, ...]
    backward:  ∂L/∂x_r = (∂L/∂X)[offset_r : offset_r + b_r]      (no all-reduce of ∂L/∂X)

so rank r's parameter gradient is g_r = ∂L/∂θ through x_r only, and Σ_r g_r = ∂L/∂θ (the full-batch
gradient). DistributedDataParallel then *averages* the g_r: the update uses ∂L/∂θ / W.

Loss scale (docs/method.md "Total loss and optimisation"): the reference ran W_ref = 4 GPUs, so its effective gradient is the full-batch
gradient / 4. To reproduce it with W ranks (same global batch), multiply the loss by
:func:`reference_loss_scale` = W / W_ref before ``backward`` and before clipping: one GPU -> 1/4, four GPUs
-> 1, eight GPUs -> 2. Pass ``reference_world_size=W`` (scale 1) to get plain "full-batch gradient / W".
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = [
    "init_distributed",
    "barrier",
    "shard_range",
    "gather_objects",
    "broadcast_object",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "gather_features",
    "gather_dict",
    "reference_loss_scale",
]


def init_distributed(device: str | torch.device | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group named by the environment if there is one.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the group is created with NCCL on GPUs and gloo on CPUs; under
    Ray Train it already exists. ``device`` defaults to ``cuda:<LOCAL_RANK>`` when CUDA is available,
    else the CPU.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return get_rank(), get_world_size(), torch.device(device)


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if get_world_size() > 1:
        dist.barrier()


def shard_range(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """This rank's contiguous share of ``range(n)``: the ranks' shares in rank order are ``range(n)``.

    The first ``n % W`` ranks take one element more, so shares differ by at most one (and may be empty).
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def gather_objects(obj):
    """Every rank's picklable ``obj`` as a list in rank order (``[obj]`` without a process group).

    For small bookkeeping values between this job's own ranks (names of failed videos), never for data
    that comes from files.
    """
    if get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank (unchanged without a process group)."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def is_distributed() -> bool:
    """True when torch.distributed is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of ranks, 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def reference_loss_scale(world_size: int | None = None, reference_world_size: int = 4) -> float:
    """W / W_ref: the factor on the loss that gives the reference's effective gradient (module docstring).

    ``world_size`` defaults to the current one. Under DDP's averaging the update is then
    (W / W_ref) · ∂L/∂θ / W = ∂L/∂θ / W_ref, whatever W is.
    """
    world_size = get_world_size() if world_size is None else world_size
    if world_size < 1 or reference_world_size < 1:
        raise ValueError(
            f"world sizes must be >= 1, got world_size={world_size}, "
            f"reference_world_size={reference_world_size}"
        )
    return world_size / reference_world_size


def _all_sizes(local: int, device: torch.device) -> list[int]:
    """First-dimension sizes of every rank (one tiny all_gather; ranks may hold uneven batches)."""
    size = torch.tensor([local], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


class _AllGather(torch.autograd.Function):
    """cat of all ranks' tensors; backward returns the gradient of this rank's slice only."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        biggest = max(sizes)
        padded = tensor.new_zeros((biggest, *tensor.shape[1:]))  # [b_max, ...] all_gather needs equal shapes
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        parts[rank] = tensor  # this rank's own values, bit-identical
        ctx.offset, ctx.size = sum(sizes[:rank]), sizes[rank]
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])  # [Σ b_r, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad[ctx.offset : ctx.offset + ctx.size], None, None  # ∂L/∂x_rank


def gather_features(tensor: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """All ranks' ``tensor`` [b_r, ...] concatenated in rank order -> [Σ b_r, ...], gradient to the local slice.

    Without a process group (or with one rank) the tensor is returned unchanged. ``sizes`` (every rank's
    first dimension) may be given to skip the size exchange.
    """
    if get_world_size() == 1:
        return tensor
    if sizes is None:
        sizes = _all_sizes(tensor.shape[0], tensor.device)
    if sizes[get_rank()] != tensor.shape[0]:
        raise ValueError(
            f"sizes={sizes} says rank {get_rank()} holds {sizes[get_rank()]} rows, the tensor has "
            f"{tensor.shape[0]}"
        )
    return _AllGather.apply(tensor, list(sizes), get_rank())


def gather_dict(features: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """:func:`gather_features` on every value (``None`` stays ``None``); one size exchange for all.

    All tensors must share the first (batch) dimension, as the encoders' outputs for one batch do.
    """
    present = {k: v for k, v in features.items() if v is not None}
    if get_world_size() == 1 or not present:
        return dict(features)
    batch = {k: v.shape[0] for k, v in present.items()}
    if len(set(batch.values())) != 1:
        raise ValueError(f"features of one batch must share their first dimension, got {batch}")
    first = next(iter(present.values()))
    sizes = _all_sizes(first.shape[0], first.device)
    return {k: None if v is None else gather_features(v, sizes) for k, v in features.items()}
