"""training.metrics: hand-computed ranks (ties included), a brute-force argsort reference, multi-text
video-to-text, dual softmax, and the recall table renderers (training.reporting)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from training.metrics import dual_softmax, group_max, ranks, retrieval_metrics, text_video_metrics
from training.reporting import format_table, save_table, table_html

SIM = [[0.9, 0.1, 0.5], [0.8, 0.3, 0.7], [0.2, 0.6, 0.4]]


def test_hand_computed_ranks_and_metrics():
    # row 0: 0.9 is the best -> 0; row 1: 0.8 and 0.7 beat 0.3 -> 2; row 2: 0.6 beats 0.4 -> 1
    assert ranks(SIM).tolist() == [0, 2, 1]
    m = retrieval_metrics(SIM)
    assert m == pytest.approx({"R1": 100 / 3, "R5": 100.0, "R10": 100.0, "MdR": 2.0, "MnR": 2.0})
    # video-to-text ranks the columns: [0.9, 0.8, 0.2] -> 0, [0.1, 0.3, 0.6] -> 1, [0.5, 0.7, 0.4] -> 2
    both = text_video_metrics(SIM)
    assert both["v2t"] == pytest.approx({"R1": 100 / 3, "R5": 100.0, "R10": 100.0, "MdR": 2.0, "MnR": 2.0})
    assert ranks(np.array(SIM).T).tolist() == [0, 1, 2]


def test_ties_are_pessimistic_by_default_and_optimistic_on_request():
    sim = [
        [0.5, 0.5, 0.1],  # one tie          -> pessimistic 1, optimistic 0
        [0.2, 0.2, 0.2],  # all equal        -> 2, 0
        [0.95, 0.9, 0.9],
    ]  # one above, one tie -> 2, 1
    assert ranks(sim).tolist() == [1, 2, 2]
    assert ranks(sim, ties="optimistic").tolist() == [0, 0, 1]
    assert retrieval_metrics(np.zeros((4, 4)))["R1"] == 0.0  # a constant model does not score 100
    assert retrieval_metrics(np.zeros((4, 4)), ties="optimistic")["R1"] == 100.0
    with pytest.raises(ValueError, match="ties='random'"):
        ranks(sim, ties="random")


def test_median_of_an_even_count_and_k_thresholds():
    sim = np.full((12, 12), 0.0)
    np.fill_diagonal(sim, 1.0)
    sim[1, 2:7] = 2.0  # row 1: five better -> rank 5 (outside R@5, inside R@10)
    r = ranks(sim)
    assert r[1] == 5 and (np.delete(r, 1) == 0).all()
    m = retrieval_metrics(sim)
    assert m["R1"] == pytest.approx(100 * 11 / 12) and m["R5"] == pytest.approx(100 * 11 / 12)
    assert m["R10"] == 100.0 and m["MdR"] == 1.0 and m["MnR"] == pytest.approx(1 + 5 / 12)
    assert retrieval_metrics([[0.9, 0.1], [0.8, 0.3]])["MdR"] == 1.5  # median of ranks [0, 1] = 0.5


def test_against_brute_force_argsort_on_random_scores():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((50, 40))
    target = rng.integers(0, 40, 50)
    brute = [int(np.where(np.argsort(-sim[i], kind="stable") == target[i])[0][0]) for i in range(50)]
    assert ranks(sim, target).tolist() == brute
    assert ranks(torch.tensor(sim), torch.tensor(target)).tolist() == brute  # tensors too


def test_several_texts_per_video():
    # texts 0,1 describe video 0; texts 2,3 video 1; text 4 video 2
    sim = np.array([[0.9, 0.2, 0.1], [0.1, 0.5, 0.3], [0.3, 0.4, 0.8], [0.2, 0.7, 0.1], [0.6, 0.1, 0.5]])
    owner = [0, 0, 1, 1, 2]
    out = text_video_metrics(sim, owner)
    # t2v: text 0 -> 0; text 1 (0.1 vs 0.5, 0.3) -> 2; text 2 (0.4 vs 0.8) -> 1; text 3 -> 0; text 4 (0.5 vs 0.6) -> 1
    assert ranks(sim, owner).tolist() == [0, 2, 1, 0, 1]
    assert out["t2v"]["R1"] == pytest.approx(40.0)
    # v2t: M[v, u] = best text of video u for query video v
    m = group_max(sim, owner).numpy()
    loop = np.array([[max(sim[i, v] for i in range(5) if owner[i] == u) for u in range(3)] for v in range(3)])
    np.testing.assert_allclose(m, loop)
    # video 0: [0.9, 0.3, 0.6] -> 0; video 1: [0.5, 0.7, 0.1] -> 0; video 2: [0.3, 0.8, 0.5] -> 1
    assert ranks(m).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match=r"videos \[2\] have no text"):
        group_max(sim, [0, 0, 1, 1, 1])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="needs target"):
        ranks(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        ranks([[0.1, float("nan")], [0.2, 0.3]])
    with pytest.raises(ValueError, match=r"target columns must lie in \[0, 2\)"):
        ranks(np.zeros((2, 2)), [0, 5])


def test_dual_softmax_rescales_by_the_query_softmax():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(5, 4, generator=g, dtype=torch.float64) * 10
    out = dual_softmax(sim, temperature=2.0)
    for i in range(5):
        for j in range(4):
            prior = torch.exp(sim[i, j] / 2) / torch.exp(sim[:, j] / 2).sum()  # over queries of column j
            assert float(out[i, j]) == pytest.approx(float(sim[i, j] * prior), rel=1e-10)
    # a "hub" video that every text likes is pulled down: its score now depends on who else likes it
    hub = torch.tensor([[5.0, 1.0, 1.0], [5.0, 4.5, 1.0], [5.0, 1.0, 4.5]])  # video 0 tops every row
    assert ranks(hub).tolist() == [0, 1, 1] and ranks(dual_softmax(hub)).tolist() == [0, 0, 0]


def test_1k_by_1k_costs_about_one_sort():
    """Vectorised: 1k x 1k metrics cost a few row sorts, not a Python loop per text (which is ~100x more).

    Timed against ``torch.argsort`` of the same matrix on the same machine (best of 3 each), so that a
    loaded machine slows both sides alike.
    """

    def best_of_3(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    sim = torch.randn(1000, 1000) + 3 * torch.eye(1000)
    assert text_video_metrics(sim)["t2v"]["R1"] == retrieval_metrics(sim)["R1"]
    assert (
        best_of_3(lambda: text_video_metrics(sim)) < 10 * best_of_3(lambda: torch.argsort(sim, dim=1)) + 0.05
    )


def _result():
    return {
        "t2v": {"R1": 47.0, "R5": 72.1, "R10": 82.3, "MdR": 2.0, "MnR": 14.25},
        "v2t": {"R1": 47.7, "R5": 73.0, "R10": 83.0, "MdR": 2.0, "MnR": 10.5},
        "t2v_dsl": {"R1": 50.1, "R5": 75.0, "R10": 84.0, "MdR": 1.0, "MnR": 12.0},
        "num_texts": 1000,
        "num_videos": 1000,
        "decode_failed": [],
    }


def test_text_and_markdown_tables():
    text = format_table(_result())
    assert "text-to-video" in text and "47.0" in text and "47.7" in text and "14.2" in text
    assert "DSL re-scored*" in text and "test-set statistics" in text and "1000 texts x 1000 videos" in text
    md = format_table(_result(), markdown=True).splitlines()
    assert (
        md[0].startswith("| direction | R@1") and md[1].startswith("|---") and len(md) == 2 + 3 + 3
    )  # header, rows, blank + 2 notes
    plain = {k: v for k, v in _result().items() if k != "t2v_dsl"}
    assert "DSL" not in format_table(plain)
    with pytest.raises(KeyError, match="no recall rows"):
        format_table({"loss": 1.0})


def test_html_and_png_files(tmp_path):
    paths = save_table(_result(), tmp_path / "out", title="MSRVTT <1k-A>")
    assert json.loads(paths["json"].read_text())["t2v"]["R1"] == 47.0
    page = paths["html"].read_text()
    assert "<table>" in page and "MSRVTT &lt;1k-A&gt;" in page and "<td>82.3</td>" in page
    assert page == table_html(_result(), "MSRVTT <1k-A>")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 1000
    assert paths["markdown"].read_text().startswith("| direction")
