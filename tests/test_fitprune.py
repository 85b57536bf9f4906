"""FitPrune (docs/methods.md): per-layer counts from retained attention mass, alpha fitted to the budget."""

from __future__ import annotations

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.fitprune import fit_counts


def fewest_reaching(mass: list[float], alpha: float) -> set[int]:
    """The fewest tokens, by descending mass, whose mass is >= (1 - alpha) of the total (a loop)."""
    total = sum(mass)
    kept, got = set(), 0.0
    for j in sorted(range(len(mass)), key=lambda j: -mass[j]):
        if got >= (1 - alpha) * total:
            break
        kept.add(j)
        got += mass[j]
    return kept


def brute_counts(cross, self_mass, alpha):
    return [max(1, len(fewest_reaching(c.tolist(), alpha) | fewest_reaching(s.tolist(), alpha)))
            for c, s in zip(cross, self_mass)]


def change_points(*masses):
    """Every alpha where a count may change: 1 - (retained fraction of the top-k tokens)."""
    pts = {0.0}
    for mass in masses:
        for row in mass.tolist():
            total, got = sum(row), 0.0
            for x in sorted(row, reverse=True):
                got += x
                pts.add(1 - got / total)
    return sorted(pts)


def test_fit_hand_example():
    # layer 0: cross and self prefer opposite tokens; layer 1: one token holds 97 % of both.
    # change points: 0, .01, .02, .03, .05, .2, .5; alpha is returned mid-interval
    cross = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.97, 0.01, 0.01, 0.01]])
    self_mass = torch.tensor([[0.05, 0.15, 0.3, 0.5], [0.97, 0.01, 0.01, 0.01]])
    # alpha in [.03, .05): layer 0 needs 97 % of each: all 4; layer 1 keeps its one token
    k, alpha = fit_counts(cross, self_mass, 5)
    assert k.tolist() == [4, 1] and alpha == pytest.approx(0.04)
    # 4 is not reachable (5 on [.03, .5), 3 from .5: {0} u {3} and {0}): the largest total below it
    k, alpha = fit_counts(cross, self_mass, 4)
    assert k.tolist() == [2, 1] and alpha == pytest.approx(0.75)
    # everything: alpha in [0, .01) keeps every token with mass
    k, alpha = fit_counts(cross, self_mass, 8)
    assert k.tolist() == [4, 4] and alpha == pytest.approx(0.005)
    # a budget below one per layer: the fewest there are
    assert fit_counts(cross, self_mass, 0)[0].tolist() == [2, 1]


def test_fit_meets_budget_with_fewest_tokens():
    torch.manual_seed(0)
    L, n = 6, 40
    cross = torch.rand(L, n) ** 4 * torch.linspace(0.2, 3, L)[:, None]
    self_mass = torch.rand(L, n) ** 2
    pts = change_points(cross, self_mass)
    for total in (20, 37, 90, 150, 230):
        k, alpha = fit_counts(cross, self_mass, total)
        assert int(k.sum()) == total  # exact: random masses have no ties
        assert k.tolist() == brute_counts(cross, self_mass, alpha)
        below = [p for p in pts if p <= alpha]
        assert len(below) >= 2
        # the interval just below alpha's (smaller alphas) keeps more than the budget
        assert sum(brute_counts(cross, self_mass, (below[-2] + below[-1]) / 2)) > total
        assert len(set(k.tolist())) > 1  # the layers do differ


def masses_from_views(views):
    """cross (guide rows) and self (chunk rows) head-max attention mass over the chunk, float64."""
    cross, self_mass = [], []
    for layer in sorted(views):
        v = views[layer]
        nq, nk = v.n + v.g, v.key.shape[1]
        k = v.key.double().repeat_interleave(v.query.shape[0] // v.key.shape[0], 0)
        visible = torch.arange(nk)[None, :] <= nk - nq + torch.arange(nq)[:, None]
        att = torch.softmax((v.query.double() @ k.transpose(-1, -2) * v.scaling).masked_fill(~visible, float("-inf")), -1)
        hm = att[:, :, v.cache_len : v.cache_len + v.n].amax(0)  # [n + g, n]
        cross.append(hm[v.n :].sum(0))
        self_mass.append(hm[: v.n].sum(0))
    return torch.stack(cross), torch.stack(self_mass)


def test_counts_in_engine_are_fewest_reaching_mass(arch, adapters, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    rec = Recorder(get_method("fitprune"))
    Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    m, last = rec.inner, max(rec.selected)
    cross, self_mass = masses_from_views(rec.views[last])
    counts = [int(s.numel()) for s in rec.selected[last]]
    L, n = len(counts), cross.shape[1]
    assert abs(sum(counts) - m.plan.keep_ratio * n * L) <= 1  # the budget, within rounding
    assert counts == brute_counts(cross, self_mass, m.last_alpha)
    assert 0 < m.last_alpha < 1


def test_bad_parameters_fail_clearly():
    with pytest.raises(ValueError, match="query_block must be >= 1"):
        get_method("fitprune", query_block=0)
    with pytest.raises(ValueError, match="has no parameter"):
        get_method("fitprune", alpha=0.1)  # alpha is fitted to the budget, not set
