"""LoRA on the fused q/k/v projection of open_clip's attention blocks (docs/method.md "LoRA"), and a
memory-lean wrapper for the frozen MLPs of the same blocks.

Each ``ResidualAttentionBlock.attn`` (an ``nn.MultiheadAttention``) is replaced by :class:`LoRAAttention`,
which keeps the original module as ``base_layer`` (frozen, never copied) and adds two small matrices:

    [q|k|v] = x·W_inᵀ + b_in + (x·Aᵀ)·Bᵀ          W_in, b_in = base_layer.in_proj_weight / in_proj_bias
    A ∈ R^{r×D} (``lora_A``, kaiming-uniform a=√5),  B ∈ R^{3D×r} (``lora_B``, zeros), scale 1 (alpha = r)
    Y = out_proj(softmax(q·kᵀ/√d_head + mask)·v)    (multi-head, d_head = D / heads, fused SDPA)

B = 0 makes the module an exact re-implementation of the frozen block at initialisation. The call signature
is ``nn.MultiheadAttention``'s as open_clip uses it: ``attn(q_x, k_x, v_x, need_weights=False,
attn_mask=mask)[0]``; only self-attention is supported (open_clip's CLIP towers use nothing else).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

__all__ = ["LoRAAttention", "FrozenMLP", "merge_lora", "sdpa_mask", "split_heads", "merge_heads"]


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, L, D] -> [N, heads, L, D / heads]."""
    n, length, d = t.shape
    return t.view(n, length, heads, d // heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """[N, heads, L, d_head] -> [N, L, heads · d_head]."""
    n, h, length, dh = t.shape
    return t.transpose(1, 2).reshape(n, length, h * dh)


def sdpa_mask(attn_mask: torch.Tensor | None, n: int, heads: int) -> torch.Tensor | None:
    """open_clip / ``nn.MultiheadAttention`` mask conventions -> one that broadcasts to [N, heads, Lq, Lk].

    Accepted: [Lq, Lk] (shared, e.g. the causal mask), [N·heads, Lq, Lk] (torch's per-head layout) and
    [N, 1 | heads, Lq, Lk]. Float masks are additive (-inf = blocked); bool masks follow torch's
    ``nn.MultiheadAttention`` convention (True = blocked) and are inverted for SDPA (True = attend).
    """
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask
    if attn_mask.dim() == 2:
        return attn_mask
    if attn_mask.dim() == 3:
        if attn_mask.shape[0] != n * heads:
            raise ValueError(
                f"a 3-D attention mask must be [N·heads, Lq, Lk] = [{n * heads}, ...], got {tuple(attn_mask.shape)}"
            )
        return attn_mask.view(n, heads, *attn_mask.shape[1:])
    if attn_mask.dim() == 4:
        return attn_mask
    raise ValueError(f"attention mask must have 2, 3 or 4 dims, got shape {tuple(attn_mask.shape)}")


class LoRAAttention(nn.Module):
    """``nn.MultiheadAttention`` with a rank-r LoRA delta on its fused q/k/v input projection.

    Parameters: ``lora_A`` [r, D], ``lora_B`` [3D, r]; everything of ``base_layer`` stays frozen.
    """

    def __init__(self, base_layer: nn.MultiheadAttention, rank: int = 8):
        super().__init__()
        if not isinstance(base_layer, nn.MultiheadAttention):
            raise TypeError(f"LoRAAttention wraps nn.MultiheadAttention, got {type(base_layer).__name__}")
        if not base_layer._qkv_same_embed_dim or base_layer.in_proj_weight is None:
            raise ValueError("LoRAAttention needs a fused in_proj_weight (q, k, v of the same width)")
        if base_layer.bias_k is not None or base_layer.add_zero_attn:
            raise ValueError("LoRAAttention does not support add_bias_kv / add_zero_attn")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base_layer = base_layer
        for p in self.base_layer.parameters():
            p.requires_grad_(False)
        self.embed_dim = base_layer.embed_dim
        self.num_heads = base_layer.num_heads
        self.batch_first = base_layer.batch_first
        self.rank = rank
        ref = base_layer.in_proj_weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.embed_dim, dtype=ref.dtype, device=ref.device))
        self.lora_B = nn.Parameter(torch.zeros(3 * self.embed_dim, rank, dtype=ref.dtype, device=ref.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # B = 0: LoRA starts as a no-op

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, heads={self.num_heads}, rank={self.rank}"

    def qkv(
        self, x: torch.Tensor, norm: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[q|k|v] = u·W_inᵀ + b_in + (u·Aᵀ)·Bᵀ with u = norm(x) (or x): three [N, L, D] views of one
        [N, L, 3D] tensor. With a frozen ``norm`` and LoRA training, backward keeps x instead of u
        (:class:`_NormedQKVFunction`: same numbers, one [N, L, D] tensor fewer per block)."""
        base = self.base_layer
        if norm is not None and _NormedQKVFunction.applies(x, norm, self):
            qkv = _NormedQKVFunction.apply(
                x, norm, base.in_proj_weight, base.in_proj_bias, self.lora_A, self.lora_B
            )
            return qkv.chunk(3, dim=-1)
        u = x if norm is None else norm(x)
        qkv = F.linear(u, base.in_proj_weight, base.in_proj_bias)  # [N, L, 3D]
        if self.lora_A is not None:  # None once merged into in_proj_weight (merge_lora)
            qkv = qkv.add_(F.linear(F.linear(u, self.lora_A), self.lora_B))  # + LoRA delta (rank r), in place
        return qkv.chunk(3, dim=-1)  # each [N, L, D]

    def out_proj(self, y: torch.Tensor) -> torch.Tensor:
        """The frozen output projection of the wrapped attention."""
        return self.base_layer.out_proj(y)

    def attend(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, norm: nn.Module | None = None
    ) -> torch.Tensor:
        """Image-level attention, batch first: x [N, L, D] -> Y [N, L, D] (of norm(x) when given)."""
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x, norm))  # [N, H, L, d_head]
        mask = sdpa_mask(attn_mask, x.shape[0], self.num_heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # softmax(q·kᵀ/√d_head + mask)·v
        return self.out_proj(merge_heads(y))

    def qkv_at(
        self, x: torch.Tensor, t: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query of position ``t`` only, keys and values of every position: q_t [N, D], k, v [N, L, D].

        ``t`` [N] is one position per sequence, None = 0 (the CLS token). Same numbers as :meth:`qkv`,
        a third less projection work: the other queries are never computed.
        """
        base, d = self.base_layer, self.embed_dim
        w, b = base.in_proj_weight, base.in_proj_bias  # [3D, D], [3D]
        rows = torch.arange(x.shape[0], device=x.device)
        x_t = x[:, 0] if t is None else x[rows, t]  # [N, D]
        q_t = F.linear(x_t, w[:d], None if b is None else b[:d])  # [N, D]
        kv = F.linear(x, w[d:], None if b is None else b[d:])  # [N, L, 2D]
        if self.lora_A is not None:  # None once merged into in_proj_weight (merge_lora)
            xa = F.linear(x, self.lora_A)  # [N, L, r]
            xa_t = xa[:, 0] if t is None else xa[rows, t]  # [N, r]
            q_t = q_t + F.linear(xa_t, self.lora_B[:d])
            kv = kv.add_(F.linear(xa, self.lora_B[d:]))  # + LoRA delta of k and v, in place
        k, v = kv.chunk(2, dim=-1)  # each [N, L, D]
        return q_t, k, v

    def attend_at(
        self, x: torch.Tensor, t: torch.Tensor | None, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Row ``t`` of :meth:`attend`: x [N, L, D] -> Y[n, t_n] [N, D], without the other rows."""
        q_t, k, v = self.qkv_at(x, t)
        return self.attend_query(q_t, k, v, t, attn_mask)

    def attend_query(self, q_t, k, v, t: torch.Tensor | None, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Image-level attention of one query per sequence: q_t [N, D], k, v [N, L, D] -> [N, D]."""
        n, h = k.shape[0], self.num_heads
        mask = sdpa_mask(attn_mask, n, h)
        if mask is not None:  # the mask row of each query: [N, 1 | H, 1, Lk]
            mask = mask.expand(n, -1, -1, -1) if mask.dim() == 4 else mask.expand(n, 1, -1, -1)
            mask = (
                mask[:, :, :1] if t is None else mask[torch.arange(n, device=mask.device), :, t].unsqueeze(2)
            )
        q = q_t.view(n, 1, h, -1).transpose(1, 2)  # [N, H, 1, d_head]
        y = F.scaled_dot_product_attention(q, split_heads(k, h), split_heads(v, h), attn_mask=mask)
        return self.out_proj(y.reshape(n, -1))  # [N, H, 1, d_head] -> [N, D]

    def attend_block_at(
        self, x: torch.Tensor, t: torch.Tensor | None, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Row ``t`` of :meth:`attend_block` (what a last block needs when only one token is read)."""
        return self.attend_at(x, t, attn_mask)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        **_: object,
    ) -> tuple[torch.Tensor, None]:
        """Drop-in for ``nn.MultiheadAttention.forward`` (self-attention only); returns ``(Y, None)``."""
        self._check_call(query, key, value, need_weights, key_padding_mask)
        x = query if self.batch_first else query.transpose(0, 1)  # -> [N, L, D]
        y = self.attend_block(x, attn_mask)
        return (y if self.batch_first else y.transpose(0, 1)), None

    def attend_block(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, norm: nn.Module | None = None
    ) -> torch.Tensor:
        """What this block computes for batch-first input (of ``norm(x)`` when given: the block's ln_1
        folded in); IVFusion overrides it."""
        return self.attend(x, attn_mask, norm)

    @staticmethod
    def _check_call(query, key, value, need_weights, key_padding_mask) -> None:
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise NotImplementedError("LoRAAttention supports self-attention only (key and value = query)")
        if need_weights:
            raise NotImplementedError("LoRAAttention does not return attention weights (need_weights=True)")
        if key_padding_mask is not None:
            raise NotImplementedError("pass padding through attn_mask, not key_padding_mask")


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA delta of ``model`` into its frozen projection, for inference; returns ``model``.

    W_in <- W_in + B·A in each :class:`LoRAAttention` (IVFusion blocks included), then ``lora_A`` and
    ``lora_B`` are removed: outputs are unchanged up to floating-point rounding and each block computes
    one projection instead of three. No LoRA parameter is left, so the merged model can neither train its
    LoRA nor be saved as adapters: save them first (:func:`training.adapters.save_adapters`). IVFusion
    blocks keep their video-level branch and fusion adapter.
    """
    for module in model.modules():
        if isinstance(module, LoRAAttention) and module.lora_A is not None:
            weight = module.base_layer.in_proj_weight  # [3D, D]
            weight.add_((module.lora_B.double() @ module.lora_A.double()).to(weight.dtype))  # B·A [3D, D]
            del module.lora_A, module.lora_B
            module.register_parameter("lora_A", None)
            module.register_parameter("lora_B", None)
    return model


class _NormedQKVFunction(torch.autograd.Function):
    """qkv = u·W_inᵀ + b_in + (u·Aᵀ)·Bᵀ, u = norm(x), for a frozen norm and projection and trainable A, B;
    keeps x and u·Aᵀ ([N, L, r]) for backward, not u ([N, L, D]), which backward recomputes (element-wise).

    Gradients, with G = dqkv and G_r = G·B:  dB = Gᵀ·(u·Aᵀ),  dA = G_rᵀ·u,  du = G·W_in + G_r·A,
    dx = norm'(x)ᵀ·du, the same products autograd would form through the unfused modules.
    """

    @staticmethod
    def applies(x: torch.Tensor, norm: nn.Module, attn: LoRAAttention) -> bool:
        """Training LoRA through a frozen norm and projection: the case this function is for."""
        base = attn.base_layer
        return (
            torch.is_grad_enabled()
            and attn.lora_A is not None
            and attn.lora_A.requires_grad
            and attn.lora_B.requires_grad
            and not base.in_proj_weight.requires_grad
            and (base.in_proj_bias is None or not base.in_proj_bias.requires_grad)
            and not any(p.requires_grad for p in norm.parameters())
        )

    @staticmethod
    def forward(ctx, x, norm, weight, bias, lora_a, lora_b):
        ctx.norm = norm
        device = x.device.type  # backward replays the caller's autocast state
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        with torch.no_grad():
            u = norm(x)
            xa = F.linear(u, lora_a)  # [N, L, r]
            qkv = F.linear(u, weight, bias)  # [N, L, 3D]
            qkv.view(-1, qkv.shape[-1]).addmm_(  # + (u·Aᵀ)·Bᵀ in place (dtypes: autocast's result)
                xa.view(-1, xa.shape[-1]).to(qkv.dtype), lora_b.t().to(qkv.dtype)
            )
        ctx.save_for_backward(x, xa, weight, lora_a, lora_b)
        return qkv

    @staticmethod
    def backward(ctx, grad_qkv: torch.Tensor):
        x, xa, weight, lora_a, lora_b = ctx.saved_tensors
        device, dtype, enabled = ctx.autocast
        need_x = ctx.needs_input_grad[0]
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            with torch.enable_grad():  # recomputed u = norm(x), for dx = norm'ᵀ·du below
                x_in = x.detach().requires_grad_(need_x)
                u = ctx.norm(x_in)
            with torch.no_grad():
                g = grad_qkv.flatten(0, -2)  # [N·L, 3D]
                g_r = g @ lora_b.to(g.dtype)  # [N·L, r]
                grad_b = g.t() @ xa.flatten(0, -2).to(g.dtype)  # [3D, r]
                grad_a = g_r.t() @ u.detach().flatten(0, -2).to(g.dtype)  # [r, D]
                grad_x = None
                if need_x:
                    grad_u = g @ weight.to(g.dtype)  # [N·L, D]
                    grad_u = grad_u.addmm_(g_r.to(grad_u.dtype), lora_a.to(grad_u.dtype)).view(u.shape)
            if need_x:
                (grad_x,) = torch.autograd.grad(u, x_in, grad_u.to(u.dtype))  # dX through the frozen norm
        return grad_x, None, None, None, grad_a.to(lora_a.dtype), grad_b.to(lora_b.dtype)


class _FrozenMLPFunction(torch.autograd.Function):
    """y = c_proj(act(c_fc(u))), u = norm(x) (or x), saving x and, unless ``recompute``, the activation's
    derivative g = act'(h) at h = c_fc(u); backward returns dx alone.

    With frozen weights only du = (g ⊙ dy·W_proj)·W_fc is needed. Autograd through open_clip's MLP keeps
    c_fc's input and output and, for QuickGELU (z·σ(1.702 z)), two more [N, L, 4D] tensors per block; this
    keeps one [N, L, 4D] tensor (g, computed in the forward while h is at hand), or with ``recompute`` none:
    backward then recomputes h = c_fc(u), a third more matrix products for the MLP. With the block's frozen
    ``ln_2`` folded in, u is not kept either: backward recomputes it from x (cheap, element-wise).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, mlp: nn.Sequential, norm: nn.Module | None, recompute: bool):
        ctx.mlp, ctx.norm, ctx.recompute = mlp, norm, recompute
        device = x.device.type  # backward replays the caller's autocast state (e.g. bf16 on the CPU)
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        with torch.no_grad():
            h = mlp.c_fc(x if norm is None else norm(x))  # [N, L, 4D]
            if recompute:
                ctx.save_for_backward(x)
                h = _activate(mlp.gelu, h)
            else:
                a, g = _activate_with_derivative(mlp.gelu, h)
                ctx.save_for_backward(x, g)
                h = a
            return mlp.c_proj(h)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, *kept = ctx.saved_tensors
        mlp, norm = ctx.mlp, ctx.norm
        device, dtype, enabled = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            if norm is None:
                u = x
            else:
                with torch.enable_grad():  # recomputed u = norm(x), for dx = norm'ᵀ·du below
                    x_in = x.detach().requires_grad_(True)
                    u = norm(x_in)
            with torch.no_grad():
                if kept:
                    (g,) = kept
                else:
                    _, g = _activate_with_derivative(mlp.gelu, mlp.c_fc(u))  # recomputed [N, L, 4D]
                grad_a = (grad_y @ mlp.c_proj.weight).to(g.dtype)  # dA = dY·W_proj, [N, L, 4D]
                grad_u = grad_a.mul_(g) @ mlp.c_fc.weight  # dU = (dA ⊙ g)·W_fc
            if norm is not None:
                (grad_u,) = torch.autograd.grad(u, x_in, grad_u.to(u.dtype))  # dX through the frozen norm
        return grad_u.to(x.dtype), None, None, None


def _activate(act: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """act(h), in place for QuickGELU (one [N, L, 4D] buffer fewer)."""
    if isinstance(act, QuickGELU):
        return h.mul_(torch.mul(h, 1.702).sigmoid_())
    return act(h)


def _activate_with_derivative(act: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(act(h), act'(h)); ``h`` is overwritten. QuickGELU, σ = σ(1.702 h), a = h·σ:
    act'(h) = σ·(1 + 1.702·h·(1 − σ)) = σ + 1.702·a·(1 − σ), five passes over [N, L, 4D] in all."""
    if isinstance(act, QuickGELU):
        s = torch.mul(h, 1.702).sigmoid_()
        a = h.mul_(s)
        return a, torch.addcmul(s, a, torch.sub(1.0, s), value=1.702)
    with torch.enable_grad():
        h_in = h.detach().requires_grad_(True)
        a = act(h_in)
        (g,) = torch.autograd.grad(a, h_in, torch.ones_like(a))  # element-wise activation: diag Jacobian
    return a.detach(), g


class FrozenMLP(nn.Module):
    """open_clip's block MLP (``c_fc``, ``gelu``, ``c_proj``) kept as ``base_layer``; same outputs and input
    gradients, but backward keeps only its input and the activation's derivative (with ``recompute``: only
    its input, at the price of recomputing c_fc in backward). ``forward(x, norm=ln_2)`` computes
    MLP(ln_2(x)) without keeping ln_2's output. Falls back to the plain modules when any of their weights
    trains or no gradient is needed."""

    def __init__(self, base_layer: nn.Sequential, recompute: bool = False):
        super().__init__()
        if not all(hasattr(base_layer, n) for n in ("c_fc", "gelu", "c_proj")):
            raise TypeError(f"FrozenMLP wraps open_clip's c_fc/gelu/c_proj MLP, got {base_layer}")
        self.base_layer = base_layer
        self.recompute = recompute

    def forward(self, x: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        modules = (self.base_layer,) if norm is None else (self.base_layer, norm)
        frozen = not any(p.requires_grad for m in modules for p in m.parameters())
        if frozen and torch.is_grad_enabled() and x.requires_grad:
            return _FrozenMLPFunction.apply(x, self.base_layer, norm, self.recompute)
        return self.base_layer(x if norm is None else norm(x))
