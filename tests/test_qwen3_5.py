"""Qwen3.5, dense and MoE: a hybrid language model (Gated DeltaNet layers beside attention
layers). The engine against the unmodified model, and what a hybrid demands of it: the guide,
a scoring pass and a reused video leave the recurrent states exactly as the video alone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from conftest import make_inputs
from test_qwen3_vl import plain_logits, rel_err  # the same processor-equivalent forward
from retake.engine import CompressibleCache, Engine, EngineConfig
from retake.methods import METHODS, LayerKeep, Method, get_method

QUESTION = "What happens in the video? Answer briefly."


def plain_model(path):
    from transformers import AutoConfig

    from retake.models import MODEL_FAMILIES

    model_class = MODEL_FAMILIES[AutoConfig.from_pretrained(path).model_type][0]()
    return model_class.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def plain(new_dirs):
    return {arch: plain_model(new_dirs[arch]) for arch in ("qwen3_5", "qwen3_5_moe")}


@pytest.fixture(params=["qwen3_5", "qwen3_5_moe"])
def hybrid(request, new_adapters):
    return request.param, new_adapters[request.param]


def states(cache: CompressibleCache) -> list[torch.Tensor]:
    return [x for lay in cache.state_layers for x in (*lay.conv_states.values(), *lay.recurrent_states.values())]


def test_the_stack_is_hybrid(hybrid):
    arch, ad = hybrid
    types = ad.layer_types
    assert types.count("linear_attention") == 3 * types.count("full_attention")  # every 4th holds KV
    assert ad.num_layers == types.count("full_attention") == 2
    cache = CompressibleCache(types)
    assert cache.kv_ids == [3, 7] and len(cache.state_layers) == 6


def test_positions_equal_transformers_get_rope_index(hybrid, sampled):
    _, ad = hybrid
    inputs, prompt = make_inputs(ad, sampled)
    ids = prompt.input_ids[None]
    hf, delta = ad.model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == ad.video_token_id).long() * 2, video_grid_thw=torch.tensor([inputs.grid_thw]))
    assert torch.equal(prompt.position_ids, hf[:, 0])
    assert int(prompt.position_ids.max()) + 1 == ids.shape[1] + int(delta)


@torch.no_grad()
def split_logits(model, ad, inputs, prompt, cuts):
    """The unmodified language model run over the same input embeddings in pieces cut at
    ``cuts`` (token offsets), with transformers' own cache: its linear attention carries the
    state across the cuts."""
    from transformers import DynamicCache

    x = ad.embed(prompt.input_ids)
    x[0, prompt.video_start : prompt.video_end] = ad.encode_video(inputs)
    pos = prompt.position_ids[:, None]
    cache, lm = DynamicCache(config=model.config.get_text_config()), model.model.language_model
    bounds = [0, *cuts, x.shape[1]]
    for a, b in zip(bounds, bounds[1:]):
        h = lm(inputs_embeds=x[:, a:b], position_ids=pos[..., a:b], past_key_values=cache, use_cache=True).last_hidden_state
    return model.lm_head(h[0, -1])


@pytest.mark.parametrize("fast_paths", [True, False])
@pytest.mark.parametrize("chunk_frames", [2, 6, 64])
def test_chunked_prefill_equals_the_model_in_the_same_pieces(hybrid, plain, sampled, chunk_frames, fast_paths):
    """`none` in chunks = the unmodified model run in the same pieces (prefix, chunks, question)
    with transformers' own cache, to 1e-5: the engine adds nothing to the linear layers' state."""
    arch, ad = hybrid
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=chunk_frames, max_new_tokens=1, fast_paths=fast_paths)).run(
        inputs, prompt, get_method("none"))
    vs, off, per = prompt.video_start, inputs.step_token_offsets, chunk_frames // inputs.frames_per_step
    cuts = [vs + off[s] for s in range(0, len(off) - 1, per)] + [prompt.video_end]
    if fast_paths:  # the prefix runs in the first chunk's forward
        cuts = cuts[1:]
    assert rel_err(out.first_logits, split_logits(plain[arch], ad, inputs, prompt, cuts)) <= 1e-5
    assert out.kv_tokens_per_layer == [prompt.input_ids.shape[0]] * ad.num_layers
    assert out.state_bytes > 0


@pytest.mark.parametrize("chunk_frames", [2, 64])
def test_chunked_prefill_is_near_one_plain_forward(hybrid, plain, sampled, chunk_frames):
    """Against one ordinary forward of the whole prompt (the processor's inputs): within 5e-5.
    Not 1e-5: transformers' linear-attention kernel computes in fp32 in blocks of 64 tokens, so
    the model itself, cut anywhere but at a multiple of 64, moves by as much (measured below)."""
    arch, ad = hybrid
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=chunk_frames, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    whole = plain_logits(plain[arch], ad, inputs, prompt)
    assert rel_err(out.first_logits, whole) <= 5e-5
    itself = split_logits(plain[arch], ad, inputs, prompt, [prompt.video_end])  # the model cut once, by itself
    assert rel_err(itself, whole) > 1e-6  # (so 1e-5 against the whole forward would test the kernel, not us)


def test_greedy_answer_equals_the_model_decoding(hybrid, plain, sampled):
    """Greedy decoding from the engine's cache = the unmodified model fed the same pieces and then
    its own tokens one at a time with transformers' cache (its recurrent decode kernel). (A full
    recompute per token would cut the linear attention elsewhere; with the MoE's random router a
    1e-5 difference can pick another expert.)"""
    from transformers import DynamicCache

    arch, ad = hybrid
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=5, fast_paths=False)).run(inputs, prompt, get_method("none"))
    model = plain[arch]
    vs, off = prompt.video_start, inputs.step_token_offsets
    cuts = [vs + off[s] for s in range(0, len(off) - 1, 2)] + [prompt.video_end]
    x = ad.embed(prompt.input_ids)
    x[0, vs : prompt.video_end] = ad.encode_video(inputs)
    pos = prompt.position_ids[:, None]
    cache, lm, toks = DynamicCache(config=model.config.get_text_config()), model.model.language_model, []
    with torch.no_grad():
        bounds = [0, *cuts, x.shape[1]]
        for a, b in zip(bounds, bounds[1:]):
            h = lm(inputs_embeds=x[:, a:b], position_ids=pos[..., a:b], past_key_values=cache, use_cache=True).last_hidden_state
        nxt = int(pos.max()) + 1
        for _ in range(5):
            toks.append(int(model.lm_head(h[0, -1]).argmax()))
            if toks[-1] in ad.eos_token_ids:
                break
            h = lm(inputs_embeds=ad.embed(torch.tensor([toks[-1]])), position_ids=torch.full((3, 1, 1), nxt),
                   past_key_values=cache, use_cache=True).last_hidden_state
            nxt += 1
    assert out.tokens == toks


@dataclass
class GuidedKeepAll(Method):
    """Shown the guide with every chunk (and the chunk's and guide's queries in every attention
    layer), keeps everything: the run must be `none`'s."""

    name = "test_guided_keep_all"

    def begin(self, plan):
        super().begin(plan)
        self.seen = []

    def observe(self, view):
        self.seen.append((view.chunk.index, view.layer, view.query.shape[1], view.num_chunk, view.num_guide))

    def select(self, chunk):
        return [None] * self.plan.num_layers


@pytest.mark.parametrize("fast_paths", [True, False])
def test_the_guide_leaves_no_trace_in_the_recurrent_state(hybrid, sampled, fast_paths):
    """After every chunk the linear layers' states are those of the chunk alone (to 1e-6), so a
    guided method that keeps everything answers as `none`; each attention layer was shown the
    chunk's and the guide's queries together, once."""
    _, ad = hybrid
    inputs, prompt = make_inputs(ad, sampled)
    cfg = EngineConfig(chunk_frames=4, max_new_tokens=3, fast_paths=fast_paths)
    engine = Engine(ad, cfg)
    ref = engine.prefill_video(inputs, prompt, get_method("none"))
    m = GuidedKeepAll()
    got = engine.prefill_video(inputs, prompt, m, guide=prompt)
    for a, b in zip(states(ref.cache), states(got.cache)):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    g = prompt.input_ids.shape[0] - prompt.video_end
    chunks = len(range(0, inputs.num_frames, 4))
    assert len(m.seen) == chunks * ad.num_layers and all(s[4] == g and s[2] == s[3] + g for s in m.seen)
    a, b = engine.answer(ref, prompt), engine.answer(got, prompt)
    assert a.tokens == b.tokens and rel_err(b.first_logits, a.first_logits) <= 1e-5


class KeepAllTwoPass(Method):
    """A two-pass method whose scoring pass reads every group and then feeds every token."""

    name = "test_two_pass_keep_all"
    scoring_pass = True
    observes = True

    def scoring_layers(self, num_layers):
        return 1  # stop after the first attention layer: the linear layers before it ran

    def select(self, chunk):
        return [None] * self.plan.num_layers

    def end_scoring(self):
        self.plan.input_keep = torch.ones(self.plan.num_video_tokens, dtype=torch.bool)


def test_a_scoring_pass_leaves_no_state_behind(hybrid, sampled):
    _, ad = hybrid
    inputs, prompt = make_inputs(ad, sampled)
    engine = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=2))
    ref = engine.run(inputs, prompt, get_method("none"))
    out = engine.run(inputs, prompt, KeepAllTwoPass())
    assert out.tokens == ref.tokens and rel_err(out.first_logits, ref.first_logits) <= 1e-5


@pytest.mark.parametrize("name", ["snapkv", "adakv", "retake", "flexselect", "infinipot_v", "knorm"])
def test_a_reused_video_answers_as_fresh_runs(hybrid, sampled, name):
    """Question-unknown reuse: the compressed KV and the recurrent states are restored before
    every question; answers and logits equal per-question runs."""
    _, ad = hybrid
    inputs, _ = make_inputs(ad, sampled)
    proxy = ad.build_prompt("", inputs)
    prompts = [ad.build_prompt(q, inputs) for q in ("What colour is it?", "How many times?", QUESTION)]
    budget = proxy.num_text_tokens + 16 + int(0.3 * inputs.num_tokens)
    engine = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=3, question_mode="unknown",
                                      question_tokens=16))
    features, _ = engine.encode(inputs)
    method = get_method(name)
    kind, guide = engine.guide_for(method, prompts[0], proxy, "unknown")
    state = engine.prefill_video(inputs, proxy, method, features=features, guide=guide,
                                 text_tokens=engine.budget_text_tokens(prompts[0], proxy, "unknown"), guide_kind=kind)
    outs = [engine.answer(state, p) for p in (*prompts, prompts[0])]
    fresh = [engine.run(inputs, p, get_method(name), features=features, proxy=proxy) for p in prompts]
    for out, ref in zip(outs, fresh + fresh[:1]):
        assert out.tokens == ref.tokens and torch.equal(out.first_logits, ref.first_logits)


def test_per_head_keeps_and_reforging(hybrid, sampled):
    """Per-KV-head eviction works on the attention layers of a hybrid; position reforging (one
    id space per layer) is refused with a clear error."""
    _, ad = hybrid
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=2)).run(
        inputs, prompt, get_method("adakv"), return_cache=True)
    assert len(out.cache.kv_layers) == ad.num_layers and any(lay.ragged for lay in out.cache.kv_layers)
    with pytest.raises(ValueError, match="reforging is not supported on a hybrid"):
        Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, reforge_positions=True)).run(
            inputs, prompt, get_method("adaretake"))


def test_layer_keep_on_a_hybrid_maps_to_attention_layers():
    """The cache's KV layer ids are the attention layers', in order; states are copied and put
    back in place."""
    cache = CompressibleCache(["linear_attention", "full_attention", "linear_attention", "full_attention"])
    k = torch.arange(2 * 5, dtype=torch.float32).reshape(1, 2, 5, 1)
    cache.update(k, k, 1)
    cache.update(10 + k, 10 + k, 3)
    cache.keep(1, 2, LayerKeep(torch.tensor([0, 2])))
    assert cache.lengths() == [5, 4] and cache.layers[3].keys[0, 0, :, 0].tolist() == [10, 11, 12, 14]
    lay = cache.layers[0]
    lay.update_conv_state(torch.ones(1, 3, 4))
    lay.update_recurrent_state(torch.ones(1, 2, 2, 2))
    saved = cache.save_states()
    lay.update_conv_state(torch.full((1, 3, 1), 5.0))
    lay.update_recurrent_state(torch.zeros(1, 2, 2, 2))
    address = lay.recurrent_states[0].data_ptr()
    cache.load_states(saved)
    assert torch.equal(lay.conv_states[0], torch.ones(1, 3, 4)) and torch.equal(lay.recurrent_states[0], torch.ones(1, 2, 2, 2))
    assert lay.recurrent_states[0].data_ptr() == address
    with pytest.raises(ValueError, match="not supported"):
        CompressibleCache(["sliding_attention", "linear_attention"])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_nothing_to_compress_is_none_on_a_hybrid(new_adapters, sampled, name):
    """Every method, when the whole video fits, answers exactly as `none` on the hybrid too."""
    ad = new_adapters["qwen3_5"]
    inputs, prompt = make_inputs(ad, sampled)
    cfg = EngineConfig(chunk_frames=4, max_context=10**6, max_new_tokens=2)
    params = {"filter_threshold": 1.0} if name == "streammem" else {"stages": 2} if name == "pyramiddrop" else {}
    ref = Engine(ad, cfg).run(inputs, prompt, get_method("none"))
    out = Engine(ad, cfg).run(inputs, prompt, get_method(name, **params))
    assert torch.equal(out.first_logits, ref.first_logits) and out.tokens == ref.tokens


def test_a_cell_through_lmms_eval(new_dirs, tmp_path):
    """`--model retake` with a Qwen3.5 checkpoint: a cell through lmms-eval's evaluator, every
    sample answered within budget; the linear-attention state bytes reach the predictions and
    the efficiency block."""
    import json
    import os

    from retake.harness.runner import run_cell
    from retake.harness.benchmarks.synthetic import write_synthetic_benchmark

    data = write_synthetic_benchmark(tmp_path / "data", formats=("synthetic",), num_videos=2, questions_per_video=2)
    cfg = {
        "model": {"name": "tiny_qwen3_5", "pretrained": new_dirs["qwen3_5"], "dtype": "float32",
                  "attn_implementation": "sdpa", "rope_scaling_factor": None, "device": "cpu"},
        "method": {"name": "adakv", "params": {}},
        "dataset": {"name": "synthetic", "data_root": data["synthetic"]},
        "sampling": {"fps": 2.0, "max_frames": 8, "max_long_side": 128},
        "engine": {"max_context": 280, "chunk_frames": 4, "max_new_tokens": 3},
        "run": {"results_root": str(tmp_path / "runs"), "limit": None, "overwrite": False},
    }
    result = run_cell(cfg)
    assert result["failures"] == [] and result["lmms_eval"]["agrees"]
    eff = result["efficiency"]
    assert eff["num_samples"] == 4 and eff["recurrent_state_bytes"]["mean"] > 0
    assert 0 < eff["achieved_keep_ratio"]["mean"] < 1 and eff["kv_tokens_per_layer"]["mean"] <= 280 + 2
    (cell_dir,) = os.listdir(tmp_path / "runs")
    with open(tmp_path / "runs" / cell_dir / "predictions.jsonl") as f:
        assert all(json.loads(line)["recurrent_state_bytes"] == eff["recurrent_state_bytes"]["mean"] for line in f)
