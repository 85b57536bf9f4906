"""SparseVLM (docs/methods.md): above-mean guide raters, top-k per layer, recycled clusters
appended as extra KV entries that count in the budget."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import Recorder, make_inputs
from reference_scores import sparsevlm_raters
from retake.engine import Engine, EngineConfig
from retake.methods import LayerKeep, get_method
from retake.methods.base import budget_tokens
from retake.methods.sparsevlm import SparseVLM, dpc_knn, recycled_counts


def test_recycled_counts_spec_rule():
    # clusters = min(recycled, ceil(pruned / 10)), the spec's count
    # n = 24, budget 4: 22 pruned -> 7 recycled, 3 clusters; 2 kept + 3 = 5 > 4; 23 pruned -> 1 + 3
    assert recycled_counts(24, 4, 0.3, 10) == (1, 7, 3)
    # n = 100, budget 50: 55 pruned -> 17 recycled -> 6 clusters; 45 + 6 = 51; 56 -> 44 + 6 = 50
    assert recycled_counts(100, 50, 0.3, 10) == (44, 17, 6)
    assert recycled_counts(10, 10, 0.3, 10) == (10, 0, 0)  # nothing pruned, nothing recycled
    # a small recycle ratio: never more clusters than recycled tokens
    assert recycled_counts(100, 60, 0.05, 10) == (57, 3, 3)  # 43 pruned, 3 recycled: min(3, 5) clusters
    for rr in (0.05, 0.3, 1.0):
        for n in range(1, 60):
            for budget in range(1, n + 1):
                kept, m, c = recycled_counts(n, budget, rr, 10)
                assert kept >= 1 and kept + c == budget and c <= m <= n - kept
                p = n - kept
                if c == min(m, math.ceil(p / 10)):  # the rule holds: the fewest pruned tokens that meet it
                    q = p - 1
                    assert p == 0 or n - q + min(math.ceil(rr * q - 1e-9), math.ceil(q / 10)) > budget
    with pytest.raises(ValueError, match="pruned, recycled"):
        recycled_counts(10, 5, 0.3, 10, "kept")


def test_recycled_counts_authors_rule():
    # cluster_count="recycled": clusters = ceil(recycled / 10), the authors' code
    # n = 24, budget 4: 21 pruned -> ceil(6.3) = 7 recycled -> 1 cluster; 3 kept + 1 = 4
    assert recycled_counts(24, 4, 0.3, 10, "recycled") == (3, 7, 1)
    # n = 100, budget 50: 52 pruned -> 16 recycled -> 2 clusters; 48 + 2 = 50 (51 pruned gives 49 + 2)
    assert recycled_counts(100, 50, 0.3, 10, "recycled") == (48, 16, 2)
    assert recycled_counts(10, 10, 0.3, 10, "recycled") == (10, 0, 0)
    # a budget too small for the rule: one token kept, the clusters cut to what is left
    assert recycled_counts(100, 2, 0.3, 10, "recycled") == (1, 30, 1)
    for n in range(1, 70):
        for budget in range(1, n + 1):
            kept, m, c = recycled_counts(n, budget, 0.3, 10, "recycled")
            assert kept >= 1 and kept + c == budget and m <= n - kept
            if c == math.ceil(m / 10):
                p = n - kept
                assert p == 0 or n - (p - 1) + math.ceil(math.ceil(0.3 * (p - 1) - 1e-9) / 10) > budget


def test_dpc_knn_separates_blobs_deterministically():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]])
    x = torch.cat([c + 0.1 * torch.randn(7, 3) for c in centres])
    x = x[torch.randperm(21)]
    assign = dpc_knn(x, 3)
    near = torch.cdist(x, centres).argmin(-1)
    # the same partition as the true blobs, up to the cluster labels
    assert all(len(set(assign[near == b].tolist())) == 1 for b in range(3))
    assert len(set(assign.tolist())) == 3
    # ties (duplicate points) break by index, not by chance
    dup = torch.cat([x[:4], x[:4], x[:4]])
    assert torch.equal(dpc_knn(dup, 2), dpc_knn(dup.clone(), 2))
    assert dpc_knn(x, 1).tolist() == [0] * 21


class Spy(SparseVLM):
    """Keeps the raters of every chunk (the method keeps the latest only)."""

    def begin(self, plan):
        super().begin(plan)
        self.history = {}

    def select(self, chunk):
        self.history[chunk.index] = dict(self.raters)
        return super().select(chunk)


@pytest.mark.parametrize("cluster_count", ["pruned", "recycled"])
def test_raters_and_recycled_entries_in_engine(arch, adapters, sampled, cluster_count):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    rec = Recorder(Spy(cluster_count=cluster_count))
    out = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    m = rec.inner
    strict_subset = clusters_seen = False
    entries = [0] * len(out.kv_tokens_per_layer)
    for c in sorted(rec.selected):
        for layer, keep in enumerate(rec.selected[c]):
            v = rec.views[c][layer]
            # raters: exactly the guide tokens whose mean attention to the chunk is above the mean
            attn, raters = sparsevlm_raters(v)
            assert m.history[c][layer].tolist() == raters.tolist()
            strict_subset |= 0 < int(raters.sum()) < v.g
            # kept + clusters = the budget of the chunk, clusters from the recycling rule
            assert isinstance(keep, LayerKeep)
            kept, n_rec, n_clu = recycled_counts(v.n, budget_tokens(rec.plan.keep_ratio, v.n), 0.3, 10, cluster_count)
            assert keep.index.numel() == kept and keep.num_extra == n_clu
            assert keep.num_entries == budget_tokens(rec.plan.keep_ratio, v.n)
            entries[layer] += keep.num_entries
            if n_clu:
                clusters_seen = True
                # recycled = the next n_rec tokens by score after the kept ones; clusters = their means
                score = attn[raters].sum(0)
                recycled = score.argsort(descending=True)[kept : kept + n_rec]
                rk, rv = v.chunk_keys[:, recycled].double(), v.chunk_values[:, recycled].double()
                assign = dpc_knn(rk.transpose(0, 1).reshape(n_rec, -1), n_clu)
                for i in range(n_clu):
                    assert torch.allclose(keep.extra_keys[:, i].double(), rk[:, assign == i].mean(1), atol=1e-6)
                    assert torch.allclose(keep.extra_values[:, i].double(), rv[:, assign == i].mean(1), atol=1e-6)
                if c + 1 in rec.views:  # the engine appended them after the kept tokens
                    nxt = rec.views[c + 1][layer]
                    a = v.cache_len + kept
                    assert nxt.cache_len == a + n_clu
                    assert torch.allclose(nxt.key[:, a : nxt.cache_len], keep.extra_keys.to(nxt.key.dtype), atol=1e-6)
                    assert torch.allclose(nxt.value[:, a : nxt.cache_len], keep.extra_values.to(nxt.value.dtype), atol=1e-6)
    assert strict_subset and clusters_seen
    # kv length per layer = text + kept + clusters
    assert out.kv_tokens_per_layer == [prompt.num_text_tokens + e for e in entries]
    assert out.kv_tokens_per_layer == [k + prompt.num_text_tokens for k in out.kept_video_tokens_per_layer]
    assert sum(out.kv_tokens_per_layer) / len(entries) <= budget + len(rec.selected)


@pytest.mark.parametrize("params, match", [
    ({"recycle_ratio": 1.5}, r"recycle_ratio must be in \[0, 1\]"),
    ({"recycle_ratio": -0.1}, r"recycle_ratio must be in \[0, 1\]"),
    ({"cluster_size": 0}, "cluster_size must be >= 1"),
    ({"cluster_count": "kept"}, "cluster_count must be one of pruned, recycled"),
    ({"query_block": 0}, "query_block must be >= 1"),
])
def test_sparsevlm_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        get_method("sparsevlm", **params)
