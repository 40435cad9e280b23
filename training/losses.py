"""DiscoVLA's training losses as small pure functions (docs/method.md, "PImgAlign" and "AlignDistill").

Symbols (docs/method.md) -> arguments:
    t_i      query text feature of sample i         ``text``   [B, D]
    v̄_j      video feature of video j               ``video``  [B, D]
    p[i,t]   pseudo caption t of sample i            ``pseudo`` [B, T, D]  (T = F captions)
    z[j,f]   frame f of video j                      ``frames`` [B, F, D]
    λ        exp(logit_scale), frozen (100)          ``scale``

Every feature is expected L2-normalised (what ``training.model`` returns). The functions compute on the
batch they are given: under DDP pass the global batch (``training.distributed.gather_features``) so that
the negatives of every rank take part, as in the reference. No stop-gradient anywhere: the image-level
teacher of AlignDistill receives gradient too (docs/method.md). Inputs are upcast to float32 because
λ = 100 times a bf16 cosine loses the ranking precision the softmaxes need.

Memory: the cosine tensor C is B×B×T×F floats: 128·128·12·12·4 bytes = 9.4 MB for the reference batch,
plus a few same-sized intermediates for backward; the einsum costs B²·T·F·D ≈ 1.2 GFLOP at D = 512.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "symmetric_cross_entropy",
    "video_similarity",
    "video_contrastive_loss",
    "pimg_similarity",
    "pimg_align_loss",
    "align_distill_loss",
    "discovla_loss",
]


def symmetric_cross_entropy(sim: torch.Tensor, scale: float) -> torch.Tensor:
    """½ [CE_rows(λ·S) + CE_rows(λ·Sᵀ)] with the diagonal as positives (CLIP4Clip's CrossEn, both ways).

    CE_rows(X) = -(1/B) Σ_i log softmax_j(X[i, :])[i]. ``sim`` [B, B] = S, ``scale`` = λ.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(
            f"similarity must be a square [B, B] matrix with positives on the diagonal, got "
            f"{tuple(sim.shape)}"
        )
    target = torch.arange(sim.shape[0], device=sim.device)
    logits = scale * sim.float()  # [B, B]
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def video_similarity(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """S_vid[i,j] = cos(t_i, v̄_j): text [B, D], video [B, D] (normalised) -> [B, B]."""
    return torch.einsum("id,jd->ij", text.float(), video.float())  # [B_text, B_video]


def video_contrastive_loss(text: torch.Tensor, video: torch.Tensor, scale: float) -> torch.Tensor:
    """L_vid = ½ [CE(λ·S_vid) + CE(λ·S_vidᵀ)], S_vid[i,j] = cos(t_i, v̄_j).

    text = t [B, D], video = v̄ [B, D] (normalised), scale = λ.
    """
    return symmetric_cross_entropy(video_similarity(text, video), scale)


def pimg_similarity(pseudo: torch.Tensor, frames: torch.Tensor, scale: float) -> torch.Tensor:
    """S_img of PImgAlign: pseudo captions [B, T, D] × frames [B, F, D] -> [B, B] (rows: captions' sample).

        C[i,j,t,f] = <p[i,t], z[j,f]>
        a[i,j,t]   = max_f C[i,j,t,f]     s_t2v[i,j] = Σ_t softmax_t(λ·a[i,j,:]) · a[i,j,t]
        b[i,j,f]   = max_t C[i,j,t,f]     s_v2t[i,j] = Σ_f softmax_f(λ·b[i,j,:]) · b[i,j,f]
        S_img      = (s_t2v + s_v2t) / 2

    pseudo = p, frames = z (normalised), scale = λ. No masks: padded frames take part, as in the reference.
    """
    if pseudo.dim() != 3 or frames.dim() != 3:
        raise ValueError(
            f"pseudo captions must be [B, T, D] and frames [B, F, D], got {tuple(pseudo.shape)} "
            f"and {tuple(frames.shape)}"
        )
    cos = torch.einsum("itd,jfd->ijtf", pseudo.float(), frames.float())  # C [B, B, T, F]
    a = cos.amax(dim=3)  # [B, B, T]: best frame for each caption
    b = cos.amax(dim=2)  # [B, B, F]: best caption for each frame
    s_t2v = (torch.softmax(scale * a, dim=-1) * a).sum(-1)  # [B, B]
    s_v2t = (torch.softmax(scale * b, dim=-1) * b).sum(-1)  # [B, B]
    return (s_t2v + s_v2t) / 2


def pimg_align_loss(pseudo: torch.Tensor, frames: torch.Tensor, scale: float) -> torch.Tensor:
    """L_img = ½ [CE_rows(λ·S_img) + CE_rows(λ·S_imgᵀ)], S_img = :func:`pimg_similarity` (diagonal positives)."""
    return symmetric_cross_entropy(pimg_similarity(pseudo, frames, scale), scale)


def _kl_rows(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Σ_i KL(softmax(teacher_i) ‖ softmax(student_i)) over all rows (a sum, not a mean)."""
    log_p = torch.log_softmax(teacher_logits, dim=-1)  # log P_teacher
    log_q = torch.log_softmax(student_logits, dim=-1)  # log P_student
    return (log_p.exp() * (log_p - log_q)).sum()


def align_distill_loss(s_img: torch.Tensor, s_vid: torch.Tensor, scale: float) -> torch.Tensor:
    """L_KD = ½ (L_t2v + L_v2t), the image level teaching the video level.

        P_img = softmax_row(λ·S_img)   (teacher)      P_vid = softmax_row(λ·S_vid)   (student)
        L_t2v = 100 / B² · Σ_i KL(P_img[i] ‖ P_vid[i])
        L_v2t = the same on S_imgᵀ, S_vidᵀ

    s_img = S_img [B, B], s_vid = S_vid [B, B], scale = λ. The "/ B² × 100" normalisation is the
    reference's (a sum over rows divided by the number of matrix entries); keep it exact, it sets the
    weight of L_KD against the other losses. No stop-gradient: S_img (the teacher) gets gradient too.
    """
    if s_img.shape != s_vid.shape or s_img.dim() != 2:
        raise ValueError(
            f"S_img and S_vid must be [B, B] of the same shape, got {tuple(s_img.shape)} and "
            f"{tuple(s_vid.shape)}"
        )
    s_img, s_vid = scale * s_img.float(), scale * s_vid.float()
    entries = s_vid.numel()  # B²
    l_t2v = _kl_rows(s_img, s_vid) / entries * 100.0
    l_v2t = _kl_rows(s_img.t(), s_vid.t()) / entries * 100.0
    return (l_t2v + l_v2t) / 2


def discovla_loss(
    text: torch.Tensor,
    video: torch.Tensor,
    frames: torch.Tensor | None,
    pseudo: torch.Tensor | None,
    scale: float,
    *,
    alpha: float = 0.3,
    beta: float = 1.0,
) -> dict[str, torch.Tensor]:
    """L = L_vid + α·L_img + β·L_KD (docs/method.md: α = 0.3, β = 1.0) on one (global) batch.

    text = t [B, D], video = v̄ [B, D], frames = z [B, F, D], pseudo = p [B, T, D], scale = λ.
    Returns ``{"total", "vid", "img", "kd"}``. A term whose weight is 0 is not added to the total (an
    ablation); it is still reported when pseudo captions are given, and reported as 0 when they are not
    (``pseudo=None`` is only allowed with α = β = 0, i.e. plain L_vid training).
    """
    vid_sim = video_similarity(text, video)  # S_vid [B, B]
    l_vid = symmetric_cross_entropy(vid_sim, scale)
    zero = l_vid.new_zeros(())
    if pseudo is None or frames is None:
        if alpha or beta:
            raise ValueError(
                f"PImgAlign/AlignDistill (alpha={alpha}, beta={beta}) need frame features and "
                "pseudo-caption features; pass them, or set alpha=beta=0 for L_vid only"
            )
        return {"total": l_vid, "vid": l_vid, "img": zero, "kd": zero}
    img_sim = pimg_similarity(pseudo, frames, scale)  # S_img [B, B]
    if img_sim.shape != vid_sim.shape:
        raise ValueError(
            f"S_img {tuple(img_sim.shape)} and S_vid {tuple(vid_sim.shape)} differ: pseudo "
            "captions, frames, texts and videos must describe the same B samples"
        )
    l_img = symmetric_cross_entropy(img_sim, scale)
    l_kd = align_distill_loss(img_sim, vid_sim, scale)
    total = l_vid
    if alpha:
        total = total + alpha * l_img
    if beta:
        total = total + beta * l_kd
    return {"total": total, "vid": l_vid, "img": l_img, "kd": l_kd}
