"""FastV (docs/methods.md): one kept set per chunk, ranked by the K-th layer's attention of the
guide's last token, shared by every layer."""

from __future__ import annotations

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.base import budget_tokens


def run(adapter, sampled, method, share=0.3, max_context=None):
    inputs, prompt = make_inputs(adapter, sampled)
    budget = max_context or prompt.num_text_tokens + int(share * inputs.num_tokens)
    rec = Recorder(method)
    out = Engine(adapter, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=4)).run(inputs, prompt, rec)
    return rec, out


def last_token_topk(v, k):
    """Top-k chunk tokens by the last input query's head-mean attention (it sees the whole
    cache, so no mask), float64, written out here."""
    rep = v.query.shape[0] // v.key.shape[0]
    logits = v.query[:, -1:].double() @ v.key.double().repeat_interleave(rep, 0).transpose(-1, -2) * v.scaling
    att = torch.softmax(logits, -1)[:, 0, v.cache_len : v.cache_len + v.n].mean(0)
    return sorted(att.topk(k).indices.tolist())


@pytest.mark.parametrize("k", [1, 2, 4])
def test_one_set_in_every_layer_from_layer_k(arch, adapters, sampled, k):
    rec, out = run(adapters[arch], sampled, get_method("fastv", k=k))
    L, r = rec.plan.num_layers, rec.plan.keep_ratio
    other = k % L  # another layer's ranking: must differ somewhere, or this test could not fail
    differs = False
    for c, sel in rec.selected.items():
        v = rec.views[c][k - 1]
        count = budget_tokens(r, v.n)
        assert count < v.n
        expected = last_token_topk(v, count)
        assert all(keep.tolist() == expected for keep in sel), f"chunk {c}: a layer's set is not the layer-{k} top-k"
        differs |= last_token_topk(rec.views[c][other], count) != expected
    assert differs
    # every layer holds the same number: round(r * n) per chunk
    chunks = rec.plan.chunks
    assert out.kept_video_tokens_per_layer == [sum(budget_tokens(r, ch.num_tokens) for ch in chunks)] * L


def test_default_is_k2():
    assert get_method("fastv").k == 2


def test_bad_parameters(adapters, sampled):
    with pytest.raises(ValueError, match=r"k must be >= 1"):
        get_method("fastv", k=0)
    with pytest.raises(ValueError, match=r"k must be in \[1, 4\] for a 4-layer model"):
        run(adapters["qwen2_vl"], sampled, get_method("fastv", k=5))
