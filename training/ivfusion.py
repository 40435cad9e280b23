"""IVFusion: image-level + video-level attention in the top blocks of each tower (docs/method.md "IVFusion").

How the blocks learn which sequences form a video. open_clip's transformer sees a flat batch
[N = B·F, L, D] and calls ``block.attn(x, x, x, attn_mask=...)``; nothing in that call says which F
sequences belong together. The encoders of :class:`training.model.DiscoVLA` therefore declare the grouping
for the duration of one forward call::

    with frame_group(FrameGroup("vision", num_frames=F)):
        clip.visual(frames)                    # [B·F, 3, H, W]

The group lives in a :class:`contextvars.ContextVar`, so it is private to the calling thread (and asyncio
task): two threads encoding at once, or a DataLoader worker thread, never see each other's group. Outside a
group, or in a group of the other tower, an :class:`IVFusionAttention` is plain LoRA attention; that is how
the query caption goes through the same text blocks without the video-level branch. Gradient checkpointing
would re-run blocks outside the ``with`` and is refused by the model.

Per block (X = ln_1(H), [B·F, L, D]; t = the fused token: CLS = position 0 in vision, EOT in text):
    q, k, v          = LoRA projections of X                                       (training.lora)
    Y_img            = out_proj(softmax(q·kᵀ/√d + M_img)·v)         per sequence     (image level)
    c2[b,f]          = out_proj(softmax(q[b,f,t]·K_bᵀ/√d + M_vid)·V_b)
                       K_b, V_b = keys/values of all F·L tokens of group b        (video level, t only)
    c1               = Y_img[:, t]
    ĉ                = c2 + W_up·QuickGELU(W_down·c1 + b_down) + b_up           (fusion adapter)
    Y                = Y_img with position t replaced by ĉ
M_img: none (vision) or causal + key padding (text); M_vid: none (vision) or key padding only, i.e. the EOT
query attends non-causally to every valid token of the F captions. Cost of the video-level branch:
F queries × F·L keys per group, O(F·F·L), never the full (F·L)² spatio-temporal attention.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.lora import LoRAAttention, merge_heads, sdpa_mask, split_heads

__all__ = ["FrameGroup", "frame_group", "active_group", "FusionAdapter", "IVFusionAttention"]

TOWERS = ("vision", "text")


@dataclass(frozen=True)
class FrameGroup:
    """How the flat batch of one encoder call splits into groups of F sequences."""

    tower: str  # "vision" or "text": only the IVFusion blocks of that tower fuse
    num_frames: int  # F: sequences per group (frames of a video, or pseudo captions of a sample)
    query_index: torch.Tensor | None = None  # [B·F] position of the fused token; None = 0 (the CLS token)
    key_valid: torch.Tensor | None = None  # [B·F, L] bool, True = real token; None = every token is valid

    def __post_init__(self):
        if self.tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}, got {self.tower!r}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")


_ACTIVE_GROUP: ContextVar[FrameGroup | None] = ContextVar("discovla_frame_group", default=None)


@contextlib.contextmanager
def frame_group(group: FrameGroup) -> Iterator[FrameGroup]:
    """Make ``group`` visible to the IVFusion blocks of its tower for the duration of the ``with``."""
    token = _ACTIVE_GROUP.set(group)
    try:
        yield group
    finally:
        _ACTIVE_GROUP.reset(token)


def active_group(tower: str) -> FrameGroup | None:
    """The group declared for ``tower`` in this thread, or None."""
    group = _ACTIVE_GROUP.get()
    return group if group is not None and group.tower == tower else None


class FusionAdapter(nn.Module):
    """a(c1) = W_up·QuickGELU(W_down·c1 + b_down) + b_up, D -> r -> D.

    W_down xavier-uniform, b_down ~ N(0, 1e-6), W_up = b_up = 0 (docs/method.md "IVFusion").
    """

    def __init__(self, dim: int, rank: int = 8, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        self.down = nn.Linear(dim, rank, dtype=dtype, device=device)  # W_down [r, D], b_down [r]
        self.up = nn.Linear(rank, dim, dtype=dtype, device=device)  # W_up [D, r], b_up [D]
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.normal_(self.down.bias, std=1e-6)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, c1: torch.Tensor) -> torch.Tensor:
        h = self.down(c1)
        return self.up(h * torch.sigmoid(1.702 * h))  # QuickGELU(z) = z·σ(1.702 z)


class IVFusionAttention(LoRAAttention):
    """LoRA attention plus the video-level branch and fusion adapter of one IVFusion block."""

    def __init__(self, base_layer: nn.MultiheadAttention, tower: str, rank: int = 8):
        super().__init__(base_layer, rank=rank)
        if tower not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
        self.tower = tower
        ref = base_layer.in_proj_weight
        self.adapter = FusionAdapter(self.embed_dim, rank, dtype=ref.dtype, device=ref.device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tower={self.tower}"

    def attend_block(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, norm: nn.Module | None = None
    ) -> torch.Tensor:
        group = active_group(self.tower)
        if group is None:
            return self.attend(x, attn_mask, norm)  # no group declared: plain LoRA (e.g. the query caption)
        return self.fuse(x, attn_mask, group, norm)

    def attend_block_at(
        self, x: torch.Tensor, t: torch.Tensor | None, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Only the fused token's output [B·F, D] (ĉ in a group, else the LoRA output at ``t``)."""
        group = active_group(self.tower)
        if group is None:
            return self.attend_at(x, t, attn_mask)
        if t is not group.query_index:
            raise ValueError("attend_block_at: t must be the frame group's query_index (the fused token)")
        q_t, k, v = self.qkv_at(x, t)  # q of the fused token only
        c1 = self.attend_query(q_t, k, v, t, attn_mask)  # image level at t, [B·F, D]
        return self._video_level(q_t, k, v, group) + self.adapter(c1)  # ĉ = c2 + a(c1)

    def _video_level(
        self, q_t: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: FrameGroup
    ) -> torch.Tensor:
        """c2 = out_proj(softmax(q_t·K_bᵀ/√d + M_vid)·V_b): q_t [B·F, D], k, v [B·F, L, D] -> [B·F, D]."""
        n, length, d = k.shape
        nf, h = group.num_frames, self.num_heads
        if n % nf:
            raise ValueError(f"batch of {n} sequences does not split into groups of num_frames={nf}")
        b, dh = n // nf, d // h
        # [B·F, L, D] -> [B, F·L, H, d_head] is a view (no copy): the F sequences of a group are adjacent.
        q_t = q_t.reshape(b, nf, h, dh).transpose(1, 2)  # [B, H, F, d_head]
        k_b = k.view(b, nf * length, h, dh).transpose(1, 2)  # [B, H, F·L, d_head]
        v_b = v.view(b, nf * length, h, dh).transpose(1, 2)  # [B, H, F·L, d_head]
        m_vid = (
            None if group.key_valid is None else group.key_valid.reshape(b, 1, 1, nf * length)
        )  # True=attend
        c2 = F.scaled_dot_product_attention(q_t, k_b, v_b, attn_mask=m_vid)  # [B, H, F, d_head]
        return self.out_proj(c2.transpose(1, 2).reshape(n, d))  # [B·F, D]

    def fuse(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        group: FrameGroup,
        norm: nn.Module | None = None,
    ) -> torch.Tensor:
        """x [B·F, L, D] -> Y [B·F, L, D] with the fused token replaced by ĉ (of norm(x) when given)."""
        n, h = x.shape[0], self.num_heads
        q, k, v = self.qkv(x, norm)  # [B·F, L, D] views of one [B·F, L, 3D] tensor

        # image level: Y_img = out_proj(softmax(q·kᵀ/√d + M_img)·v), each sequence on its own
        qh, kh, vh = (split_heads(t, h) for t in (q, k, v))  # [B·F, H, L, d_head]
        y_img = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=sdpa_mask(attn_mask, n, h))
        y_img = self.out_proj(merge_heads(y_img))  # [B·F, L, D]

        # video level: the fused token's query of each sequence over all F·L tokens of its group
        rows = torch.arange(n, device=x.device)
        t = group.query_index
        c2 = self._video_level(q[:, 0] if t is None else q[rows, t], k, v, group)  # [B·F, D]

        # fusion adapter on the image-level output of the fused token, then replacement at t
        c1 = y_img[:, 0].contiguous() if t is None else y_img[rows, t]  # [B·F, D], not a view of y_img:
        # the adapter keeps its input for backward, and a view would keep all of y_img
        c_hat = c2 + self.adapter(c1)  # ĉ = c2 + a(c1)
        if t is None:
            return torch.cat([c_hat.unsqueeze(1), y_img[:, 1:]], dim=1)  # CLS at position 0
        return y_img.index_put((rows, t), c_hat)  # out of place: EOT position of each caption
