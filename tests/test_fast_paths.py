"""The engine's speed work changes no result (docs/performance.md §1):

- the CPU split attention with grouped-query heads stacked (no repeated cache) equals PyTorch's
  own bottom-right causal SDPA with ``enable_gqa``;
- the buffered cache (in-place appends and compaction) holds exactly what concatenating new
  tensors held, through a random sequence of appends, drops, keeps, snapshots and restores;
- ``fast_paths`` (the prefix in the first chunk's forward, the guide's rows skipping the last
  layer's MLP) keeps every method's kept tokens and the answer's logits (<= 1e-5) against
  running every forward in full; chunked prefill still equals one plain forward
  (``tests/test_engine.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.engine.attention import split_causal_sdpa
from retake.engine.cache import CompressibleCache
from retake.methods import METHODS, LayerKeep, get_method
from retake.video import load_video, write_test_video


@pytest.mark.parametrize("heads,kv_heads,q,k", [(28, 4, 37, 300), (8, 2, 64, 64 + 5), (4, 4, 16, 100), (6, 1, 9, 10)])
def test_grouped_split_attention_equals_sdpa(heads, kv_heads, q, k):
    g = torch.Generator().manual_seed(heads * 1000 + q)
    query = torch.randn(1, q, heads, 32, generator=g).transpose(1, 2)  # strided, as the model gives it
    key, value = (torch.randn(1, kv_heads, k, 32, generator=g) for _ in range(2))
    out = split_causal_sdpa(query, key, value, 32**-0.5)
    ref = F.scaled_dot_product_attention(query, key, value, attn_mask=causal_lower_right(q, k), scale=32**-0.5,
                                         enable_gqa=heads != kv_heads)
    assert (out - ref).abs().max() / ref.abs().max() <= 1e-5


def test_buffered_cache_holds_what_concatenation_held():
    g = torch.Generator().manual_seed(0)
    cache = CompressibleCache()
    ref: list[list[torch.Tensor]] = [[torch.zeros(1, 2, 0, 4), torch.zeros(1, 2, 0, 3)] for _ in range(2)]  # keys, values

    def check():
        for layer, (k, v) in enumerate(ref):
            assert cache.layer_length(layer) == k.shape[-2]
            if layer >= len(cache.layers):  # (a layer exists from its first append)
                continue
            assert torch.equal(cache.layers[layer].keys, k) and torch.equal(cache.layers[layer].values, v)

    snaps = []
    for step in range(60):
        layer = step % 2
        op = int(torch.randint(0, 4, (1,), generator=g)) if step >= 2 else 0
        k, v = ref[layer]
        if op == 0 or k.shape[-2] < 4:  # append (the buffer grows past its capacity now and then)
            n = int(torch.randint(1, 90, (1,), generator=g))
            nk, nv = torch.randn(1, 2, n, 4, generator=g), torch.randn(1, 2, n, 3, generator=g)
            cache.update(nk, nv, layer)
            ref[layer] = [torch.cat([k, nk], -2), torch.cat([v, nv], -2)]
        elif op == 1:  # drop the newest entries (the guide)
            n = int(torch.randint(0, k.shape[-2], (1,), generator=g))
            cache.truncate(layer, n)
            ref[layer] = [k[..., :n, :], v[..., :n, :]]
        elif op == 2:  # keep an index of the entries from `start`, some replaced, some extra
            start = int(torch.randint(0, k.shape[-2], (1,), generator=g))
            m = k.shape[-2] - start
            idx = torch.randperm(m, generator=g)[: max(1, m // 3)].sort().values
            extra = int(torch.randint(0, 3, (1,), generator=g))
            ek, ev = torch.randn(2, extra, 4, generator=g), torch.randn(2, extra, 3, generator=g)
            replace = bool(torch.randint(0, 2, (1,), generator=g))
            rk, rv = torch.randn(2, idx.numel(), 4, generator=g), torch.randn(2, idx.numel(), 3, generator=g)
            keep = LayerKeep(idx, keys=rk if replace else None, values=rv if replace else None,
                             extra_keys=ek if extra else None, extra_values=ev if extra else None)
            cache.keep(layer, start, keep)
            kk = rk[None] if replace else k[..., start:, :][..., idx, :]
            vv = rv[None] if replace else v[..., start:, :][..., idx, :]
            ref[layer] = [torch.cat([k[..., :start, :], kk, ek[None]], -2), torch.cat([v[..., :start, :], vv, ev[None]], -2)]
        else:  # snapshot, append a question, restore
            snaps.append([[t.clone() for t in kv] for kv in ref])
            s = cache.snapshot()
            cache.update(torch.randn(1, 2, 5, 4, generator=g), torch.randn(1, 2, 5, 3, generator=g), layer)
            cache.restore(s)
        check()
    assert cache.nbytes() == sum(t.numel() * 4 for kv in ref for t in kv) <= cache.allocated_bytes()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("fast") / "clip.mp4", num_frames=192, size=(120, 200), fps=8, seed=7)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fast_paths_keep_every_methods_tokens(adapters, clip, name):
    ad = adapters["qwen2_5_vl"]
    inputs, prompt = make_inputs(ad, load_video(clip, fps=2.0, max_frames=48, max_long_side=84))
    budget = prompt.num_text_tokens + int(0.2 * inputs.num_tokens)
    outs, recs = [], []
    for fast in (True, False):
        rec = Recorder(get_method(name))
        outs.append(Engine(ad, EngineConfig(chunk_frames=8, max_context=budget, max_new_tokens=2, fast_paths=fast)).run(
            inputs, prompt, rec))
        recs.append(rec)
    a, b = recs

    def index(keep):
        return None if keep is None else (keep.index if isinstance(keep, LayerKeep) else keep).tolist()

    assert a.selected.keys() == b.selected.keys()
    for c in a.selected:
        assert [index(k) for k in a.selected[c]] == [index(k) for k in b.selected[c]], f"chunk {c}"
    if a.input_keep is not None:
        assert torch.equal(a.input_keep, b.input_keep)
    assert outs[0].kv_tokens_per_layer == outs[1].kv_tokens_per_layer and outs[0].tokens == outs[1].tokens
    assert (outs[0].first_logits - outs[1].first_logits).abs().max() <= 1e-5 * outs[1].first_logits.abs().max()
    # what the methods were shown of a chunk is the same: the guide's queries in every layer included
    for c in a.views:
        for layer, v in a.views[c].items():
            w = b.views[c][layer]
            assert v.query.shape == w.query.shape and v.cache_len == w.cache_len
            assert torch.allclose(v.query, w.query, atol=1e-5, rtol=1e-5)
