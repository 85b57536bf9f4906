"""The pre-LLM pruners against their definitions on hand-computed cases (EVS, VidCom2, FastVID)
and the shared budget helpers; each then through the real engine (tests/test_all_methods.py)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.allocation import capped_counts, fit_grid, input_budget, keep_grid_tokens
from retake.methods.evs import evs_mask
from retake.methods.fastvid import density_scores, dyseg, frame_attention
from retake.methods.vidcom2 import frame_budgets, gaussian_similarity
from tests_helpers import plan_of


# -- budget helpers ------------------------------------------------------------------------

def test_capped_counts_share_by_weight_and_refill_what_a_cap_refuses():
    assert capped_counts(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([10, 10, 10]), 8).tolist() == [2, 2, 4]
    # the third is capped at 3: the other 5 go to the first two, 1:1
    assert capped_counts(torch.tensor([1.0, 1.0, 8.0]), torch.tensor([10, 10, 3]), 8).tolist() == [3, 2, 3]
    assert capped_counts(torch.tensor([0.0, 0.0]), torch.tensor([2, 6]), 4).tolist() == [1, 3]  # by size
    assert capped_counts(torch.tensor([1.0, 1.0]), torch.tensor([2, 2]), 9).tolist() == [2, 2]  # all there is
    assert capped_counts(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([5, 5, 5]), 4).sum() == 4


def test_fit_grid_counts_a_steps_text_with_its_first_token():
    """Qwen3-VL style: 4 steps of 3 grid tokens, each led by 2 text tokens; a budget of 7 fits a
    whole step and its text (3 + 2); a fourth token would open the second step (4 + 4 = 8)."""
    plan = plan_of(steps=4, per_step=3, text_per_step=2, r=7 / 20)
    assert input_budget(plan) == 7

    def first_tokens(G):  # G tokens filling steps in order
        keep = torch.zeros(4, 3, dtype=torch.bool)
        keep.view(-1)[:G] = True
        return keep

    keep, G = fit_grid(plan, first_tokens)
    assert G == 3 and torch.equal(keep, keep_grid_tokens(plan, first_tokens(3)))
    assert int(keep.sum()) == 3 + 2 and keep[:5].all() and not keep[5:].any()  # step 0: its text, its 3 tokens
    assert int(keep_grid_tokens(plan, first_tokens(4)).sum()) == 8  # one more opens step 1


# -- EVS -------------------------------------------------------------------------------------

def test_evs_keeps_the_first_step_then_the_largest_changes():
    d = torch.tensor([[1.0, 1.0], [0.1, 0.7], [0.7, 0.2], [0.05, 0.7]])  # d[0] is replaced by 255
    assert evs_mask(d, 3).tolist() == [[True, True], [False, True], [False, False], [False, False]]  # ties: earlier
    assert evs_mask(d, 5).tolist() == [[True, True], [False, True], [True, False], [False, True]]
    assert evs_mask(d, 1).tolist() == [[True, False], [False, False], [False, False], [False, False]]


def test_evs_through_the_engine_meets_the_budget(arch, adapters, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, get_method("evs"))
    assert out.kv_tokens_per_layer == [out.kv_tokens_per_layer[0]] * ad.num_layers
    assert out.kv_tokens_per_layer[0] <= budget


# -- VidCom2 -----------------------------------------------------------------------------------

def test_vidcom2_frame_budgets_follow_uniqueness():
    # frame 2 is least like the video (lowest mean similarity): it gets the most tokens
    v = torch.tensor([[3.0, 3.0, 3.0, 3.0], [2.9, 2.9, 2.9, 2.9], [1.0, 1.0, 1.0, 1.0]])
    k = frame_budgets(v, ratio=0.5, temperature=0.01)
    u = -v.mean(-1)
    q = torch.softmax((u - u.max()) / 0.01, 0)
    expected = torch.floor((0.5 * (1 + q - q.mean())).clamp(max=1) * 4 + 0.5).clamp(min=1)
    # q ~ (0, 0, 1): frame 2 gets 0.5 (1 + 1 - 1/3) 4 = 3.3 -> 3, the others 0.5 (2/3) 4 = 1.3 -> 1
    assert k.tolist() == expected.long().tolist() == [1, 1, 3]
    assert frame_budgets(v, ratio=0.05, min_tokens=0).tolist() == [0, 0, 0]


def test_vidcom2_gaussian_similarity_by_hand():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    c = torch.zeros(2)
    g = gaussian_similarity(x, c)
    assert g[0] == pytest.approx(5.0)
    assert g[1] == pytest.approx(sum(math.exp(-1 / (2 * 2.0**k)) for k in range(-3, 2)))


# -- FastVID --------------------------------------------------------------------------------

def test_fastvid_dyseg_cuts_at_the_lowest_similarities_and_below_tau():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.0, 1.0], [0.7, 0.7], [0.7, 0.71]])
    # similarities: ~1, 0.01, 1, 0.707, ~1 -> c = 2 cuts after frame 1 (the lowest); tau 0.8 also after frame 3
    assert dyseg(f, c=2, tau=0.8) == [2, 2, 2]
    assert dyseg(f, c=2, tau=0.5) == [2, 4]
    assert dyseg(f, c=1, tau=-1.0) == [6]
    assert dyseg(f[:1], c=8, tau=0.9) == [1]


def test_fastvid_density_scores_by_hand():
    """Three tokens in one frame, 1-D: 0, 0.1, 5 (D = 1, k = 2). Densities exp(-mean of the 2
    smallest squared distances): 0 and 0.1 share exp(-0.005); 5 has exp(-(4.9^2)/2). The densest
    (the lower index of the tie) gets the largest distance; the others their distance to it."""
    x = torch.tensor([[[0.0], [0.1], [5.0]]])
    s = density_scores(x, k=2)[0]
    rho = [math.exp(-(0.1**2) / 2), math.exp(-(0.1**2) / 2), math.exp(-(4.9**2) / 2)]
    assert s.tolist() == pytest.approx([5.0 * rho[0], 0.1 * rho[1], 4.9 * rho[2]], rel=1e-5)


def test_fastvid_salient_are_the_frame_attention_top_and_merges_weigh_the_anchor():
    plan = plan_of(steps=8, per_step=6, r=0.5, hidden=8, steps_per_chunk=4)
    m = get_method("fastvid", d=0.4, dtm_p=4, dyseg_c=1, dyseg_tau=-1.0)  # one segment
    m.begin(plan)
    idx = plan.grid_index()
    x = plan.features[idx]
    att = frame_attention(x)
    retained = 3  # round(24 / 8)
    salient = int(0.4 * retained)
    for t in range(8):
        assert set(torch.nonzero(m.salient[t]).flatten().tolist()) == set(att[t].topk(salient).indices.tolist())
    # anchor frames 0 and 4 share the segment's 8 x 2 contextual tokens: 8 each, capped at the 5 candidates
    fed = plan.input_keep[idx]  # [T, P]
    assert fed[[0, 4]].sum(1).tolist() == [salient + 5, salient + 5]
    assert fed[[1, 2, 3, 5, 6, 7]].sum() == 6 * salient  # other frames: their salient tokens only
    index, embeds = plan.input_updates
    assert len(index) == int(fed[[0, 4]].sum()) - 2 * salient
    assert int(fed.sum()) <= input_budget(plan)
    assert torch.isfinite(embeds).all() and not torch.equal(embeds, plan.features[index])  # merged, not copied


def test_fastvid_merge_formula_on_a_hand_case():
    """One segment of 2 frames, 2 candidates each, one anchor frame, 2 contextual tokens:
    tokens (1,0) (0,1) in frame 0, (1,0.1) (0.1,1) in frame 1; anchors are frame 0's two tokens;
    each joins its own direction: merged = 0.6 x anchor + 0.4 x mean(joined)."""
    m = get_method("fastvid", d=0.0, dtm_p=2, dyseg_c=1, dyseg_tau=-1.0, k=1)
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.1], [0.1, 1.0]]])
    m.segments = [2]
    keep = torch.zeros(2, 2, dtype=torch.bool)
    anchors, merged = m._merge(x, ~keep, 2, keep)
    assert sorted(anchors) == [(0, 0), (0, 1)]
    by = dict(zip(anchors, merged))
    assert torch.allclose(by[(0, 0)], 0.6 * x[0, 0] + 0.4 * (x[0, 0] + x[1, 0]) / 2)
    assert torch.allclose(by[(0, 1)], 0.6 * x[0, 1] + 0.4 * (x[0, 1] + x[1, 1]) / 2)


@pytest.mark.parametrize("name", ["vidcom2", "fastvid", "evs", "random"])
def test_a_budget_under_one_token_per_frame_is_still_spent(name):
    """32 frames of 4 tokens at r = 0.05: 6 tokens for 32 frames. VidCom2's per-frame rounding
    alone would keep none (each frame's share rounds to 0) and FastVID's per-frame count would be
    0; both spend the budget (the most unique frames / the segments' anchors get the tokens)."""
    plan = plan_of(steps=32, per_step=4, r=0.05, hidden=8, steps_per_chunk=8)
    get_method(name).begin(plan)
    kept = int(plan.input_keep.sum())
    assert kept == input_budget(plan) == 6 or (name == "fastvid" and 0 < kept <= 6)
