"""SnapKV and PyramidKV (docs/methods.md): the guide's last-window attention, pooled along the
tokens, head mean; SnapKV keeps round(r * n) in every layer, PyramidKV a linear pyramid."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.allocation import pyramidkv_counts
from retake.methods.base import ChunkSpan, LayerView, budget_tokens
from retake.methods.snapkv import pool_scores, window_attention


def run(adapter, sampled, method, share=0.3, max_context=None):
    inputs, prompt = make_inputs(adapter, sampled)
    budget = max_context or prompt.num_text_tokens + int(share * inputs.num_tokens)
    rec = Recorder(method)
    out = Engine(adapter, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=4)).run(inputs, prompt, rec)
    return rec, out


def test_pooling_hand_example():
    a = torch.tensor([[5.0, 0, 0, 0, 0, 10], [0, 3, 0, 0, 0, 0]])
    # kernel 5, padding 2 with zeros, avg divides by 5 everywhere (the zeros count)
    assert torch.allclose(pool_scores(a, 5, "avgpool"), torch.tensor([[1.0, 1, 1, 2, 2, 2], [0.6, 0.6, 0.6, 0.6, 0, 0]]))
    assert pool_scores(a, 5, "maxpool").tolist() == [[5, 5, 5, 10, 10, 10], [3, 3, 3, 3, 0, 0]]
    # kernel 3: [5/3, 5/3, 0, 0, 10/3, 10/3]
    assert pool_scores(a[0], 3, "avgpool").tolist() == pytest.approx([5 / 3, 5 / 3, 0, 0, 10 / 3, 10 / 3])
    assert torch.equal(pool_scores(a, 1, "avgpool"), a)


def synthetic_view(cache=3, n=5, g=4, heads=4, kv_heads=2, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, n + g, d, generator=gen)
    k = torch.randn(kv_heads, cache + n + g, d, generator=gen)
    chunk = ChunkSpan(0, 0, 1, 0, n)
    return LayerView(layer=0, chunk=chunk, query=q, key=k, value=k.clone(), num_chunk=n, num_guide=g,
                     scaling=d**-0.5, positions=torch.zeros(1, n + g, dtype=torch.long), rope=lambda: None)


@pytest.mark.parametrize("window", [1, 3, 32])
def test_window_attention_by_hand(window):
    """Query by query and key by key: the last w = min(window, g) queries, each over the keys it
    may see (the whole cache and the input up to itself), summed, on the chunk's columns."""
    cache, n, g = 3, 5, 4
    v = synthetic_view(cache, n, g)
    K, w = cache + n + g, min(window, g)
    expected = torch.zeros(4, n, dtype=torch.float64)
    for h in range(4):
        kh = v.key[h // 2].double()
        for i in range(n + g - w, n + g):  # input query i is key cache + i
            logits = [float(v.query[h, i].double() @ kh[j]) * v.scaling for j in range(cache + i + 1)]
            z = sum(math.exp(x) for x in logits)
            for j in range(n):
                expected[h, j] += math.exp(logits[cache + j]) / z
    assert K == v.key.shape[1]
    assert torch.allclose(window_attention(v, window).double(), expected, atol=1e-6)


def test_pyramidkv_counts():
    # unclipped: T = 0.2 * 100 = 20, beta 20: top 1, bottom 39, linear over 28 layers
    k = pyramidkv_counts(28, 0.2, 100, 20.0)
    assert k.tolist() == sorted(k.tolist(), reverse=True) and k[0] > k[-1]
    assert int(k.sum()) == 560  # round(T * L): the total is preserved
    assert int(k[0]) == 39 and int(k[-1]) == 1
    # clipped: T = 80, the bottom would be 156 > n: bottom n = 100, top 2T - n = 60
    k = pyramidkv_counts(28, 0.8, 100, 20.0)
    assert int(k[0]) == 100 and int(k[-1]) == 60 and int(k.sum()) == round(0.8 * 100 * 28)
    for L, r, n, beta in [(4, 0.3, 37, 20.0), (28, 0.013, 144, 20.0), (28, 0.5, 144, 5.0), (3, 0.9, 7, 20.0), (28, 0.001, 50, 20.0)]:
        k = pyramidkv_counts(L, r, n, beta)
        assert k.tolist() == sorted(k.tolist(), reverse=True)
        assert int(k.min()) >= 1 and int(k.max()) <= n
        assert int(k.sum()) == min(L * n, max(L, math.floor(r * n * L + 0.5)))
    assert pyramidkv_counts(28, 0.3, 100, 1.0).tolist() == [30] * 28  # beta 1: flat, SnapKV's budgets


@pytest.mark.parametrize("name", ["snapkv", "pyramidkv"])
def test_layer_budgets_in_engine(arch, adapters, sampled, name):
    rec, out = run(adapters[arch], sampled, get_method(name), share=0.4)
    L, r = rec.plan.num_layers, rec.plan.keep_ratio
    assert len(rec.selected) >= 3
    for c, sel in rec.selected.items():
        n = rec.views[c][0].n
        assert all(keep.dim() == 2 and keep.shape[0] == rec.views[c][0].key.shape[0] for keep in sel)  # per KV head
        counts = [keep.shape[1] for keep in sel]
        if name == "snapkv":
            assert counts == [budget_tokens(r, n)] * L
        else:
            assert counts == pyramidkv_counts(L, r, n, 20.0).tolist()
            assert counts[0] > counts[-1] and counts == sorted(counts, reverse=True)
            assert sum(counts) == math.floor(r * n * L + 0.5)
    kept = out.kept_video_tokens_per_layer
    if name == "pyramidkv":
        assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1]
    assert sum(kept) / L <= r * out.video_tokens + len(rec.selected)


def test_defaults():
    s, p = get_method("snapkv"), get_method("pyramidkv")
    assert (s.window, s.kernel_size, s.pooling) == (32, 5, "avgpool")
    assert (p.window, p.kernel_size, p.pooling, p.beta) == (32, 5, "avgpool", 20.0)


@pytest.mark.parametrize("name", ["snapkv", "pyramidkv"])
def test_bad_parameters(name):
    with pytest.raises(ValueError, match=r"window must be >= 1"):
        get_method(name, window=0)
    for k in (0, 4):
        with pytest.raises(ValueError, match=r"kernel_size must be an odd integer >= 1"):
            get_method(name, kernel_size=k)
    with pytest.raises(ValueError, match=r"pooling must be one of avgpool, maxpool"):
        get_method(name, pooling="mean")
    if name == "pyramidkv":
        with pytest.raises(ValueError, match=r"beta must be >= 1"):
            get_method(name, beta=0.5)
