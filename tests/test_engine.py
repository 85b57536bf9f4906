"""The engine's exactness and causality (spec §2).

Reference = the unmodified transformers model (attn_implementation="sdpa", loaded from the
same checkpoint), one ordinary forward pass over the whole prompt with the same position ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from conftest import make_inputs
from retake.engine import Engine, EngineConfig, causal_sdpa
from retake.methods import Method, get_method, topk_sorted
from retake.video import load_video


def plain_model(path):
    from transformers import AutoConfig

    from retake.models import MODEL_FAMILIES

    model_class = MODEL_FAMILIES[AutoConfig.from_pretrained(path).model_type][0]()
    return model_class.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()


@torch.no_grad()
def reference_logits(model, adapter, inputs, prompt, extra_tokens=()):
    ids = torch.cat([prompt.input_ids, torch.tensor(list(extra_tokens), dtype=torch.long)])
    pos = prompt.position_ids
    if extra_tokens:
        nxt = int(pos.max()) + 1
        pos = torch.cat([pos, torch.arange(nxt, nxt + len(extra_tokens)).expand(pos.shape[0], -1)], dim=1)
    return model(**plain_forward_kwargs(adapter, inputs, ids, pos)).logits[0, -1]


def plain_forward_kwargs(adapter, inputs, ids, pos):
    """How the unmodified model of the adapter's family takes the same video and prompt."""
    if adapter.model_type == "llava_onevision":  # frames [1, T, 3, H, W]; 1-D ids [1, S]
        return dict(input_ids=ids[None], pixel_values_videos=inputs.pixel_values[None], position_ids=pos)
    return dict(
        input_ids=ids[None],
        pixel_values_videos=inputs.pixel_values,
        video_grid_thw=torch.tensor([inputs.grid_thw]),
        position_ids=pos[:, None],
        mm_token_type_ids=(ids == adapter.video_token_id).long()[None] * 2,
    )


def reference_greedy(model, adapter, inputs, prompt, n):
    toks = []
    for _ in range(n):
        t = int(reference_logits(model, adapter, inputs, prompt, toks).argmax())
        toks.append(t)
        if t in adapter.eos_token_ids:
            break
    return toks


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def plain_models(tiny_dirs):
    return {arch: plain_model(p) for arch, p in tiny_dirs.items()}


@pytest.mark.parametrize("chunk_frames", [2, 4, 6, 16, 64])
def test_chunked_prefill_equals_plain_forward(arch, adapters, plain_models, sampled, chunk_frames):
    """method none: same next-token logits (fp32, rel. err <= 1e-5) for chunk sizes that do
    and do not divide the video (16 frames: 6 leaves a 4-frame chunk), and a single chunk."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    assert inputs.num_frames == 16
    out = Engine(ad, EngineConfig(chunk_frames=chunk_frames, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    ref = reference_logits(plain_models[arch], ad, inputs, prompt)
    assert rel_err(out.first_logits, ref) <= 1e-5
    assert out.kv_tokens_per_layer == [prompt.input_ids.shape[0]] * ad.num_layers


def test_greedy_answer_equals_plain_model(arch, adapters, plain_models, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=6)).run(inputs, prompt, get_method("none"))
    assert out.tokens == reference_greedy(plain_models[arch], ad, inputs, prompt, 6)


@dataclass
class KeepAllWithGuide(Method):
    """Appends the guide and observes, but keeps everything: the guide must leave no trace."""

    name = "test_keep_all_guide"

    def select(self, chunk):
        return [None] * self.plan.num_layers


def test_guide_leaves_no_trace(arch, adapters, plain_models, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    for guide in (None, 3):
        out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1, max_guide_tokens=guide)).run(
            inputs, prompt, KeepAllWithGuide()
        )
        assert rel_err(out.first_logits, reference_logits(plain_models[arch], ad, inputs, prompt)) <= 1e-5
        assert out.kv_tokens_per_layer == [prompt.input_ids.shape[0]] * ad.num_layers


@dataclass
class LayerVaryingKeep(Method):
    """Keeps a different number of tokens in every layer (layer l keeps n - 1 - l, at least
    1), by the norm of the chunk's keys; records what it saw."""

    name = "test_layer_varying"

    def begin(self, plan):
        super().begin(plan)
        self.scores, self.seen, self.kept = {}, [], []

    def observe(self, view):
        self.scores[view.layer] = view.chunk_keys.float().norm(dim=-1).sum(0)
        self.seen.append((view.chunk.index, view.layer, view.query.clone(), view.num_guide, view.cache_len))

    def select(self, chunk):
        n = chunk.num_tokens
        sel = [topk_sorted(self.scores[l], max(1, n - 1 - l)) for l in range(self.plan.num_layers)]
        self.kept.append(sel)
        return sel


def test_varying_per_layer_budgets_decode(arch, adapters, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    m = LayerVaryingKeep()
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=5)).run(inputs, prompt, m)
    kept = [sum(int(s[l].numel()) for s in m.kept) for l in range(ad.num_layers)]
    assert len(set(kept)) == ad.num_layers  # really different per layer
    assert out.kept_video_tokens_per_layer == kept
    text = prompt.num_text_tokens
    # no guide entry survives: the cache holds exactly the kept video tokens + the text
    assert out.kv_tokens_per_layer == [k + text for k in kept]
    # every generated token but the last was fed back through the cache
    assert out.kv_tokens_per_layer_final == [k + text + len(out.tokens) - 1 for k in kept]
    assert len(out.tokens) >= 1
    # each chunk was seen with the guide appended, on top of the compressed cache
    chunk1 = [s for s in m.seen if s[0] == 1]
    assert all(s[3] == prompt.suffix_len for s in chunk1)
    assert [s[4] for s in chunk1] == [prompt.prefix_len + k for k in (int(x.numel()) for x in m.kept[0])]


def test_attention_is_causal_after_compression(arch, adapters, sampled):
    """Perturbing the last frames of chunk 2 must not change any earlier token of that chunk
    in any layer, while layers already hold caches of different lengths (the authors'
    eager/SDPA path leaked future tokens there)."""
    ad = adapters[arch]
    frames = sampled.frames.clone()
    frames2 = frames.clone()
    frames2[10:12] = 255 - frames2[10:12]  # chunk_frames=4 -> chunk 2 = frames 8..11, its second half
    runs = []
    for fr in (frames, frames2):
        inputs = ad.prepare_video(fr, sampled.sampling_fps, sampled.timestamps)
        prompt = ad.build_prompt("Which colour?", inputs)
        m = LayerVaryingKeep()
        Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1)).run(inputs, prompt, m)
        runs.append({(c, l): q for c, l, q, _, _ in m.seen})
    off, fps = inputs.step_token_offsets, inputs.frames_per_step  # steps may differ in length (timestamps)
    n, clean = off[12 // fps] - off[8 // fps], off[10 // fps] - off[8 // fps]  # chunk 2's tokens; those of frames 8..9
    for layer in range(ad.num_layers):
        a, b = runs[0][(2, layer)], runs[1][(2, layer)]
        assert torch.allclose(a[:, :clean], b[:, :clean], atol=1e-6), f"layer {layer} leaks"
        if layer > 0:  # the perturbation is real: the perturbed frames and the guide change
            assert not torch.allclose(a[:, clean:n], b[:, clean:n], atol=1e-4)
            assert not torch.allclose(a[:, n:], b[:, n:], atol=1e-4)
    for c in (0, 1):  # earlier chunks are untouched
        assert torch.equal(runs[0][(c, ad.num_layers - 1)], runs[1][(c, ad.num_layers - 1)])


def test_causal_sdpa_matches_explicit_bottom_right_mask():
    torch.manual_seed(0)
    q = torch.randn(1, 4, 5, 8)
    k = torch.randn(1, 2, 9, 8)
    v = torch.randn(1, 2, 9, 8)
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    s = q @ kk.transpose(-1, -2) / 8**0.5
    i = torch.arange(5)[:, None]
    j = torch.arange(9)[None]
    s = s.masked_fill(j > 9 - 5 + i, float("-inf"))
    ref = s.softmax(-1) @ vv
    assert torch.allclose(causal_sdpa(q, k, v, 8**-0.5), ref, atol=1e-6)
    # square and single-query cases
    assert torch.allclose(causal_sdpa(q, k[:, :, :5], v[:, :, :5], None)[:, :, 0], vv[:, :, 0], atol=1e-6)
    one = causal_sdpa(q[:, :, :1], k, v, None)
    assert torch.allclose(one, (q[:, :, :1] @ kk.transpose(-1, -2) / 8**0.5).softmax(-1) @ vv, atol=1e-6)
    with pytest.raises(ValueError, match="more queries"):
        causal_sdpa(q, k[:, :, :3], v[:, :, :3], None)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-6), (torch.float64, 1e-12), (torch.bfloat16, 2e-2)])
def test_split_attention_equals_the_masked_kernel(dtype, atol):
    """The CPU chunk path (cache part + square causal part, merged by log-sum-exp) = one
    SDPA call with the bottom-right mask, with grouped-query heads."""
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    from retake.engine.attention import split_causal_sdpa

    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 8, 37, 16, generator=g).to(dtype)
    k = torch.randn(1, 2, 100, 16, generator=g).to(dtype)
    v = torch.randn(1, 2, 100, 16, generator=g).to(dtype)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=causal_lower_right(37, 100),
                                         enable_gqa=True)
    for scale in (None, 0.3):
        want = ref if scale is None else F.scaled_dot_product_attention(
            q.double(), k.double(), v.double(), attn_mask=causal_lower_right(37, 100), enable_gqa=True, scale=scale)
        got = split_causal_sdpa(q, k, v, scale)
        assert got.dtype == dtype and got.shape == want.shape
        assert torch.allclose(got.double(), want, atol=atol), (got.double() - want).abs().max()


def test_engine_config_and_budget_errors(adapters, sampled):
    ad = adapters["qwen2_vl"]
    inputs, prompt = make_inputs(ad, sampled)
    with pytest.raises(ValueError, match="chunk_frames"):
        EngineConfig(chunk_frames=0)
    with pytest.raises(ValueError, match="multiple of 2 frames"):
        Engine(ad, EngineConfig(chunk_frames=3)).run(inputs, prompt, get_method("none"))
    with pytest.raises(ValueError, match="no room for video"):
        Engine(ad, EngineConfig(max_context=10)).run(inputs, prompt, get_method("none"))


def test_method_registry_errors():
    with pytest.raises(ValueError, match="valid choices: .*none"):
        get_method("nope")
    with pytest.raises(ValueError, match="no parameter"):
        get_method("none", ratio=0.5)


def test_model_runs_outside_engine(adapters, plain_models, sampled):
    """The registered attention function leaves the model usable as an ordinary model."""
    ad = adapters["qwen2_vl"]
    inputs, prompt = make_inputs(ad, sampled)
    a = reference_logits(ad.model, ad, inputs, prompt)
    b = reference_logits(plain_models["qwen2_vl"], ad, inputs, prompt)
    assert rel_err(a, b) <= 1e-6


def test_sampling_feeds_engine(video_path, adapters):
    """A non-default sampling (odd fps, frame cap) still gives even frames and runs."""
    v = load_video(video_path, fps=1.3, max_frames=10, max_long_side=56, backend="pyav")
    assert v.num_frames % 2 == 0 and v.num_frames <= 10
    ad = adapters["qwen2_5_vl"]
    inputs, prompt = make_inputs(ad, v)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=2)).run(inputs, prompt, get_method("none"))
    assert out.video_tokens == inputs.num_tokens


def test_rope_scaling_factor_yarn_keeps_mrope(tiny_dirs, sampled):
    """YaRN x4 on the language model, M-RoPE sections kept; the engine stays exact against
    the plain model loaded with the same scaled config."""
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    from retake.models import apply_yarn, load_adapter

    path = tiny_dirs["qwen2_vl"]
    ad = load_adapter(path, dtype="float32", device="cpu", rope_scaling_factor=4.0)
    rp = ad.model.config.text_config.rope_parameters
    assert rp["rope_type"] == "yarn" and rp["factor"] == 4.0 and rp["mrope_section"] == [2, 3, 3]
    base = load_adapter(path, dtype="float32", device="cpu")
    pos = torch.arange(0, 3000, 100).expand(3, -1)
    like = torch.zeros(1, dtype=torch.float32)
    assert not torch.allclose(ad.rope(pos, like)[0], base.rope(pos, like)[0])
    cfg = AutoConfig.from_pretrained(path)
    apply_yarn(cfg, 4.0)
    plain = Qwen2VLForConditionalGeneration.from_pretrained(path, config=cfg, dtype=torch.float32, attn_implementation="sdpa").eval()
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    assert rel_err(out.first_logits, reference_logits(plain, ad, inputs, prompt)) <= 1e-5
    with pytest.raises(ValueError, match="rope_scaling_factor"):
        apply_yarn(cfg, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("arch_name", ["qwen2_vl", "qwen2_5_vl"])
def test_exactness_at_larger_size(tmp_path, arch_name):
    """Same equivalence as above on a bigger random model and a longer input: 8 layers,
    hidden 256, 8/2 heads, 128 frames at 224 px -> 4096 video tokens, 32-frame chunks."""
    from retake.models import load_adapter
    from retake.tiny import write_tiny_model

    path = write_tiny_model(arch_name, tmp_path / arch_name, seed=1, layers=8, hidden=256, heads=8, kv_heads=2)
    ad = load_adapter(path, dtype="float32", device="cpu")
    frames = torch.randint(0, 256, (128, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = ad.prepare_video(frames, 2.0, [i / 2 for i in range(128)])
    prompt = ad.build_prompt("Describe the video in one sentence.", inputs)
    assert inputs.num_tokens == 4096
    out = Engine(ad, EngineConfig(chunk_frames=32, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    ref = reference_logits(plain_model(path), ad, inputs, prompt)
    assert rel_err(out.first_logits, ref) <= 1e-5


def test_cache_keep_with_merged_and_extra_entries():
    """LayerKeep: kept entries may be replaced (merging methods) and extra entries appended
    (recycling methods); both land right after the older entries, in that order."""
    from retake.engine import CompressibleCache
    from retake.methods import LayerKeep

    cache = CompressibleCache()
    k = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(1, 2, 7, 3)
    cache.update(k, -k, 0)
    rk, ek = torch.full((2, 2, 3), 0.5), torch.full((2, 1, 3), 9.0)
    cache.keep(0, 3, LayerKeep(torch.tensor([1, 3]), keys=rk, values=-rk, extra_keys=ek, extra_values=-ek))
    lay = cache.layers[0]
    assert torch.equal(lay.keys[0, :, :3], k[0, :, :3])
    assert torch.equal(lay.keys[0, :, 3:5], rk) and torch.equal(lay.values[0, :, 3:5], -rk)
    assert torch.equal(lay.keys[0, :, 5:], ek) and cache.lengths() == [6]
    cache.keep(0, 4, LayerKeep(torch.tensor([0])))  # a plain index keeps the cache's own entries: [rk1, ek] -> rk1
    assert torch.equal(cache.layers[0].keys[0, :, 4], rk[:, 1])
    with pytest.raises(ValueError, match="pairs"):
        LayerKeep(torch.tensor([0]), keys=rk[:, :1])
    with pytest.raises(ValueError, match="entries for 1 kept"):
        LayerKeep(torch.tensor([0]), keys=rk, values=rk)
