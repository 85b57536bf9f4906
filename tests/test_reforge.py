"""Position reforging (EngineConfig.reforge_positions): kept tokens' temporal ids compressed
per layer, keys re-rotated, ids continuous across chunks, suffix and decoding at per-layer ids."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import DynamicCache

from conftest import make_inputs
from retake.engine import Engine, EngineConfig
from retake.engine.engine import PLAIN
from retake.methods import Method, get_method
from retake.models import load_adapter
from retake.models.base import VideoFeatures
from retake.rope import apply_rope, rotate, rotation, unapply_rope


def test_rotations_compose_and_invert_under_yarn(tiny_dirs):
    """YaRN scales cos/sin by an attention factor: a pure rotation by delta applied to keys
    rotated at p gives exactly the keys rotated at p + delta; unapply is the exact inverse."""
    ad = load_adapter(tiny_dirs["qwen2_5_vl"], dtype="float32", device="cpu", rope_scaling_factor=4.0)
    torch.manual_seed(0)
    d = ad.text_config.hidden_size // ad.text_config.num_attention_heads
    x = torch.randn(2, 9, d)
    p = torch.randint(0, 500, (3, 9))
    delta = torch.randint(-300, 300, (3, 9))
    cos, sin = ad.rope(p, x)
    assert float((cos * cos + sin * sin).mean()) > 1.05  # the factor is really there
    moved = rotate(apply_rope(x, cos, sin), rotation(*ad.rope(delta, x)))
    assert torch.allclose(moved, apply_rope(x, *ad.rope(p + delta, x)), atol=1e-5)
    assert torch.allclose(unapply_rope(apply_rope(x, cos, sin), cos, sin), x, atol=1e-5)


@dataclass
class KeepSome(Method):
    """Keeps, per layer, the indices ``choose(layer, chunk, n)``; records them."""

    name = "keep_some"
    uses_guide = True
    observes = False

    def __post_init__(self):
        self.kept = {}

    def choose(self, layer, chunk, n):
        raise NotImplementedError

    def select(self, chunk):
        n = self.plan.fed(chunk)
        sel = [self.choose(l, chunk.index, n) for l in range(self.plan.num_layers)]
        self.kept[chunk.index] = sel
        return sel


class KeepFirst(KeepSome):
    k = 3

    def choose(self, layer, chunk, n):
        return torch.arange(min(self.k, n))


class KeepRandom(KeepSome):
    def choose(self, layer, chunk, n):
        g = torch.Generator().manual_seed(100 * chunk + layer)
        k = max(1, n // (2 + layer % 3))
        return torch.randperm(n, generator=g)[:k].sort().values


def expected_positions(prompt, inputs, kept, chunk_frames):
    """The spec's reforging rule, written out for one layer: ``kept[c]`` indices kept of chunk c.
    Returns ids ``[R, kept video]`` and the layer's first text id."""
    pos, vs = prompt.position_ids, prompt.video_start
    steps = chunk_frames // inputs.frames_per_step
    off = inputs.step_token_offsets
    shift, out = 0, []
    for c, a in enumerate(range(0, inputs.num_steps, steps)):
        b = min(inputs.num_steps, a + steps)
        p = pos[:, vs + off[a] : vs + off[b]].clone()
        start = int(p[0, 0])
        end = int(pos[0, vs + off[b]]) if b < inputs.num_steps else int(p[0].max()) + 1
        p[0] -= shift
        n, idx = p.shape[1], kept[c]
        k, t_min = len(idx), int(p[0].min())
        q = p[:, idx]
        q[0] = t_min + ((q[0] - t_min) * k) // n
        out.append(q)
        shift = end - max(t_min + (end - start) * k // n, int(q[0].max()) + 1)
    video = torch.cat(out, dim=1)
    return video, int(torch.cat([pos[:, :vs], video], dim=1).max()) + 1


@torch.no_grad()
def reference_cache(ad, prompt, encoded, kept_tokens, video_ids, text_start):
    """Plain forwards over the prefix, then [the kept video tokens ; suffix], at the given ids.
    encoded: what ``encode_video`` returned (per-token extras go with the kept tokens)."""
    features, extras = (encoded.embeds, encoded.extras) if isinstance(encoded, VideoFeatures) else (encoded, {})
    ids, pos, vs, ve = prompt.input_ids, prompt.position_ids, prompt.video_start, prompt.video_end
    suffix = pos[:, ve:] - int(pos[0, ve]) + text_start
    cache = DynamicCache()
    ad.forward_embeds(ad.embed(ids[:vs]), pos[:, :vs], cache, retake_ctx=PLAIN)
    x = torch.cat([features[kept_tokens][None], ad.embed(ids[ve:])], dim=1)
    kw = {"video_extras": {k: v[kept_tokens] for k, v in extras.items()}} if extras else {}
    h = ad.forward_embeds(x, torch.cat([video_ids, suffix], dim=1), cache, retake_ctx=PLAIN, **kw)
    return cache, ad.logits(h[0, -1]).float()


def kept_token_ids(inputs, kept, chunk_frames):
    steps = chunk_frames // inputs.frames_per_step
    off = inputs.step_token_offsets
    return torch.cat([off[a] + kept[c] for c, a in enumerate(range(0, inputs.num_steps, steps))])


@pytest.mark.parametrize("rope_factor", [None, 4.0])
def test_reforged_run_equals_plain_forward_at_reforged_ids(arch, tiny_dirs, sampled, rope_factor):
    """Keeping the first 3 tokens of every chunk in every layer: kept tokens never attended to
    a dropped one (causal), and their reforged ids equal their ids inside the chunk (all in its
    first grid step), so every layer's cache and the answer logits must equal one plain forward
    over the kept tokens at the reforged ids: later chunks shifted (keys rotated on insertion,
    queries in the attention function), the suffix at max id + 1."""
    ad = load_adapter(tiny_dirs[arch], dtype="float32", device="cpu", rope_scaling_factor=rope_factor)
    inputs, prompt = make_inputs(ad, sampled)
    m = KeepFirst()
    first = prompt.position_ids[0, prompt.video_start : prompt.video_start + 2]
    if int(first[1]) != int(first[0]):  # every token its own id (1-D RoPE, Qwen3-VL's timestamp): only the first keeps it
        m.k = 1
    cfg = EngineConfig(chunk_frames=4, max_new_tokens=1, reforge_positions=True)
    out = Engine(ad, cfg).run(inputs, prompt, m, return_cache=True)
    kept = {c: sel[0] for c, sel in m.kept.items()}
    video_ids, text_start = expected_positions(prompt, inputs, kept, 4)
    assert text_start < int(prompt.position_ids[0, prompt.video_end])  # the ids really were compressed
    features = ad.encode_video(inputs)
    ref, logits = reference_cache(ad, prompt, features, kept_token_ids(inputs, kept, 4), video_ids, text_start)
    for layer in range(ad.num_layers):
        for a, b in ((out.cache.layers[layer].keys, ref.layers[layer].keys), (out.cache.layers[layer].values, ref.layers[layer].values)):
            assert a.shape == b.shape
            # fp32 rounding of the rotations grows with the ids (1-D RoPE: one id per token)
            assert torch.allclose(a, b, atol=1e-5 * max(1.0, float(b.abs().max())), rtol=1e-5), f"layer {layer}"
    assert torch.allclose(out.first_logits, logits, rtol=1e-5, atol=1e-5 * float(logits.abs().max()))
    # without reforging the same selection gives other logits: the test can tell them apart
    plain = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1)).run(inputs, prompt, KeepFirst())
    assert not torch.allclose(plain.first_logits, logits, atol=1e-4)


def test_reforged_keys_equal_keys_at_new_ids(arch, adapters, sampled):
    """Different kept sets per layer and chunk: layer 0's keys depend only on the token and its
    id, so after prefill they must equal the keys computed directly at the reforged ids."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    m = KeepRandom()
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1, reforge_positions=True)).run(
        inputs, prompt, m, return_cache=True)
    assert len(set(out.kept_video_tokens_per_layer)) > 1
    kept = {c: sel[0] for c, sel in m.kept.items()}
    video_ids, text_start = expected_positions(prompt, inputs, kept, 4)
    features = ad.encode_video(inputs)
    ref, _ = reference_cache(ad, prompt, features, kept_token_ids(inputs, kept, 4), video_ids, text_start)
    assert torch.allclose(out.cache.layers[0].keys, ref.layers[0].keys, atol=1e-5)
    orig = prompt.position_ids[0, prompt.video_start : prompt.video_end]
    assert int(video_ids[0].max() - video_ids[0].min()) < int(orig.max() - orig.min())


@pytest.mark.parametrize("name", ["none", "adaretake"])
def test_reforge_is_a_no_op_without_compression(arch, adapters, sampled, name):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    # (fast_paths off: the prefix in its own forward, as with reforged positions)
    ref = Engine(ad, EngineConfig(chunk_frames=4, max_context=10**6, max_new_tokens=4, fast_paths=False)).run(
        inputs, prompt, get_method("none"))
    out = Engine(ad, EngineConfig(chunk_frames=4, max_context=10**6, max_new_tokens=4, reforge_positions=True)).run(
        inputs, prompt, get_method(name))
    assert torch.equal(out.first_logits, ref.first_logits) and out.tokens == ref.tokens


@pytest.mark.parametrize("name", ["adaretake", "retake"])
def test_reforge_with_methods_meets_budget_and_decodes(arch, adapters, sampled, name):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + inputs.num_tokens // 3
    out = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=4, reforge_positions=True)).run(
        inputs, prompt, get_method(name))
    assert sum(out.kv_tokens_per_layer) / ad.num_layers <= budget + inputs.num_frames // 4
    assert out.kv_tokens_per_layer_final == [k + len(out.tokens) - 1 for k in out.kv_tokens_per_layer]
    assert torch.isfinite(out.first_logits).all()
