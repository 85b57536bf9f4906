"""LOOK-M (docs/methods.md): H2O scores, top-k per layer, pivot merge of the evicted KV pairs."""

from __future__ import annotations

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import LayerKeep, get_method
from retake.methods.base import budget_tokens
from retake.methods.lookm import pivot_merge


def test_pivot_merge_hand_example():
    # head 0: 2 -> 0 and 3 -> 0 (two matches), 4 -> 1 (one match), kept 5 has none
    # head 1: keys swapped round so that every evicted entry goes to kept 5
    k0 = torch.tensor([[1.0, 0], [0, 1], [0.9, 0.1], [0.8, -0.1], [0.1, 1], [-1, 0]])
    k1 = torch.tensor([[0.0, 1], [0, 1], [-0.9, 0.1], [-1, -0.2], [-1, 0], [-1, 0]])
    keys = torch.stack([k0, k1])
    values = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    mk, mv = pivot_merge(keys, values, torch.tensor([0, 1, 5]))
    assert mk.shape == (2, 3, 2) and mv.shape == (2, 3, 3)
    assert torch.allclose(mk[0, 0], (k0[0] + (k0[2] + k0[3]) / 2) / 2)
    assert torch.allclose(mk[0, 1], (k0[1] + k0[4]) / 2)  # one match: the plain average of the two
    assert torch.equal(mk[0, 2], k0[5])  # no match: unchanged
    assert torch.allclose(mv[0, 0], (values[0, 0] + (values[0, 2] + values[0, 3]) / 2) / 2)
    assert torch.allclose(mv[0, 1], (values[0, 1] + values[0, 4]) / 2)
    assert torch.equal(mv[0, 2], values[0, 5])
    assert torch.equal(mk[1, :2], k1[:2]) and torch.equal(mv[1, :2], values[1, :2])
    assert torch.allclose(mk[1, 2], (k1[5] + (k1[2] + k1[3] + k1[4]) / 3) / 2)
    assert torch.allclose(mv[1, 2], (values[1, 5] + (values[1, 2] + values[1, 3] + values[1, 4]) / 3) / 2)
    # nothing evicted: nothing merged
    mk, mv = pivot_merge(keys, values, torch.arange(6))
    assert torch.equal(mk, keys) and torch.equal(mv, values)


def independent_merge(keys: torch.Tensor, values: torch.Tensor, keep: list[int]):
    """The pivot merge written out per head and per kept entry, float64."""
    keys, values = keys.double(), values.double()
    evicted = [j for j in range(keys.shape[1]) if j not in keep]
    out_k, out_v = keys[:, keep].clone(), values[:, keep].clone()
    for h in range(keys.shape[0]):
        groups = {c: [] for c in range(len(keep))}
        for e in evicted:
            cos = [float(torch.dot(keys[h, e], keys[h, j]) / (keys[h, e].norm() * keys[h, j].norm())) for j in keep]
            groups[max(range(len(keep)), key=lambda c: (cos[c], -c))].append(e)
        for c, members in groups.items():
            if members:
                out_k[h, c] = (keys[h, keep[c]] + keys[h, members].mean(0)) / 2
                out_v[h, c] = (values[h, keep[c]] + values[h, members].mean(0)) / 2
    return out_k, out_v


def test_merged_kv_in_cache_is_pivot_average(arch, adapters, sampled):
    """Every layer of every chunk: the returned merged KV equals the pivot average recomputed from
    the captured chunk KV, and the engine's cache (as the next chunk sees it) holds exactly it."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    rec = Recorder(get_method("lookm"))
    out = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    chunks = sorted(rec.selected)
    assert len(chunks) >= 3
    merged_somewhere = False
    for c in chunks:
        for layer, keep in enumerate(rec.selected[c]):
            assert isinstance(keep, LayerKeep) and keep.num_extra == 0
            v = rec.views[c][layer]
            idx = keep.index.tolist()
            assert len(idx) == budget_tokens(rec.plan.keep_ratio, v.n) < v.n
            ref_k, ref_v = independent_merge(v.chunk_keys, v.chunk_values, idx)
            assert torch.allclose(keep.keys.double(), ref_k, atol=1e-6, rtol=0)
            assert torch.allclose(keep.values.double(), ref_v, atol=1e-6, rtol=0)
            merged_somewhere |= not torch.allclose(ref_k, v.chunk_keys[:, idx].double())
            if c + 1 in rec.views:  # the cache the next chunk attends over
                nxt = rec.views[c + 1][layer]
                assert nxt.cache_len - v.cache_len == len(idx)
                assert torch.allclose(nxt.key[:, v.cache_len : nxt.cache_len].double(), ref_k, atol=1e-6, rtol=0)
                assert torch.allclose(nxt.value[:, v.cache_len : nxt.cache_len].double(), ref_v, atol=1e-6, rtol=0)
    assert merged_somewhere
    assert out.kv_tokens_per_layer == [k + prompt.num_text_tokens for k in out.kept_video_tokens_per_layer]
    assert sum(out.kv_tokens_per_layer) / len(out.kv_tokens_per_layer) <= budget + len(chunks)


def test_lookm_bad_parameters():
    with pytest.raises(ValueError, match="query_block must be >= 1"):
        get_method("lookm", query_block=0)
    with pytest.raises(ValueError, match="valid: query_block"):
        get_method("lookm", recent_ratio=0.1)
