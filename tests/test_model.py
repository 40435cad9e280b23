"""DiscoVLA on open_clip: equivalence with plain CLIP at zero init, gradients, freezing, parameter counts.

Tiny models are built from training/model_configs/DiscoVLA-Tiny.json, saved as ordinary open_clip
checkpoint files and loaded by path, the way a user's checkpoint is.
"""

from __future__ import annotations

import threading

import open_clip
import pytest
import torch

from tests.helpers import CAPTIONS, TINY, randomize_trainables, save_tiny_checkpoint, tiny_cfg
from training.ivfusion import FrameGroup, IVFusionAttention, active_group, frame_group
from training.lora import LoRAAttention
from training.model import DiscoVLAConfig, build_model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def reference_clip(checkpoint: str):
    return open_clip.create_model(TINY, pretrained=checkpoint, force_quick_gelu=True).eval()


def test_zero_init_without_ivfusion_equals_open_clip(tiny_checkpoint):
    model = build_model(tiny_cfg(tiny_checkpoint, h_v=0, h_l=0))
    ref = reference_clip(tiny_checkpoint)
    frames = torch.randn(2, 4, 3, 32, 32)
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        z, v = model.encode_video(frames, frame_mask)
        z_ref = ref.encode_image(frames.flatten(0, 1), normalize=True).view(2, 4, -1)
        tokens = open_clip.get_tokenizer(TINY)(CAPTIONS)  # [4, 77]
        t, t_ref = model.encode_text(tokens), ref.encode_text(tokens, normalize=True)
    torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=1e-5)
    v_ref = torch.stack([z_ref[0].mean(0), z_ref[1, :2].mean(0)])  # masked mean of normalised frames
    torch.testing.assert_close(v, torch.nn.functional.normalize(v_ref, dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t, t_ref, atol=1e-5, rtol=1e-5)


def test_short_context_and_query_path_match_open_clip(tiny_checkpoint):
    """32-token captions work (positions and mask sliced) and the query caption is plain LoRA-CLIP."""
    model = build_model(tiny_cfg(tiny_checkpoint))  # IVFusion on: the query path must not use it
    ref = reference_clip(tiny_checkpoint)
    long = open_clip.get_tokenizer(TINY)(CAPTIONS)  # [4, 77]
    with torch.no_grad():
        short = model.encode_text(model.tokenizer(CAPTIONS))  # [4, 32]
        t_ref = ref.encode_text(long, normalize=True)
    assert model.tokenizer(CAPTIONS).shape == (4, 32)
    torch.testing.assert_close(short, t_ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="exceeds"):
        model.encode_text(torch.ones(1, 78, dtype=torch.long))


def test_ivfusion_changes_the_cls_path_at_init(tiny_checkpoint):
    """docs/method.md "IVFusion": with IVFusion on, the CLS path at step 0 is the video-level output, not CLIP's."""
    model = build_model(tiny_cfg(tiny_checkpoint))
    ref = reference_clip(tiny_checkpoint)
    frames = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        z, _ = model.encode_video(frames)
        z_ref = ref.encode_image(frames[0], normalize=True)
    assert (z[0] - z_ref).abs().max() > 1e-3


def test_structure_injected_and_frozen(tiny_checkpoint):
    model = build_model(tiny_cfg(tiny_checkpoint, h_v=3, h_l=1))
    vis = [b.attn for b in model.clip.visual.transformer.resblocks]
    txt = [b.attn for b in model.clip.transformer.resblocks]
    assert [type(a) for a in vis] == [LoRAAttention] + [IVFusionAttention] * 3
    assert [type(a) for a in txt] == [LoRAAttention] * 3 + [IVFusionAttention]
    assert all(isinstance(a.base_layer, torch.nn.MultiheadAttention) for a in vis + txt)
    assert not model.clip.logit_scale.requires_grad
    trainable = {
        n.rsplit(".", 2)[-2] if ".adapter." in n else n.rsplit(".", 1)[-1]
        for n, p in model.named_parameters()
        if p.requires_grad
    }
    assert trainable == {"lora_A", "lora_B", "down", "up"}
    assert all(torch.count_nonzero(a.lora_B) == 0 for a in vis + txt)  # LoRA starts as a no-op


def test_gradients_reach_exactly_the_trainable_tensors(tiny_checkpoint):
    model = build_model(tiny_cfg(tiny_checkpoint))
    randomize_trainables(model)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    out = model(
        frames=torch.randn(2, 4, 3, 32, 32),
        text=model.tokenizer(CAPTIONS[:2]),
        captions=model.tokenizer(CAPTIONS * 2).view(2, 4, -1),
    )
    loss = sum((f * torch.randn_like(f)).sum() for f in out.values())
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
        else:
            assert p.grad is None, f"frozen {name} received a gradient"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.2)
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt.step()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, trainable_before[name]), f"{name} did not move"
        else:
            assert torch.equal(p, frozen_before[name]), f"frozen {name} changed"


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("quick_gelu", [True, False])
def test_lean_mlp_gives_the_same_features_and_gradients(tiny_checkpoint, quick_gelu, recompute):
    """FrozenMLP keeps its input and act'(h) (or, recomputing, its input alone) for backward; numbers must
    equal autograd through open_clip's MLP."""
    grads, feats = [], []
    for lean in (True, False):
        torch.manual_seed(0)
        model = build_model(
            tiny_cfg(tiny_checkpoint, lean_mlp=lean, mlp_recompute=recompute, quick_gelu=quick_gelu)
        )
        act = model.clip.visual.transformer.resblocks[0].mlp
        act = act.base_layer.gelu if lean else act.gelu
        assert isinstance(act, open_clip.transformer.QuickGELU) == quick_gelu
        assert {type(b.mlp).__name__ for b in model.clip.visual.transformer.resblocks} == {
            "FrozenMLP" if lean else "Sequential"
        }
        randomize_trainables(model, seed=5)
        out = model(
            frames=torch.randn(2, 4, 3, 32, 32), captions=model.tokenizer(CAPTIONS * 2).view(2, 4, -1)
        )
        sum((f * torch.randn_like(f)).sum() for f in out.values()).backward()
        feats.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for key in feats[0]:
        torch.testing.assert_close(feats[0][key], feats[1][key], atol=1e-6, rtol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_autocast_runs_and_stays_close(tiny_checkpoint):
    model = build_model(tiny_cfg(tiny_checkpoint))
    randomize_trainables(model)
    inputs = dict(
        frames=torch.randn(2, 4, 3, 32, 32),
        text=model.tokenizer(CAPTIONS[:2]),
        captions=model.tokenizer(CAPTIONS * 2).view(2, 4, -1),
    )
    ref = model(**inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs)
    sum(f.float().sum() for f in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    for key in ref:
        torch.testing.assert_close(out[key].float(), ref[key], atol=0.05, rtol=0.05)


def expected_counts(d_v: int, d_t: int, layers_v: int, layers_t: int, r: int, h_v: int, h_l: int) -> dict:
    """docs/method.md: LoRA per block r·D + 3D·r; adapter per IVFusion block r·D + r + D·r + D."""
    return {
        "vision_lora": layers_v * (r * d_v + 3 * d_v * r),
        "vision_adapters": h_v * (r * d_v + r + d_v * r + d_v),
        "text_lora": layers_t * (r * d_t + 3 * d_t * r),
        "text_adapters": h_l * (r * d_t + r + d_t * r + d_t),
    }


@pytest.mark.parametrize("rank,h_v,h_l", [(8, 2, 1), (4, 4, 0), (2, 0, 4)])
def test_tiny_parameter_arithmetic(rank, h_v, h_l):
    model = build_model(tiny_cfg(None, lora_rank=rank, h_v=h_v, h_l=h_l))
    groups = expected_counts(128, 128, 4, 4, rank, h_v, h_l)
    assert model.parameter_groups() == groups
    assert model.trainable_parameters() == sum(groups.values())


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["ViT-B-32", "ViT-B-16"])
def test_vit_b_defaults_have_561200_trainable_parameters(backbone):
    model = build_model(DiscoVLAConfig(backbone=backbone, pretrained=None))
    assert model.parameter_groups() == {
        "vision_lora": 294_912,
        "vision_adapters": 52_256,
        "text_lora": 196_608,
        "text_adapters": 17_424,
    }
    assert model.parameter_groups() == expected_counts(768, 512, 12, 12, 8, 4, 2)
    assert model.trainable_parameters() == 561_200
    assert model.preprocess_cfg["size"] == (224, 224)
    with torch.no_grad():  # a tiny batch runs: 1 video x 2 frames, 2 pseudo captions
        z, v = model.encode_video(torch.randn(1, 2, 3, 224, 224))
        p = model.encode_pseudo_captions(model.tokenizer(CAPTIONS[:2]).view(1, 2, -1))
    assert z.shape == (1, 2, 512) and v.shape == (1, 512) and p.shape == (1, 2, 512)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(1, 2))


def test_frame_group_is_private_to_its_thread():
    seen = []
    with frame_group(FrameGroup("vision", num_frames=3)):
        assert active_group("vision").num_frames == 3 and active_group("text") is None
        worker = threading.Thread(target=lambda: seen.append(active_group("vision")))
        worker.start()
        worker.join()
    assert seen == [None] and active_group("vision") is None


def test_invalid_inputs_are_named(tiny_checkpoint):
    model = build_model(tiny_cfg(tiny_checkpoint))
    with pytest.raises(ValueError, match=r"\[B, F, 3, H, W\]"):
        model.encode_video(torch.randn(4, 3, 32, 32))
    with pytest.raises(ValueError, match="frame_mask"):
        model.encode_video(torch.randn(1, 4, 3, 32, 32), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"\[B, F, L\]"):
        model.encode_pseudo_captions(torch.ones(2, 32, dtype=torch.long))
    with pytest.raises(NotImplementedError, match="checkpointing"):
        model.set_grad_checkpointing(True)
    with pytest.raises(ValueError, match="h_v"):
        build_model(tiny_cfg(None, h_v=5))
    with pytest.raises(ValueError, match="lora_rank"):
        DiscoVLAConfig(lora_rank=0)
