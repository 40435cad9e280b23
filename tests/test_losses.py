"""training.losses against direct loop-based computations of the formulas in docs/method.md on small random tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    align_distill_loss,
    discovla_loss,
    pimg_align_loss,
    pimg_similarity,
    video_contrastive_loss,
)

LAMBDA = 100.0


def _unit(*shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _ce_rows_loop(logits: torch.Tensor) -> float:
    """-(1/B) Σ_i log( exp(X[i,i]) / Σ_j exp(X[i,j]) )."""
    b = logits.shape[0]
    total = 0.0
    for i in range(b):
        row = [float(logits[i, j]) for j in range(b)]
        top = max(row)
        total -= row[i] - (top + math.log(sum(math.exp(x - top) for x in row)))
    return total / b


def _s_img_loop(p: torch.Tensor, z: torch.Tensor, lam: float) -> torch.Tensor:
    b, nt, _ = p.shape
    nf = z.shape[1]
    out = torch.zeros(b, b, dtype=torch.float64)
    for i in range(b):
        for j in range(b):
            c = [[float(p[i, t] @ z[j, f]) for f in range(nf)] for t in range(nt)]
            a = [max(c[t]) for t in range(nt)]  # max over frames
            bb = [max(c[t][f] for t in range(nt)) for f in range(nf)]  # max over captions

            def pool(v):
                w = [math.exp(lam * (x - max(v))) for x in v]
                return sum(wi * x for wi, x in zip(w, v, strict=True)) / sum(w)

            out[i, j] = (pool(a) + pool(bb)) / 2
    return out


def _kl_loop(teacher: torch.Tensor, student: torch.Tensor) -> float:
    """Σ_i Σ_j P[i,j] log(P[i,j] / Q[i,j]) with P, Q row softmaxes of the logits."""
    total = 0.0
    for i in range(teacher.shape[0]):
        p = torch.softmax(teacher[i], 0)
        q = torch.softmax(student[i], 0)
        total += sum(float(p[j] * (p[j].log() - q[j].log())) for j in range(teacher.shape[1]))
    return total


def test_video_contrastive_loss_matches_loop():
    t, v = _unit(5, 16, seed=0), _unit(5, 16, seed=1)
    s = t @ v.t()
    expected = (_ce_rows_loop(LAMBDA * s) + _ce_rows_loop(LAMBDA * s.t())) / 2
    assert float(video_contrastive_loss(t, v, LAMBDA)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("lam", [LAMBDA, 3.0])
def test_pimg_similarity_matches_loop(lam):
    p, z = _unit(4, 3, 16, seed=2), _unit(4, 5, 16, seed=3)  # T = 3 captions, F = 5 frames
    got = pimg_similarity(p, z, lam)
    torch.testing.assert_close(got.double(), _s_img_loop(p, z, lam), rtol=1e-5, atol=1e-6)


def test_pimg_align_loss_matches_loop():
    p, z = _unit(4, 3, 16, seed=4), _unit(4, 3, 16, seed=5)
    s = _s_img_loop(p, z, LAMBDA)
    expected = (_ce_rows_loop(LAMBDA * s) + _ce_rows_loop(LAMBDA * s.t())) / 2
    assert float(pimg_align_loss(p, z, LAMBDA)) == pytest.approx(expected, rel=1e-5)


def test_align_distill_is_kl_of_image_teacher_over_b_squared_times_100():
    g = torch.Generator().manual_seed(6)
    s_img, s_vid = torch.rand(6, 6, generator=g) * 0.2, torch.rand(6, 6, generator=g) * 0.2
    b2 = 36
    t2v = _kl_loop(LAMBDA * s_img, LAMBDA * s_vid) / b2 * 100
    v2t = _kl_loop(LAMBDA * s_img.t(), LAMBDA * s_vid.t()) / b2 * 100
    assert float(align_distill_loss(s_img, s_vid, LAMBDA)) == pytest.approx((t2v + v2t) / 2, rel=1e-5)
    # direction: KL(P_img ‖ P_vid), not the reverse (KL is asymmetric)
    reverse = (
        _kl_loop(LAMBDA * s_vid, LAMBDA * s_img) + _kl_loop(LAMBDA * s_vid.t(), LAMBDA * s_img.t())
    ) / 2
    assert float(align_distill_loss(s_img, s_vid, LAMBDA)) != pytest.approx(reverse / b2 * 100, rel=1e-3)


def test_align_distill_normalisation_is_b_squared_not_b():
    """Tiling a batch k times keeps Σ-rows/B² comparable: the loss of k copies equals the sum over B² entries."""
    g = torch.Generator().manual_seed(7)
    s_img, s_vid = torch.rand(3, 3, generator=g), torch.rand(3, 3, generator=g)
    one = float(align_distill_loss(s_img, s_vid, 10.0))
    # a block-diagonal batch of two copies with strongly negative off-blocks: each row's KL is unchanged,
    # there are twice as many rows and four times as many entries -> the loss halves under /B²
    big_img = torch.full((6, 6), -100.0)
    big_vid = torch.full((6, 6), -100.0)
    for k in (0, 3):
        big_img[k : k + 3, k : k + 3], big_vid[k : k + 3, k : k + 3] = s_img, s_vid
    assert float(align_distill_loss(big_img, big_vid, 10.0)) == pytest.approx(one / 2, rel=1e-4)


def test_align_distill_is_zero_when_levels_agree():
    s = torch.rand(4, 4)
    assert float(align_distill_loss(s, s.clone(), LAMBDA)) == pytest.approx(0.0, abs=1e-6)


def test_discovla_total_and_parts():
    t, v = _unit(4, 16, seed=8), _unit(4, 16, seed=9)
    z, p = _unit(4, 3, 16, seed=10), _unit(4, 3, 16, seed=11)
    out = discovla_loss(t, v, z, p, LAMBDA, alpha=0.3, beta=1.0)
    s_img = _s_img_loop(p, z, LAMBDA)
    s_vid = t @ v.t()
    l_vid = (_ce_rows_loop(LAMBDA * s_vid) + _ce_rows_loop(LAMBDA * s_vid.t())) / 2
    l_img = (_ce_rows_loop(LAMBDA * s_img) + _ce_rows_loop(LAMBDA * s_img.t())) / 2
    l_kd = (
        (_kl_loop(LAMBDA * s_img, LAMBDA * s_vid) + _kl_loop(LAMBDA * s_img.t(), LAMBDA * s_vid.t()))
        / 2
        / 16
        * 100
    )
    assert float(out["vid"]) == pytest.approx(l_vid, rel=1e-5)
    assert float(out["img"]) == pytest.approx(l_img, rel=1e-5)
    assert float(out["kd"]) == pytest.approx(l_kd, rel=1e-5)
    assert float(out["total"]) == pytest.approx(l_vid + 0.3 * l_img + 1.0 * l_kd, rel=1e-5)


def test_teacher_side_receives_gradient_from_distillation():
    """No stop-gradient: L_KD alone sends gradient into the pseudo captions and frames (S_img's inputs)."""
    t, v = _unit(4, 16, seed=12).float(), _unit(4, 16, seed=13).float()
    z = _unit(4, 3, 16, seed=14).float().requires_grad_()
    p = _unit(4, 3, 16, seed=15).float().requires_grad_()
    kd = discovla_loss(t, v, z, p, LAMBDA)["kd"]
    kd.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_ablations_skip_terms_and_none_needs_zero_weights():
    t, v = _unit(4, 16, seed=16).float(), _unit(4, 16, seed=17).float()
    z = _unit(4, 3, 16, seed=18).float().requires_grad_()
    p = _unit(4, 3, 16, seed=19).float().requires_grad_()
    out = discovla_loss(t, v, z, p, LAMBDA, alpha=0.0, beta=0.0)
    assert float(out["total"]) == pytest.approx(float(out["vid"]))
    assert float(out["img"].detach()) > 0 and float(out["kd"].detach()) > 0  # still reported
    only_vid = discovla_loss(t, v, None, None, LAMBDA, alpha=0.0, beta=0.0)
    assert float(only_vid["img"]) == 0.0 and float(only_vid["total"]) == pytest.approx(float(out["vid"]))
    with pytest.raises(ValueError, match="alpha=0.3"):
        discovla_loss(t, v, None, None, LAMBDA)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        video_contrastive_loss(_unit(3, 8, seed=0), _unit(4, 8, seed=1), LAMBDA)
    with pytest.raises(ValueError, match="B, T, D"):
        pimg_similarity(_unit(3, 8, seed=0), _unit(3, 2, 8, seed=1), LAMBDA)


def test_reference_batch_fits_and_is_fast():
    """B = 128, F = 12, D = 512 (the reference's global batch): forward + backward of the full loss."""
    t, v = _unit(128, 512, seed=20).float(), _unit(128, 512, seed=21).float()
    z = _unit(128, 12, 512, seed=22).float().requires_grad_()
    p = _unit(128, 12, 512, seed=23).float().requires_grad_()
    out = discovla_loss(t, v, z, p, LAMBDA)
    out["total"].backward()
    assert torch.isfinite(out["total"]) and z.grad.shape == z.shape
