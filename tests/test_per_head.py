"""Per-KV-head eviction (engine.cache's ragged layers), the scorer base, and what every method
owes the engine whatever its kind: nothing to compress is exactly `none`, an instance runs
any number of videos."""

from __future__ import annotations

import pytest
import torch

from conftest import make_inputs
from retake.engine import CompressibleCache, Engine, EngineConfig
from retake.engine.attention import ragged_causal_sdpa
from retake.methods import METHODS, LayerKeep, Method, get_method, topk_sorted


def masked_reference(q, k, v, scale, head_lengths, ragged_end):
    """fp64 softmax attention with an explicit mask: bottom-right causal, and KV head h sees
    the first ``ragged_end`` entries only below ``head_lengths[h]``."""
    B, H, nq, d = q.shape
    H_kv, K = k.shape[1], k.shape[2]
    rep = H // H_kv
    j = torch.arange(K)
    causal = j[None, :] <= K - nq + torch.arange(nq)[:, None]  # [q, K]
    held = (j[None, :] < torch.tensor(head_lengths)[:, None]) | (j[None, :] >= ragged_end)  # [H_kv, K]
    mask = causal[None] & held.repeat_interleave(rep, 0)[:, None, :]  # [H, q, K]
    kk, vv = k.double().repeat_interleave(rep, 1), v.double().repeat_interleave(rep, 1)
    s = (q.double() @ kk.transpose(-1, -2)) * (scale if scale is not None else d**-0.5)
    return s.masked_fill(~mask[None], float("-inf")).softmax(-1) @ vv


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 3e-6), (torch.float64, 1e-12), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("H,H_kv", [(8, 2), (4, 4)])
@pytest.mark.parametrize("nq,tail", [(13, 13), (13, 20), (1, 6)])  # a chunk (split kernel), a suffix after a tail, decoding
def test_ragged_attention_equals_the_masked_softmax(dtype, atol, H, H_kv, nq, tail):
    g = torch.Generator().manual_seed(0)
    lengths = [31, 50, 7, 44][:H_kv]
    end = max(lengths)
    K = end + tail
    q = torch.randn(1, H, nq, 16, generator=g).to(dtype)
    k = torch.randn(1, H_kv, K, 16, generator=g).to(dtype)
    v = torch.randn(1, H_kv, K, 16, generator=g).to(dtype)
    k[:, :, :end][(torch.arange(end)[None, :] >= torch.tensor(lengths)[:, None])[None]] = 1e4  # padding: poison
    for scale in (None, 0.3):
        got = ragged_causal_sdpa(q, k, v, scale, lengths, end)
        want = masked_reference(q, k, v, scale, lengths, end)
        assert got.dtype == dtype and got.shape == want.shape
        assert torch.allclose(got.double(), want, atol=atol), (got.double() - want).abs().max()


def test_cache_keeps_a_set_per_head():
    """Each KV head's kept entries are packed after its own older ones; a later chunk, a shared
    keep, a whole-video keep, truncation, snapshot/restore and the byte count follow the heads."""
    cache = CompressibleCache()
    x = torch.arange(2 * 6, dtype=torch.float32).reshape(1, 2, 6, 1).expand(1, 2, 6, 3).contiguous()
    cache.update(x, -x, 0)  # 6 entries, 2 heads; entry e of head h holds 6h + e
    cache.keep(0, 2, LayerKeep.per_heads([torch.tensor([0, 3]), torch.tensor([1])]))  # of the chunk [2, 6)
    lay = cache.layers[0]
    assert lay.head_lengths == [4, 3] and lay.length == 4 and lay.entries_per_head() == [4, 3]
    assert lay.keys[0, 0, :4, 0].tolist() == [0, 1, 2, 5] and lay.keys[0, 1, :3, 0].tolist() == [6, 7, 9]
    assert cache.held(0) == 3.5 and cache.held_max(0) == 4
    assert cache.nbytes() == (4 + 3) * 3 * 4 * 2  # entries held x d x fp32 x (keys, values); no padding
    y = 100 + torch.arange(2 * 3, dtype=torch.float32).reshape(1, 2, 3, 1).expand(1, 2, 3, 3).contiguous()
    keys, _ = cache.update(y, -y, 0)  # a chunk of 3 at [4, 7): every head holds it
    assert keys.retake_heads == ([4, 3], 4) and cache.held(0) == 6.5
    snap = cache.snapshot()
    cache.keep(0, 4, LayerKeep(torch.tensor([2])))  # one set for both heads on a ragged layer
    assert lay.head_lengths == [5, 4]
    assert lay.keys[0, 0, :5, 0].tolist() == [0, 1, 2, 5, 102] and lay.keys[0, 1, :4, 0].tolist() == [6, 7, 9, 105]
    with pytest.raises(ValueError, match="compressed since"):
        cache.restore(snap)
    cache.update(y, -y, 0)
    # whole video from entry 1 on: head 0's [1, 2, 5, 102, 100, 101, 102], head 1's [7, 9, 105, 103, 104, 105]
    cache.keep(0, 1, LayerKeep(torch.tensor([[0, 4], [1, 5]]), scope="video"))
    assert lay.head_lengths is None and lay.length == 3  # equal counts: dense again
    assert lay.keys[0, 0, :3, 0].tolist() == [0, 1, 100] and lay.keys[0, 1, :3, 0].tolist() == [6, 9, 105]
    cache.keep(0, 1, LayerKeep.per_heads([torch.tensor([0, 1]), torch.tensor([], dtype=torch.long)]))
    assert lay.head_lengths == [3, 1]
    cache.truncate(0, 2)
    assert lay.head_lengths == [2, 1] and lay.length == 2


class SameInEveryHead(Method):
    """The top-k of the guide's attention, returned as one set ([k]) or the same set in every KV
    head ([H_kv, k])."""

    name = "same_in_every_head"

    def __init__(self, per_head: bool):
        self.per_head = per_head

    def begin(self, plan):
        super().begin(plan)
        self.scores, self.heads = {}, 1

    def observe(self, view):
        self.scores[view.layer] = view.guide_attention().sum((0, 1)).cpu()
        self.heads = view.key.shape[0]

    def select(self, chunk):
        out = []
        for layer in range(self.plan.num_layers):
            s = self.scores.pop(layer)
            keep = topk_sorted(s, max(1, s.shape[0] // (3 + layer)))
            out.append(keep.expand(self.heads, -1).clone() if self.per_head else keep)
        return out


def test_the_same_set_in_every_head_is_the_shared_set_bit_for_bit(arch, adapters, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    cfg = EngineConfig(chunk_frames=4, max_new_tokens=4)
    shared = Engine(ad, cfg).run(inputs, prompt, SameInEveryHead(False), return_cache=True)
    heads = Engine(ad, cfg).run(inputs, prompt, SameInEveryHead(True), return_cache=True)
    assert torch.equal(shared.first_logits, heads.first_logits) and shared.tokens == heads.tokens
    assert shared.kv_tokens_per_layer == heads.kv_tokens_per_layer
    for a, b in zip(shared.cache.layers, heads.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


@pytest.mark.parametrize("name", ["snapkv", "pyramidkv", "h2o", "adakv", "knorm", "infinipot_v"])
def test_per_head_methods_hold_their_budget_per_head(arch, adapters, sampled, name):
    """Per-head selection (the default of these methods): the heads really keep different sets,
    the cache holds the budget per head on average, what --json reports is what is held, and the
    answer decodes; head_selection=shared keeps one set per layer."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    cfg = EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=3)
    out = Engine(ad, cfg).run(inputs, prompt, get_method(name), return_cache=True)
    layers = [lay for lay in out.cache.layers]
    differ = False
    for lay in layers:
        per = lay.entries_per_head()
        k = lay.keys[0, :, : min(per)]
        differ |= len(set(per)) > 1 or not all(torch.equal(k[0], k[h]) for h in range(k.shape[0]))
    assert differ, "every head kept the same set"
    chunks = len(range(0, inputs.num_frames, 4))
    assert sum(out.kv_tokens_per_layer) / len(out.kv_tokens_per_layer) <= budget + 2 * chunks + len(out.tokens)
    assert out.kv_tokens_per_layer_max_head == [lay.length - len(out.tokens) + 1 for lay in layers]
    shared = Engine(ad, cfg).run(inputs, prompt, get_method(name, head_selection="shared"), return_cache=True)
    assert all(lay.head_lengths is None for lay in shared.cache.layers)
    assert 1 <= len(shared.tokens) <= 3


@pytest.fixture(scope="module")
def short(video_path):
    from retake.video import load_video

    return load_video(video_path, fps=2.0, max_frames=16, max_long_side=84)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_nothing_to_compress_is_none(arch, adapters, short, name):
    """Every method, when the whole video fits (r >= 1), answers exactly as `none`: same
    logits, same cache."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, short)
    cfg = EngineConfig(chunk_frames=4, max_context=10**6, max_new_tokens=2)
    ref = Engine(ad, cfg).run(inputs, prompt, get_method("none"))
    # StreamMem's input frame filter drops near-duplicate frames whatever the budget (its definition)
    out = Engine(ad, cfg).run(inputs, prompt, get_method(name, **({"filter_threshold": 1.0} if name == "streammem" else {})))
    assert torch.equal(out.first_logits, ref.first_logits) and out.tokens == ref.tokens
    assert out.kv_tokens_per_layer == ref.kv_tokens_per_layer


@pytest.mark.parametrize("name", sorted(METHODS))
def test_an_instance_runs_again(arch, adapters, short, name):
    """One instance, three runs (everything fits, then compressed, then compressed again), each
    equal to a fresh instance's: nothing of a run leaks into the next."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, short)
    tight = EngineConfig(chunk_frames=4, max_context=prompt.num_text_tokens + inputs.num_tokens // 4, max_new_tokens=2)
    loose = EngineConfig(chunk_frames=4, max_context=10**6, max_new_tokens=2)
    m = get_method(name)
    for cfg in (loose, tight, tight):
        out = Engine(ad, cfg).run(inputs, prompt, m)
        ref = Engine(ad, cfg).run(inputs, prompt, get_method(name))
        assert torch.equal(out.first_logits, ref.first_logits) and out.kv_tokens_per_layer == ref.kv_tokens_per_layer


def test_answers_report_entries_per_head(adapters, video_path):
    """What `retake ask --json` and a predictions line report for a method whose heads keep
    different numbers: the mean per head, the fullest head, the bytes actually held."""
    from retake.harness.lmms_model import measurements
    from retake.pipeline import SamplingConfig, answer_question

    ad = adapters["qwen2_vl"]
    sampling = SamplingConfig(fps=2.0, max_frames=16, max_long_side=84)
    ask = lambda budget: answer_question(ad, video_path, "What happens?", get_method("adakv"), sampling,  # noqa: E731
                                         EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=2))
    full = ask(10**6)
    res = ask(full["text_tokens"] + int(0.3 * full["video_tokens"]))
    mean, top = res["kv_tokens_per_layer"], res["kv_tokens_per_layer_max_head"]
    assert len(mean) == len(top) == ad.num_layers and all(m <= t for m, t in zip(mean, top))
    assert any(m < t for m, t in zip(mean, top))  # some layer's heads hold different numbers
    cfg = ad.model.config.get_text_config()
    per_entry = 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4  # K and V, fp32, all heads
    assert res["kv_cache_bytes"] == pytest.approx(sum(mean) * per_entry)
    m = measurements(res)
    assert m["kv_tokens_max_head"] == max(top) and m["kv_tokens_mean"] == pytest.approx(sum(mean) / len(mean))
