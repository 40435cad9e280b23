"""Loss diagnostics: how hard each loss term pulls the trainable tensors, and in which direction.

With L = L_vid + α·L_img + β·L_KD, every term has its own gradient on the trainable tensors θ (the LoRA
matrices and fusion adapters, flattened into one vector):

    g_k      = ∂L_k/∂θ                       k ∈ {vid, img, kd} (the unweighted term)
    norm_k   = ‖g_k‖₂
    cos_k    = ⟨g_k, g_vid⟩ / (‖g_k‖·‖g_vid‖)  (1: pulls as L_vid does; 0: unrelated; < 0: against L_vid)

A term whose cosine with L_vid stays near or below 0 spends the shared adapters on something the
retrieval loss does not want; the weighted pull of a term on the update is ``weight · norm_k`` (α for
img, β for kd). The terms are reported as computed, whether or not their weight adds them to the total
(an ablation without PImgAlign still shows where L_img would pull, when captions are loaded).

Cost: one ``torch.autograd.grad`` per term through the step's own graph (kept with ``retain_graph``),
i.e. up to three extra backward passes at each diagnosed step and nothing at the others
(``TrainConfig.diagnose_every``). Under several processes each rank reports its own slice's gradient
(before DDP's all-reduce); the recipe records rank 0's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

TERMS = ("vid", "img", "kd")
REFERENCE = "vid"


def _flat_grad(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """∂loss/∂params as one fp32 vector (zeros for a tensor the loss does not reach)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
            for g, p in zip(grads, params, strict=True)
        ]
    )


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """⟨a, b⟩ / (‖a‖·‖b‖); NaN when either vector is zero (no direction to compare)."""
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    return float(a @ b / (na * nb))


def loss_diagnostics(
    losses: Mapping[str, torch.Tensor], params: Sequence[torch.Tensor]
) -> dict[str, dict[str, float]]:
    """``{term: {"value", "grad_norm", "cos_vid"}}`` for each term of ``losses`` that has a graph.

    ``losses``: the step's ``discovla_loss`` output (its graph is kept: call before the step's backward);
    ``params``: the trainable tensors. Terms without a graph (0 when no captions are loaded) are left out.
    """
    if REFERENCE not in losses or not losses[REFERENCE].requires_grad:
        raise ValueError(f"loss diagnostics need the {REFERENCE!r} term with its graph; got {sorted(losses)}")
    params = [p for p in params if p.requires_grad]
    grads = {
        term: _flat_grad(losses[term], params)
        for term in TERMS
        if term in losses and losses[term].requires_grad
    }
    return {
        term: {
            "value": float(losses[term].detach()),
            "grad_norm": float(g.norm()),
            "cos_vid": cosine(g, grads[REFERENCE]),
        }
        for term, g in grads.items()
    }
