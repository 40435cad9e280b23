"""Loss diagnostics (training.diagnostics): per-term gradient norms and cosines with L_vid's gradient.

Checked against a hand computation on the tiny DiscoVLA model: one fresh forward and ``backward`` per
loss term, the ``.grad`` of every trainable tensor flattened, the cosine summed element by element.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import randomize_trainables
from training.diagnostics import loss_diagnostics
from training.losses import discovla_loss
from training.model import DiscoVLAConfig, build_model

B, F, L = 4, 4, 8


def _tiny_model():
    torch.manual_seed(0)
    model = build_model(DiscoVLAConfig(backbone="DiscoVLA-Tiny", pretrained=None, num_frames=F, h_v=2, h_l=1))
    randomize_trainables(model)  # away from the zero LoRA-B init, so that every tensor has a gradient
    return model


def _inputs():
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(1, 400, (B * (F + 1), L), generator=g)
    tokens[:, -1] = 49407  # EOT: open_clip's feature position
    return {
        "frames": torch.randn(B, F, 3, 32, 32, generator=g),
        "frame_mask": torch.ones(B, F, dtype=torch.long),
        "text": tokens[:B],
        "captions": tokens[B:].view(B, F, L),
    }


def _losses(model, inputs):
    out = model(**inputs)
    return discovla_loss(
        out["text_feats"], out["video_feats"], out["frame_feats"], out["caption_feats"], 100.0
    )


def _hand_gradient(model, inputs, term: str) -> list[float]:
    """∂L_term/∂θ by a fresh forward and .backward(), every trainable tensor flattened in model order."""
    model.zero_grad(set_to_none=True)
    _losses(model, inputs)[term].backward()
    flat = []
    for p in model.parameters():
        if p.requires_grad:
            flat += (p.grad if p.grad is not None else torch.zeros_like(p)).flatten().tolist()
    return flat


def test_cosines_and_norms_equal_a_hand_computation():
    model, inputs = _tiny_model(), _inputs()
    params = [p for p in model.parameters() if p.requires_grad]
    diag = loss_diagnostics(_losses(model, inputs), params)
    assert set(diag) == {"vid", "img", "kd"}
    hand = {term: _hand_gradient(model, inputs, term) for term in diag}
    for term, g in hand.items():
        dot = sum(a * b for a, b in zip(g, hand["vid"], strict=True))
        norm = math.sqrt(sum(a * a for a in g))
        norm_vid = math.sqrt(sum(a * a for a in hand["vid"]))
        assert diag[term]["grad_norm"] == pytest.approx(norm, rel=1e-4), term
        assert diag[term]["cos_vid"] == pytest.approx(dot / (norm * norm_vid), abs=1e-4), term
        assert diag[term]["value"] == pytest.approx(float(_losses(model, inputs)[term].detach()), rel=1e-5), (
            term
        )
    assert diag["vid"]["cos_vid"] == pytest.approx(1.0, abs=1e-5)
    assert all(abs(diag[t]["cos_vid"]) < 0.999 for t in ("img", "kd"))  # the terms pull elsewhere


def test_diagnostics_leave_the_step_gradient_unchanged():
    """The extra backward passes keep the graph: the step's own backward gives the usual gradient."""
    model, inputs = _tiny_model(), _inputs()
    params = [p for p in model.parameters() if p.requires_grad]
    expected = _hand_gradient(model, inputs, "total")
    model.zero_grad(set_to_none=True)
    losses = _losses(model, inputs)
    loss_diagnostics(losses, params)
    assert all(p.grad is None for p in params)  # autograd.grad accumulates nothing
    losses["total"].backward()
    got = [v for p in params for v in p.grad.flatten().tolist()]
    assert got == pytest.approx(expected, abs=1e-6)


def test_terms_without_a_graph_are_left_out_and_vid_is_required():
    model, inputs = _tiny_model(), _inputs()
    out = model(frames=inputs["frames"], frame_mask=inputs["frame_mask"], text=inputs["text"])
    losses = discovla_loss(out["text_feats"], out["video_feats"], None, None, 100.0, alpha=0, beta=0)
    diag = loss_diagnostics(losses, list(model.parameters()))
    assert list(diag) == ["vid"]
    with pytest.raises(ValueError, match="'vid' term"):
        loss_diagnostics({"img": losses["vid"].detach()}, list(model.parameters()))


@pytest.mark.slow
def test_a_training_run_logs_diagnostics_and_draws_them(tmp_path):
    """diagnose_every=3 over 6 steps: records at steps 1, 3 and 6 (metrics.jsonl), a third curves panel."""
    from PIL import Image

    from tests.helpers import colour_captions, colour_videos, tiny_config
    from training.recipe import TrainRecipe
    from training.reporting import read_metrics

    items = colour_videos(tmp_path / "videos")
    captions = colour_captions(tmp_path / "captions", items, frames=4)
    cfg = tiny_config(tmp_path / "run", captions=str(captions), epochs=6, diagnose_every=3, log_every=2)
    TrainRecipe(cfg, train_items=items, eval_items=items).setup().train()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    diag = {r["step"]: r["diag"] for r in records if "diag" in r}
    assert sorted(diag) == [1, 3, 6]
    for d in diag.values():
        assert set(d) == {"vid", "img", "kd"} and d["vid"]["cos_vid"] == pytest.approx(1.0, abs=1e-4)
        assert all(abs(d[t]["cos_vid"]) <= 1 + 1e-5 and d[t]["grad_norm"] > 0 for t in d)
    assert all("diag" not in r for r in records if r["step"] not in diag)
    assert Image.open(tmp_path / "run" / "curves.png").size[0] == 1500  # three panels
