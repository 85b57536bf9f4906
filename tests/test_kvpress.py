"""Agreement with NVIDIA kvpress (0.5.x), the reference implementation of the text-LLM presses,
on identical tensors: scores equal and every KV head's kept set identical at equal budgets.

The setting both sides share is one chunk of ``n`` tokens followed by the guide (the
observation window, ``g`` tokens) over an empty cache: kvpress sees the context
``[chunk ; window]`` and keeps the window whole (SnapKV / PyramidKV / Ada-KV pad it with the
top score), so its kept chunk tokens are its ``n_kept - g`` best; ours keep ``k`` tokens of
the chunk, and the guide's entries are dropped by the engine. The attention matrix kvpress
reads (``attentions``, as its eager path) is computed here with plain torch, causal, from the
same post-RoPE q/k our methods see. kvpress is installed without its dependencies by
``make setup`` (it declares transformers < 5.3; the press modules run under ours): a missing
kvpress fails here, it is not skipped.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from kvpress.presses.adakv_press import AdaKVPress
from kvpress.presses.knorm_press import KnormPress
from kvpress.presses.observed_attention_press import ObservedAttentionPress
from kvpress.presses.pyramidkv_press import PyramidKVPress
from kvpress.presses.scorer_press import ScorerPress
from kvpress.presses.snapkv_press import SnapKVPress
from kvpress.utils import compute_n_kept
from retake.methods import LayerKeep, LayerView, VideoPlan, get_method
from retake.methods.base import ChunkSpan, topk_sorted

N, G, D = 600, 32, 16
HEADS = [(28, 4), (8, 8)]  # Qwen2.5-VL-7B's GQA, and multi-head


def tensors(H, H_kv, structured, seed=0):
    """Post-RoPE q ``[H, n+g, d]``, k / v ``[H_kv, n+g, d]``: random, or structured (a few
    clusters of keys, heads that prefer different clusters, a drift over the sequence)."""
    gen = torch.Generator().manual_seed(seed)
    T = N + G
    if not structured:
        q = torch.randn(H, T, D, generator=gen, dtype=torch.float64)
        k = torch.randn(H_kv, T, D, generator=gen, dtype=torch.float64)
    else:
        centres = torch.randn(6, D, generator=gen, dtype=torch.float64) * 0.7  # no saturated softmax (ties)
        which = torch.randint(0, 6, (T,), generator=gen)
        drift = torch.linspace(0, 1, T, dtype=torch.float64)[:, None] * torch.randn(1, D, generator=gen, dtype=torch.float64)
        k = (centres[which] + drift)[None] + 0.3 * torch.randn(H_kv, T, D, generator=gen, dtype=torch.float64)
        q = centres[torch.randint(0, 6, (H,), generator=gen)][:, None] + 0.5 * torch.randn(H, T, D, generator=gen, dtype=torch.float64)
    v = torch.randn(H_kv, T, D, generator=gen, dtype=torch.float64)
    return q, k, v


def eager_attention(q, k):
    """softmax(q k^T / sqrt(d)) with the causal mask, KV heads repeated: ``[1, H, T, T]``."""
    rep = q.shape[0] // k.shape[0]
    logits = q @ k.repeat_interleave(rep, 0).transpose(-1, -2) / D**0.5
    T = q.shape[1]
    logits = logits.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(logits, -1)[None]


def module(H, H_kv, layer=0, layers=1):
    config = SimpleNamespace(num_attention_heads=H, num_key_value_heads=H_kv, num_hidden_layers=layers)
    return SimpleNamespace(config=config, head_dim=D, layer_idx=layer)


def kvpress_kept(press, H, H_kv, q, k, layer=0, layers=1):
    """The chunk tokens kvpress keeps, per KV head: read from the values it gathers (value
    channel 0 carries each token's index)."""
    T = N + G
    values = torch.zeros(1, H_kv, T, D, dtype=torch.float64)
    values[..., 0] = torch.arange(T, dtype=torch.float64)
    keys = k[None].clone()
    _, kept = press.compress(module(H, H_kv, layer, layers), torch.zeros(1, T, 1), keys, values,
                             eager_attention(q, k), {})
    return [sorted(int(i) for i in row[:, 0].tolist() if i < N) for row in kept[0]]


def ours(name, q, k, v, keep, layers=1, **params):
    """Run our method on one chunk of N tokens and the guide (G tokens), every layer seeing the
    same tensors: (per-layer selections, per-layer scores)."""
    plan = VideoPlan(num_layers=layers, chunks=[ChunkSpan(0, 0, 1, 0, N)], keep_ratio=keep / N, max_context=10**6,
                     num_video_tokens=N, num_text_tokens=0, tokens_per_step=N, step_token_offsets=[0, N],
                     features=torch.zeros(N, 1))
    m = get_method(name, **params)
    m.begin(plan)
    scores = []
    for layer in range(layers):
        view = LayerView(layer=layer, chunk=plan.chunks[0], query=q, key=k, value=v, num_chunk=N, num_guide=G,
                         scaling=D**-0.5, positions=torch.zeros(1, N + G, dtype=torch.long), rope=None)
        m.observe(view)
        scores.append(m.scores.get(layer))
    return m.select(plan.chunks[0]), scores


def rows(keep, H_kv):
    keep = keep if isinstance(keep, LayerKeep) else LayerKeep(keep)
    return [keep.head_index(h, H_kv).tolist() for h in range(H_kv)]


@pytest.mark.parametrize("H,H_kv", HEADS)
@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_snapkv_scores_and_kept_sets(H, H_kv, structured, ratio):
    q, k, v = tensors(H, H_kv, structured)
    press = SnapKVPress(compression_ratio=ratio, window_size=G, kernel_size=5)
    ref = press.score(module(H, H_kv), torch.zeros(1, N + G, 1), k[None], None, eager_attention(q, k), {})[0, :, :N]
    n_kept = compute_n_kept(N + G, ratio) - G
    sel, scores = ours("snapkv", q, k, v, n_kept, window=G)
    assert torch.allclose(scores[0].double() / G, ref, atol=1e-6, rtol=0)  # ours sums the window, kvpress averages
    assert rows(sel[0], H_kv) == kvpress_kept(press, H, H_kv, q, k)


@pytest.mark.parametrize("H,H_kv", HEADS)
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_pyramidkv_kept_sets_at_the_same_layer_budgets(H, H_kv, ratio):
    """PyramidKV's score is SnapKV's; at kvpress's per-layer budgets every layer's heads keep
    the same sets (the budgets themselves follow different rules: docs/methods.md)."""
    q, k, v = tensors(H, H_kv, True, seed=1)
    layers = 4
    press = PyramidKVPress(compression_ratio=ratio, window_size=G, kernel_size=5)
    for layer in range(layers):
        budget = press.get_layer_budget(module(H, H_kv, layer, layers), N + G) - G
        if budget < 1:  # kvpress's top layer may keep its window alone; ours keep >= 1 token per layer
            assert kvpress_kept(press, H, H_kv, q, k, layer, layers) == [[]] * H_kv
            continue
        sel, _ = ours("pyramidkv", q, k, v, budget, layers=1, window=G, beta=1.0)  # beta 1: flat, = budget
        assert rows(sel[0], H_kv) == kvpress_kept(press, H, H_kv, q, k, layer, layers)


@pytest.mark.parametrize("H,H_kv", HEADS)
@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_h2o_normalized_is_observed_attention(H, H_kv, structured, ratio):
    """kvpress's ObservedAttentionPress = our h2o with normalize=True and no recent window:
    scores over the chunk equal, kept sets equal (its window tokens rank among the chunk's
    there: compared at the chunk tokens it keeps)."""
    q, k, v = tensors(H, H_kv, structured, seed=2)
    press = ObservedAttentionPress(compression_ratio=ratio)
    ref = press.score(module(H, H_kv), None, k[None], None, eager_attention(q, k), {})[0]  # [H_kv, N + G]
    sel, scores = ours("h2o", q, k, v, 1, normalize=True, recent_share=0.0)
    assert torch.allclose(scores[0].double(), ref[:, :N], atol=1e-6, rtol=0)
    kept = kvpress_kept(press, H, H_kv, q, k)
    for h in range(H_kv):  # each head's top-|kvpress's chunk set of that head| of our score
        assert topk_sorted(scores[0][h], len(kept[h])).tolist() == kept[h]


class GivenScores(ScorerPress):
    """A ScorerPress whose score is given (the allocation alone is compared)."""

    def __init__(self, scores, compression_ratio):
        super().__init__(compression_ratio=compression_ratio)
        self.given = scores

    def score(self, *args, **kwargs):
        return self.given.clone()


@pytest.mark.parametrize("H,H_kv", HEADS)
@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_adakv_allocation_is_kvpress_adakv(H, H_kv, structured, ratio, alpha):
    """Ada-KV on the same SnapKV scores: with safeguard="kvpress" every head keeps exactly
    kvpress's AdaKVPress set; the authors' rule (the default) keeps the same sets at alpha 0."""
    q, k, v = tensors(H, H_kv, structured, seed=3)
    n_kept = compute_n_kept(N, ratio)
    for safeguard in ("kvpress", "authors"):
        sel, scores = ours("adakv", q, k, v, n_kept, window=G, floor_alpha=alpha, safeguard=safeguard)
        press = AdaKVPress(GivenScores(scores[0][None].double(), ratio), alpha_safeguard=alpha)
        mod = module(H, H_kv)
        mod.config._attn_implementation = "sdpa"
        press.compress(mod, torch.zeros(1, N, 1), k[None, :, :N], v[None, :, :N], None, {})
        masked = torch.zeros(H_kv, N, dtype=torch.bool)
        masked[mod.masked_key_indices[1], mod.masked_key_indices[2]] = True
        kept = [(~masked[h]).nonzero().squeeze(1).tolist() for h in range(H_kv)]
        if safeguard == "kvpress" or alpha == 0:
            assert rows(sel[0], H_kv) == kept
        assert sum(len(r) for r in rows(sel[0], H_kv)) == pytest.approx(H_kv * n_kept, abs=H_kv)


@pytest.mark.parametrize("H,H_kv", HEADS)
@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_knorm_is_kvpress_knorm(H, H_kv, ratio):
    q, k, v = tensors(H, H_kv, True, seed=4)
    press = KnormPress(compression_ratio=ratio)
    ref = press.score(None, None, k[None, :, :N], None, None, {})[0]
    n_kept = compute_n_kept(N, ratio)
    sel, scores = ours("knorm", q, k, v, n_kept)
    assert torch.allclose(scores[0].double(), ref.double(), atol=1e-6, rtol=0)
    values = torch.zeros(1, H_kv, N, D, dtype=torch.float64)
    values[..., 0] = torch.arange(N, dtype=torch.float64)
    _, kept = press.compress(module(H, H_kv), torch.zeros(1, N, 1), k[None, :, :N].clone(), values, None, {})
    assert rows(sel[0], H_kv) == [sorted(int(i) for i in row[:, 0].tolist()) for row in kept[0]]
