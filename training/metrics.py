"""Retrieval metrics (CLIP4Clip definitions, docs/method.md "Evaluation"), dual-softmax re-scoring.

For a similarity matrix ``sim`` [N_query, N_candidate] and the true candidate ``target[i]`` of query i:

    rank_i = #{j : sim[i,j] > sim[i,target_i]}  +  #{j ≠ target_i : sim[i,j] = sim[i,target_i]}   (0-based)
    R@k    = 100 · mean_i [rank_i < k]          MdR = median_i(rank_i) + 1          MnR = mean_i(rank_i) + 1

Ties are counted **pessimistically**: a candidate scoring exactly as much as the true one is ranked above
it, so a collapsed model (all similarities equal) gets rank N-1 for every query: R@1 = 0, MnR = N.
``ties="optimistic"`` counts strictly better candidates only (the same matrix: R@1 = 100, MnR = 1).
CLIP4Clip does neither. Its ``compute_metrics`` sorts each row of -sim, subtracts the true score and
keeps *every* position where the difference is 0: a query whose true score ties with t other candidates
adds t+1 ranks (its whole tie block, k..k+t with k the strictly better count) to the list that R@k, MdR
and MnR average over, so the denominator grows beyond the number of queries; the all-equal matrix gives
R@1 = 100/N and MnR = (N+1)/2 there. Its multi-sentence path ranks with a double ``torch.argsort``,
where tied entries keep whatever order the sort returns. Without ties the three agree. Real-valued
features practically never tie; the rule makes the result deterministic when they do. NaN similarities
are refused.

Several texts per video (MSRVTT train-style): text-to-video ranks every text against all videos; for
video-to-text, CLIP4Clip's multi-sentence rule represents each video's group of texts by its best text,
M[v,u] = max_{i: video(i)=u} sim[i,v], and ranks the diagonal of M (:func:`group_max`).

Dual softmax (DSL, CAMoE): S' = S ⊙ softmax(S / τ) with the softmax over the *queries* (dim 0), S the
λ-scaled similarity. It uses the statistics of the whole test set, so its numbers are reported separately
and labelled; DiscoVLA itself reports no post-processing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "METRIC_NAMES",
    "ranks",
    "retrieval_metrics",
    "group_max",
    "text_video_metrics",
    "dual_softmax",
]

METRIC_NAMES = ("R1", "R5", "R10", "MdR", "MnR")
TIES = ("pessimistic", "optimistic")


def _as_tensor(sim) -> torch.Tensor:
    sim = torch.as_tensor(np.asarray(sim) if not isinstance(sim, torch.Tensor) else sim)
    if sim.dim() != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(
            f"similarity must be a non-empty 2-D [queries, candidates] matrix, got {tuple(sim.shape)}"
        )
    if torch.isnan(sim).any():
        raise ValueError(f"similarity has {int(torch.isnan(sim).sum())} NaN entries; fix the features first")
    return sim.detach().cpu().double()


def _targets(target, sim: torch.Tensor) -> torch.Tensor:
    if target is None:
        if sim.shape[0] != sim.shape[1]:
            raise ValueError(
                f"a {tuple(sim.shape)} similarity needs target=[true column of each row]; "
                "only a square matrix defaults to the diagonal"
            )
        return torch.arange(sim.shape[0])
    target = torch.as_tensor(target, dtype=torch.long).cpu()
    if target.shape != (sim.shape[0],):
        raise ValueError(
            f"target must hold one column per row ({sim.shape[0]}), got shape {tuple(target.shape)}"
        )
    if target.min() < 0 or target.max() >= sim.shape[1]:
        raise ValueError(
            f"target columns must lie in [0, {sim.shape[1]}), got {int(target.min())}..{int(target.max())}"
        )
    return target


def ranks(sim, target=None, *, ties: str = "pessimistic") -> np.ndarray:
    """0-based rank of each row's true column (module docstring); ``target`` defaults to the diagonal."""
    if ties not in TIES:
        raise ValueError(f"ties={ties!r}; expected one of {TIES}")
    sim = _as_tensor(sim)
    target = _targets(target, sim)
    positive = sim.gather(1, target[:, None])  # [N, 1] score of the true candidate
    rank = (sim > positive).sum(1)  # strictly better candidates
    if ties == "pessimistic":
        rank += (sim == positive).sum(1) - 1  # equal candidates other than the true one
    return rank.numpy()


def retrieval_metrics(sim, target=None, *, ties: str = "pessimistic") -> dict[str, float]:
    """``{"R1", "R5", "R10", "MdR", "MnR"}`` of ``sim`` [N_query, N_candidate] (R@k in percent)."""
    r = ranks(sim, target, ties=ties)
    out = {f"R{k}": float(100.0 * np.mean(r < k)) for k in (1, 5, 10)}
    out["MdR"] = float(np.median(r) + 1)
    out["MnR"] = float(np.mean(r) + 1)
    return out


def group_max(sim, text_to_video: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """[N_text, N_video] -> M [N_video, N_video], M[v,u] = max over texts i of video u of sim[i,v].

    Rows: query videos; columns: candidate videos standing for their group of texts (video-to-text).
    """
    sim = _as_tensor(sim)
    owner = _targets(text_to_video, sim)
    n_video = sim.shape[1]
    if torch.bincount(owner, minlength=n_video).min() == 0:
        missing = torch.nonzero(torch.bincount(owner, minlength=n_video) == 0).flatten()[:5].tolist()
        raise ValueError(f"videos {missing} have no text; every video needs at least one for video-to-text")
    index = owner[:, None].expand(-1, n_video)  # [N_text, N_video]: group u of each text row
    out = torch.full((n_video, n_video), float("-inf"), dtype=sim.dtype)  # [u, v] before transposing
    out = out.scatter_reduce(0, index, sim, reduce="amax")  # out[u, v] = max_{i in u} sim[i, v]
    return out.t()  # [v, u]


def text_video_metrics(sim, text_to_video=None, *, ties: str = "pessimistic") -> dict[str, dict[str, float]]:
    """``{"t2v": ..., "v2t": ...}`` for sim [N_text, N_video]; ``text_to_video[i]`` = video of text i.

    One text per video (``text_to_video=None``, square ``sim``): v2t ranks the columns, i.e. ``sim``ᵀ.
    """
    if text_to_video is None:
        sim = _as_tensor(sim)
        return {"t2v": retrieval_metrics(sim, ties=ties), "v2t": retrieval_metrics(sim.t(), ties=ties)}
    return {
        "t2v": retrieval_metrics(sim, text_to_video, ties=ties),
        "v2t": retrieval_metrics(group_max(sim, text_to_video), ties=ties),
    }


def dual_softmax(sim: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """DSL re-scoring of λ-scaled ``sim`` [N_query, N_candidate]: S ⊙ softmax_queries(S / τ) (dim 0).

    For video-to-text pass the transposed matrix (rows = videos). Reported separately (module docstring).
    """
    sim = torch.as_tensor(sim).double()
    return sim * torch.softmax(sim / temperature, dim=0)
