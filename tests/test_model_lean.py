"""Work the encoders skip: the last block of each tower at the read token only, text trimmed after the
last EOT. Features and gradients must equal the full computation (open_clip's own block loop)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import CAPTIONS, randomize_trainables, tiny_cfg
from training.ivfusion import FrameGroup, frame_group
from training.lora import merge_lora
from training.model import build_model

B, NF = 2, 4


@pytest.fixture(scope="module")
def model():
    m = build_model(tiny_cfg(None, num_frames=NF, h_v=2, h_l=2))
    randomize_trainables(m, seed=7)
    return m


def full_video(model, frames):
    """Every block on every token: open_clip's VisionTransformer.forward inside the frame group."""
    b, nf = frames.shape[:2]
    with frame_group(FrameGroup("vision", num_frames=nf)):
        z = model.clip.visual(frames.flatten(0, 1))
    return F.normalize(z, dim=-1).view(b, nf, -1)


def full_text(model, tokens, group=None, mask=None):
    """open_clip's transformer over all L positions (no trimming), read at the EOT."""
    clip = model.clip
    length = tokens.shape[1]
    x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
    mask = clip.attn_mask[:length, :length] if mask is None else mask
    with frame_group(group) if group else contextlib.nullcontext():
        x = clip.transformer(x, attn_mask=mask)
    x = clip.ln_final(x)[torch.arange(len(tokens)), tokens.argmax(-1)]
    return F.normalize(x @ clip.text_projection, dim=-1)


def full_pseudo(model, tokens):
    b, nf, length = tokens.shape
    flat = tokens.flatten(0, 1)
    eot = flat.argmax(-1)
    valid = torch.arange(length) <= eot[:, None]
    mask = (
        model.clip.attn_mask[:length, :length]
        + torch.zeros(valid.shape).masked_fill(~valid, float("-inf"))[:, None, None, :]
    )
    group = FrameGroup("text", num_frames=nf, query_index=eot, key_valid=valid)
    return full_text(model, flat, group, mask).view(b, nf, -1)


def inputs(model):
    torch.manual_seed(0)
    frames = torch.randn(B, NF, 3, 32, 32)
    text = model.tokenizer(CAPTIONS[:B])  # [2, 32], EOT at different positions, padding after
    captions = model.tokenizer((CAPTIONS * 2)[: B * NF]).view(B, NF, -1)
    return frames, text, captions


def features_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    feats = fn()
    g = torch.Generator().manual_seed(11)
    sum((f * torch.randn(f.shape, generator=g)).sum() for f in feats).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return [f.detach() for f in feats], grads


def test_lean_encoders_equal_the_full_computation_with_gradients(model):
    frames, text, captions = inputs(model)
    lean = features_and_grads(
        model,
        lambda: [
            *model.encode_video(frames)[:1],
            model.encode_text(text),
            model.encode_pseudo_captions(captions),
        ],
    )
    full = features_and_grads(
        model, lambda: [full_video(model, frames), full_text(model, text), full_pseudo(model, captions)]
    )
    for a, b in zip(lean[0], full[0], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert lean[1].keys() == full[1].keys()
    assert len(lean[1]) == sum(p.requires_grad for p in model.parameters())  # every trainable tensor
    for name in lean[1]:
        torch.testing.assert_close(lean[1][name], full[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_last_block_queries_one_token_and_text_stops_at_the_last_eot(model, monkeypatch):
    """SDPA calls of the text tower: L' = last EOT + 1 keys everywhere, one query per sequence at the end."""
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        calls.append((tuple(q.shape), tuple(k.shape)))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    _, text, _ = inputs(model)
    last_eot = int(text.argmax(-1).max())
    assert last_eot + 1 < text.shape[1]  # the tokenizer pads: there is something to trim
    with torch.no_grad():
        model.encode_text(text)
    layers, heads = len(model.clip.transformer.resblocks), model.clip.transformer.resblocks[0].attn.num_heads
    dh = model.clip.transformer.width // heads
    full = ((B, heads, last_eot + 1, dh), (B, heads, last_eot + 1, dh))
    assert calls == [full] * (layers - 1) + [((B, heads, 1, dh), full[1])]


def test_lean_path_after_merge_lora(model):
    """merge_lora removes lora_A/B: the one-query projection must follow (same features)."""
    frames, text, captions = inputs(model)
    merged = merge_lora(copy.deepcopy(model))
    with torch.no_grad():
        for a, b in zip(
            (model.encode_video(frames)[0], model.encode_pseudo_captions(captions)),
            (merged.encode_video(frames)[0], merged.encode_pseudo_captions(captions)),
            strict=True,
        ):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def saved_for_backward(model, frames) -> float:
    """Bytes the vision tower keeps for backward (distinct storages, weights excluded), in units of one
    [N, L, D] float tensor per block below the last."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.encode_video(frames)
    visual = model.clip.visual
    n, tokens, width = (
        frames.shape[0] * frames.shape[1],
        visual.positional_embedding.shape[0],
        visual.transformer.width,
    )
    return sum(kept.values()) / (4 * n * tokens * width * (len(visual.transformer.resblocks) - 1))


def test_backward_keeps_the_block_input_qkv_attention_output_and_the_mlp_derivative():
    """Per block the lean encoders keep x (ln_1 folded into the q/k/v projection, so not ln_1(x)), q|k|v,
    the attention output, the MLP input and act'(h): 10 [N, L, D] tensors, plus small IVFusion and
    last-block extras; ``mlp_recompute`` keeps act'(h) = 4 of them fewer; autograd through the plain MLP
    (lean_mlp=False) keeps 4 more (ln_2's output and c_fc's output, QuickGELU's sigmoid and product)."""
    frames = torch.randn(B, NF, 3, 32, 32)
    kept = {}
    for name, kw in {"lean": {}, "recompute": {"mlp_recompute": True}, "plain": {"lean_mlp": False}}.items():
        m = build_model(tiny_cfg(None, num_frames=NF, h_v=2, h_l=2, **kw))
        randomize_trainables(m, seed=7)
        kept[name] = saved_for_backward(m, frames)
    assert 10 <= kept["lean"] < 12, kept
    assert kept["lean"] - kept["recompute"] == pytest.approx(4, abs=0.2), kept
    assert kept["plain"] - kept["lean"] >= 4, kept
