"""The pre-LLM pruners against their definitions on hand-computed cases (EVS, VidCom2; FastVID
in tests/test_fastvid.py) and the shared budget helpers; each then through the real engine
(tests/test_all_methods.py)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.allocation import capped_counts, fit_grid, input_budget, keep_grid_tokens
from retake.methods.evs import evs_mask
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


@pytest.mark.parametrize("name", ["vidcom2", "fastvid", "evs", "random"])
def test_a_budget_under_one_token_per_frame_is_still_spent(name):
    """32 frames of 4 tokens at r = 0.05: 6 tokens for 32 frames. VidCom2's per-frame rounding
    alone would keep none (each frame's share rounds to 0) and FastVID's per-frame count would be
    0 (its authors' code keeps nothing); both spend the budget (the most unique frames / the
    segments' anchor frames get the tokens)."""
    plan = plan_of(steps=32, per_step=4, r=0.05, hidden=8, steps_per_chunk=8)
    get_method(name).begin(plan)
    kept = int(plan.input_keep.sum())
    assert kept == input_budget(plan) == 6
