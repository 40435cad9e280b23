"""IVFusion against a naive, loop-by-loop reference of docs/method.md "IVFusion" in both towers; text padding is inert."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import CAPTIONS, randomize_trainables, tiny_cfg
from training.ivfusion import FrameGroup, IVFusionAttention, frame_group
from training.model import build_model

B, NF = 2, 3  # groups, sequences per group


@pytest.fixture(scope="module")
def model():
    m = build_model(tiny_cfg(None, num_frames=NF, h_v=2, h_l=2))
    randomize_trainables(m, seed=3)
    return m.eval()


def naive_attention(
    attn: IVFusionAttention, x: torch.Tensor, valid: torch.Tensor, causal: bool, eot: torch.Tensor
):
    """One sequence after another, one head after another, explicit softmax; the fused token last."""
    base, heads = attn.base_layer, attn.num_heads
    w = base.in_proj_weight + attn.lora_B @ attn.lora_A  # W_in + B·A
    q, k, v = (x @ w.T + base.in_proj_bias).chunk(3, dim=-1)  # [N, L, D] each
    n, length, d = x.shape
    dh = d // heads
    y_img = torch.zeros_like(x)
    for s in range(n):
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            for i in range(length):
                keys = [j for j in range(length) if valid[s, j] and (j <= i or not causal)]
                scores = torch.stack([q[s, i, sl] @ k[s, j, sl] for j in keys]) / math.sqrt(dh)
                y_img[s, i, sl] = torch.softmax(scores, 0) @ v[s, keys, sl]
    y_img = base.out_proj(y_img)
    out = y_img.clone()
    for g in range(n // NF):
        members = range(g * NF, (g + 1) * NF)
        k_all = torch.cat([k[s][valid[s]] for s in members])  # every valid token of the group
        v_all = torch.cat([v[s][valid[s]] for s in members])
        for s in members:
            t = int(eot[s])
            c2 = torch.cat(
                [
                    torch.softmax(
                        k_all[:, h * dh : (h + 1) * dh] @ q[s, t, h * dh : (h + 1) * dh] / math.sqrt(dh), 0
                    )
                    @ v_all[:, h * dh : (h + 1) * dh]
                    for h in range(heads)
                ]
            )
            c1 = y_img[s, t]
            hid = attn.adapter.down(c1)
            out[s, t] = base.out_proj(c2) + attn.adapter.up(hid * torch.sigmoid(1.702 * hid))
    return out


@torch.no_grad()
def test_vision_block_equals_naive_reference(model):
    attn = model.clip.visual.transformer.resblocks[-1].attn
    length = 17  # 16 patches + CLS
    x = torch.randn(B * NF, length, attn.embed_dim)
    with frame_group(FrameGroup("vision", num_frames=NF)):
        fast = attn(x, x, x, need_weights=False)[0]
    valid = torch.ones(B * NF, length, dtype=torch.bool)
    slow = naive_attention(attn, x, valid, causal=False, eot=torch.zeros(B * NF, dtype=torch.long))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_text_block_equals_naive_reference(model):
    attn = model.clip.transformer.resblocks[-1].attn
    tokens = model.tokenizer(CAPTIONS[: B * NF] + CAPTIONS[:2])[: B * NF, :12]  # [6, 12], mixed lengths
    eot = tokens.argmax(-1)
    valid = torch.arange(12) <= eot[:, None]
    assert (~valid).any() and valid.sum(1).unique().numel() > 1
    x = torch.randn(B * NF, 12, attn.embed_dim)
    causal = model.clip.attn_mask[:12, :12]
    mask = causal + torch.zeros(valid.shape).masked_fill(~valid, float("-inf"))[:, None, None, :]
    with frame_group(FrameGroup("text", num_frames=NF, query_index=eot, key_valid=valid)):
        fast = attn(x, x, x, need_weights=False, attn_mask=mask)[0]
    slow = naive_attention(attn, x, valid, causal=True, eot=eot)
    rows = valid  # padding rows are never read downstream of a valid position
    torch.testing.assert_close(fast[rows], slow[rows], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_outside_a_group_the_block_is_plain_lora(model):
    attn = model.clip.visual.transformer.resblocks[-1].attn
    x = torch.randn(B * NF, 17, attn.embed_dim)
    with frame_group(FrameGroup("text", num_frames=NF)):  # the other tower's group: no fusion here
        y = attn(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(y, attn.attend(x, None))


@torch.no_grad()
def test_padding_never_influences_pseudo_caption_features(model):
    tokens = model.tokenizer(CAPTIONS[: B * NF] + CAPTIONS[:2])[: B * NF].view(B, NF, -1)  # [2, 3, 32]
    base = model.encode_pseudo_captions(tokens)
    eot = tokens.argmax(-1, keepdim=True)
    pad = torch.arange(tokens.shape[-1]) > eot
    noisy = torch.where(
        pad, torch.randint(1, 49000, tokens.shape), tokens
    )  # garbage after EOT, EOT still max
    longer = torch.cat([tokens, torch.zeros(B, NF, 9, dtype=tokens.dtype)], dim=-1)  # 41 positions
    torch.testing.assert_close(model.encode_pseudo_captions(noisy), base, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model.encode_pseudo_captions(longer), base, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_groups_do_not_leak_into_each_other(model):
    """Changing one video's frames changes its own features only (fusion stays inside a group)."""
    frames = torch.randn(B, NF, 3, 32, 32)
    z, v = model.encode_video(frames)
    frames2 = frames.clone()
    frames2[1, 0] += 1.0
    z2, v2 = model.encode_video(frames2)
    torch.testing.assert_close(z2[0], z[0], atol=1e-6, rtol=1e-6)
    assert (z2[1] - z[1]).abs().amax(-1).min() > 1e-4  # every frame of video 1 sees the change via its CLS
    assert (v2[1] - v[1]).abs().max() > 1e-4


@torch.no_grad()
def test_video_level_cost_is_f_queries_per_frame_not_full_attention(model, monkeypatch):
    """Both branches go through fused SDPA; the video level scores F·(F·L) pairs per group, not (F·L)²."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        calls.append((tuple(q.shape), tuple(k.shape)))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    attn = model.clip.visual.transformer.resblocks[-1].attn
    h, dh, length = attn.num_heads, attn.embed_dim // attn.num_heads, 17
    x = torch.randn(B * NF, length, attn.embed_dim)
    with frame_group(FrameGroup("vision", num_frames=NF)):
        attn(x, x, x, need_weights=False)
    assert calls == [
        ((B * NF, h, length, dh), (B * NF, h, length, dh)),  # image level, per frame
        ((B, h, NF, dh), (B, h, NF * length, dh)),  # video level: F CLS queries over F·L keys per video
    ]
