"""FlexSelect and AdaptToken against their definitions (docs/methods.md) on hand-computed cases:
the reference-layer score, how the budget is shared over the groups, the response entropy, the
Lite early stop. The engine side of their two passes is tests/test_two_pass.py."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.adaptoken import response_entropy
from retake.methods.base import LayerView
from retake.methods.flexselect import default_reference_layer, reference_scores


def hand_view(aggregate_rows=None):
    """One head, d = 1, a cache of 1 (the prefix), a group of 2, a guide of 2: q = (1, 2) for the
    guide, keys 0 (prefix), 1, 2 (group), 3, 4 (guide)."""
    key = torch.tensor([[[0.0], [1.0], [2.0], [0.5], [1.5]]])
    query = torch.tensor([[[0.0], [0.0], [1.0], [2.0]]])
    return LayerView(layer=0, chunk=None, query=query, key=key, value=key, num_chunk=2, num_guide=2, scaling=1.0,
                     positions=torch.zeros(1, 4, dtype=torch.long), rope=lambda: None)


def test_reference_scores_by_hand():
    v = hand_view()
    # guide query 0 (q = 1) sees keys 0..3: logits 0, 1, 2, 0.5; query 1 (q = 2) sees 0..4: 0, 2, 4, 1, 3
    a0 = torch.softmax(torch.tensor([0.0, 1.0, 2.0, 0.5]), 0)
    a1 = torch.softmax(torch.tensor([0.0, 2.0, 4.0, 1.0, 3.0]), 0)
    group0 = torch.stack([a0[1:3], a1[1:3]])  # [guide, 2] on the group's keys
    assert torch.allclose(reference_scores(v, "max"), group0.amax(0))
    assert torch.allclose(reference_scores(v, "mean"), group0.mean(0))
    assert torch.allclose(reference_scores(v, "max", block=1), group0.amax(0))  # blocks change nothing


def test_default_reference_layer_is_the_authors_for_28_layers():
    assert default_reference_layer(28) == 20 and default_reference_layer(4) == 2 and default_reference_layer(1) == 0


def test_flexselect_shares_the_budget_by_group_size_and_takes_each_groups_top(arch, adapters, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    rec = Recorder(get_method("flexselect", group_frames=4, aggregate="mean"))
    Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    groups = list(rec.groups.values())
    assert len(groups) == -(-inputs.num_steps // (4 // inputs.frames_per_step))  # groups of 4 frames
    grid = torch.zeros(inputs.num_tokens, dtype=torch.bool)
    grid[rec.plan.grid_index().reshape(-1)] = True
    counts = [int(rec.input_keep[g.tokens][grid[g.tokens]].sum()) for g in groups]
    sizes = [int(grid[g.tokens].sum()) for g in groups]
    assert max(counts) - min(counts) <= 1 and len(set(sizes)) == 1  # equal groups, equal shares
    assert not any(c == s for c, s in zip(counts, sizes))


def test_response_entropy_by_hand():
    assert response_entropy(torch.tensor([0.0, 0.0, 0.0, 0.0])) == pytest.approx(math.log(4))
    assert response_entropy(torch.tensor([100.0, 0.0, 0.0])) == pytest.approx(0.0, abs=1e-30)
    p = torch.softmax(torch.tensor([1.0, 2.0]), 0)
    assert response_entropy(torch.tensor([1.0, 2.0])) == pytest.approx(float(-(p * p.log()).sum()))


def adaptoken_run(ad, sampled, **params):
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    rec = Recorder(get_method("adaptoken", group_frames=4, **params))
    Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    return rec


def test_adaptoken_gives_the_more_certain_groups_more_tokens(arch, adapters, sampled):
    rec = adaptoken_run(adapters[arch], sampled, temperature=0.05)  # sharp: entropy differences decide
    m = rec.inner
    H = torch.tensor([m.entropy[g] for g in rec.groups])
    assert torch.allclose(H, torch.tensor([response_entropy(rec.logits[g]) for g in rec.groups], dtype=H.dtype))
    grid = torch.zeros(rec.plan.num_video_tokens, dtype=torch.bool)
    grid[rec.plan.grid_index().reshape(-1)] = True
    counts = torch.tensor([int(rec.input_keep[g.tokens][grid[g.tokens]].sum()) for g in rec.groups.values()])
    # the weights exp(-H / t): the fewest tokens never go to a more certain group than the most
    assert counts[H.argmin()] >= counts[H.argmax()]
    w = torch.exp(-(H - H.min()) / 0.05)
    assert torch.allclose(m.group_weights(), w.double())


def test_adaptoken_lite_stops_at_the_first_certain_group(arch, adapters, sampled):
    ad = adapters[arch]
    full = adaptoken_run(ad, sampled)
    assert len(full.inner.entropy) == len(full.groups) > 1
    first = next(iter(full.inner.entropy.values()))
    lite = adaptoken_run(ad, sampled, lite=True, stop_entropy=first + 1e-6)  # group 0 is "certain"
    assert list(lite.inner.entropy) == [0]  # the scoring pass stopped there
    g0 = lite.groups[0].tokens
    others = torch.ones(lite.plan.num_video_tokens, dtype=torch.bool)
    others[g0] = False
    grid = torch.zeros(lite.plan.num_video_tokens, dtype=torch.bool)
    grid[lite.plan.grid_index().reshape(-1)] = True
    assert not lite.input_keep[others & grid].any() and lite.input_keep[g0].any()


@pytest.mark.parametrize("heads, kv_heads, cache", [(6, 2, 5), (4, 4, 0), (8, 1, 3)])
def test_layer_view_attention_is_the_repeated_key_softmax_with_the_full_causal_mask(heads, kv_heads, cache):
    """The grouped logits (no repeated keys) and the causal mask applied to the tail columns only
    equal the definition: keys repeated per query head, the whole bottom-right mask, softmax."""
    g = torch.Generator().manual_seed(heads * 10 + cache)
    n, guide, d = 7, 3, 4
    nq, nk = n + guide, cache + n + guide
    query = torch.randn(heads, nq, d, generator=g)
    key = torch.randn(kv_heads, nk, d, generator=g)
    v = LayerView(layer=0, chunk=None, query=query, key=key, value=key, num_chunk=n, num_guide=guide, scaling=0.7,
                  positions=torch.zeros(1, nq, dtype=torch.long), rope=lambda: None)
    full = query @ key.repeat_interleave(heads // kv_heads, 0).transpose(-1, -2) * 0.7  # [H, q, k]
    i, j = torch.arange(nq)[:, None], torch.arange(nk)[None, :]
    ref = torch.softmax(full.masked_fill(j > nk - nq + i, float("-inf")), -1)
    for start, stop in [(0, nq), (2, 5), (n, nq), (nq - 1, nq)]:
        assert torch.allclose(v.causal_attention(start, stop), ref[:, start:stop], atol=1e-6)
    for block in (1, 3, 128):
        assert torch.allclose(v.received_attention(query, key, causal=True, block=block), ref.sum(1), atol=1e-5)
        plain = torch.softmax(full, -1).sum(1)
        assert torch.allclose(v.received_attention(query, key, block=block), plain, atol=1e-5)
    mask = torch.rand(nq, nk, generator=g) > 0.3
    mask[:, 0] = True
    assert torch.allclose(v.attention(query, key, mask), torch.softmax(full.masked_fill(~mask, float("-inf")), -1), atol=1e-6)
