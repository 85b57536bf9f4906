"""Ada-KV on SnapKV scores (docs/methods.md): head-wise budgets, each KV head keeps its own
count (or, shared, the heads vote for one index per layer)."""

from __future__ import annotations

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.adakv import head_budgets, pool_scores, shared_keep_key
from retake.methods.base import budget_tokens, topk_sorted


def test_head_budgets_hand_example():
    # head 0 is dispersed, head 1 concentrated: the flattened top-4 holds 3 entries of head 0
    s = torch.tensor([[0.40, 0.35, 0.20, 0.05], [0.90, 0.02, 0.05, 0.03]])
    assert head_budgets(s, 2, 0.0).tolist() == [3, 1]
    # safeguard: round(0.5 * c_h + floor(0.5 * 2)) = round(2.5), round(1.5): halves to even, as
    # the authors' torch.round (half up would give [3, 2])
    assert head_budgets(s, 2, 0.5).tolist() == [2, 2]
    assert head_budgets(s, 2, 1.0).tolist() == [2, 2]  # uniform: SnapKV's B per head
    assert head_budgets(s, 9, 0.0).tolist() == [4, 4]  # at most n per head


def test_shared_index_hand_example():
    # both heads want token 1 (2 votes); tokens 0 and 2 are each one head's favourite
    s = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.0, 0.3, 0.6, 0.1]])
    assert head_budgets(s, 2, 0.2).tolist() == [2, 2]  # c = [2, 2] (0.6, 0.5, 0.3, 0.3)
    key = shared_keep_key(s, 2, 0.2)  # votes [1, 2, 1, 0]
    assert key.tolist() == pytest.approx([2.5, 4.3, 2.6, 0.1])
    assert topk_sorted(key, 2).tolist() == [1, 2]  # most votes first, then the highest score
    assert topk_sorted(s.amax(0), 2).tolist() == [0, 2]  # what a max-over-heads rule would keep
    # a concentrated head gives its votes away: head 1 gets 1 entry of the flattened top-4
    s = torch.tensor([[0.40, 0.35, 0.20, 0.05], [0.90, 0.02, 0.05, 0.03]])
    assert shared_keep_key(s, 2, 0.0).tolist() == pytest.approx([4.9, 2.35, 2.2, 0.05])


def test_pooling_matches_snapkv():
    x = torch.tensor([[0.0, 3.0, 0.0, 0.0, 6.0]])
    assert pool_scores(x, 3, "avgpool")[0].tolist() == pytest.approx([1.0, 1.0, 1.0, 2.0, 2.0])  # zero padding counted
    assert pool_scores(x, 3, "maxpool").tolist() == [[3.0, 3.0, 3.0, 6.0, 6.0]]
    assert torch.equal(pool_scores(x, 1, "avgpool"), x)


def test_window_and_budget_in_engine(arch, adapters, sampled):
    """Every layer keeps round(r n) tokens; the scores come from the last `window` guide queries
    only (a window of 1 gives a different selection than the default 32)."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    cfg = EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)
    sel = {}
    for window in (32, 1):
        rec = Recorder(get_method("adakv", window=window))
        Engine(ad, cfg).run(inputs, prompt, rec)
        for c, layers in rec.selected.items():
            k = budget_tokens(rec.plan.keep_ratio, rec.views[c][0].n)
            for layer, keep in enumerate(layers):
                # each head keeps its authors' count B_h of its own top tokens (head_budgets on
                # the scores the method computed, recomputed independently in tests/reference_scores.py)
                counts = keep.counts()
                assert len(counts) == rec.views[c][layer].key.shape[0]
                assert abs(sum(counts) - k * len(counts)) <= len(counts)  # H_kv * B, up to rounding
        sel[window] = [tuple(i.index.reshape(-1).tolist()) for c in sorted(rec.selected) for i in rec.selected[c]]
    assert rec.views[0][0].g > 1
    assert sel[32] != sel[1]
    # the heads really keep different numbers somewhere
    assert any(len(set(keep.counts())) > 1 for layers in rec.selected.values() for keep in layers)


def test_shared_head_selection_votes(arch, adapters, sampled):
    """head_selection=shared: one index per layer of round(r n) tokens, the top of the vote key."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    rec = Recorder(get_method("adakv", head_selection="shared"))
    Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    for c, layers in rec.selected.items():
        k = budget_tokens(rec.plan.keep_ratio, rec.views[c][0].n)
        assert [int(i.numel()) for i in layers] == [k] * len(layers)


def test_bad_parameters_fail_clearly():
    with pytest.raises(ValueError, match="window must be >= 1"):
        get_method("adakv", window=0)
    with pytest.raises(ValueError, match="kernel_size must be an odd integer >= 1"):
        get_method("adakv", kernel_size=4)
    with pytest.raises(ValueError, match="avgpool, maxpool"):
        get_method("adakv", pooling="mean")
    with pytest.raises(ValueError, match=r"floor_alpha must be in \[0, 1\]"):
        get_method("adakv", floor_alpha=-0.1)
    with pytest.raises(ValueError, match="no parameter"):
        get_method("adakv", query_block=0)
