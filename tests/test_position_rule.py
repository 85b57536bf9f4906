"""``model.position_rule``: ``trained`` (Qwen's rule, the default) and ``transformers``
(transformers 5.x's ``get_rope_index``, what lmms-eval's wrappers compute on transformers 5)."""

from __future__ import annotations

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import METHODS, LayerKeep, get_method
from retake.models import load_adapter

QWEN2 = ("qwen2_vl", "qwen2_5_vl")


@pytest.fixture(scope="module")
def by_rule(tiny_dirs):
    """Each Qwen2 family loaded once per rule (the session's adapters stay on the default)."""
    return {(arch, rule): load_adapter(tiny_dirs[arch], dtype="float32", device="cpu", position_rule=rule)
            for arch in QWEN2 for rule in ("trained", "transformers")}


def hf_kwargs(arch, inputs):
    kw = {"video_grid_thw": torch.tensor([inputs.grid_thw])}
    if arch == "qwen2_5_vl":
        kw["second_per_grid_ts"] = torch.tensor([inputs.frames_per_step / inputs.sampling_fps])
    return kw


@pytest.mark.parametrize("arch", QWEN2)
def test_transformers_rule_is_get_rope_index_exactly(arch, by_rule, sampled):
    ad = by_rule[(arch, "transformers")]
    inputs, prompt = make_inputs(ad, sampled)
    ids = prompt.input_ids[None]
    hf, _ = ad.model.model.get_rope_index(ids, mm_token_type_ids=(ids == ad.video_token_id).long() * 2,
                                          **hf_kwargs(arch, inputs))
    assert torch.equal(prompt.position_ids, hf[:, 0])
    trained = make_inputs(by_rule[(arch, "trained")], sampled)[1].position_ids
    ve = prompt.video_end
    assert torch.equal(trained[:, :ve], prompt.position_ids[:, :ve])  # only the text after the video moves
    assert int(trained[0, ve]) > int(prompt.position_ids[0, ve])


@pytest.mark.parametrize("arch", QWEN2)
def test_none_under_the_transformers_rule_is_the_unmodified_model(arch, by_rule, sampled):
    """No compression at the transformers rule = transformers' own forward of the same tokens
    and pixels, positions computed by transformers itself (nothing of ours given to it)."""
    ad = by_rule[(arch, "transformers")]
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    with torch.no_grad():
        hf = ad.model(input_ids=prompt.input_ids[None], pixel_values_videos=inputs.pixel_values,
                      mm_token_type_ids=(prompt.input_ids[None] == ad.video_token_id).long() * 2,
                      **hf_kwargs(arch, inputs)).logits[0, -1].float()
    assert torch.allclose(out.first_logits, hf, atol=2e-5, rtol=1e-5), (out.first_logits - hf).abs().max()
    trained = Engine(by_rule[(arch, "trained")], EngineConfig(chunk_frames=4, max_new_tokens=1)).run(
        inputs, make_inputs(by_rule[(arch, "trained")], sampled)[1], get_method("none"))
    assert not torch.allclose(trained.first_logits, hf, atol=1e-3)  # the rule matters on this prompt


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_decides_the_same_under_both_rules(name, by_rule, sampled):
    """The chunks and their guide sit at the same ids under both rules (only the question after
    the video moves), so every method keeps the same tokens; the answer is computed at the rule's
    positions and decodes."""
    arch = "qwen2_5_vl"
    runs = {}
    for rule in ("trained", "transformers"):
        ad = by_rule[(arch, rule)]
        inputs, prompt = make_inputs(ad, sampled)
        rec = Recorder(get_method(name, **({"filter_threshold": 1.0} if name == "streammem" else {})))
        cfg = EngineConfig(chunk_frames=4, max_context=prompt.num_text_tokens + int(0.3 * inputs.num_tokens),
                           max_new_tokens=2)
        runs[rule] = (Engine(ad, cfg).run(inputs, prompt, rec), rec)
    (a, ra), (b, rb) = runs["trained"], runs["transformers"]
    assert a.kept_video_tokens_per_layer == b.kept_video_tokens_per_layer
    assert a.kv_tokens_per_layer == b.kv_tokens_per_layer
    assert ra.selected.keys() == rb.selected.keys()
    for c in ra.selected:
        for x, y in zip(ra.selected[c], rb.selected[c]):
            x, y = (k.index if isinstance(k, LayerKeep) else k for k in (x, y))
            assert (x is None and y is None) or torch.equal(x, y), (name, c)
    assert len(b.tokens) >= 1


def test_reforging_needs_the_trained_rule(by_rule):
    with pytest.raises(ValueError, match="reforge_positions needs model.position_rule=trained"):
        Engine(by_rule[("qwen2_5_vl", "transformers")], EngineConfig(reforge_positions=True))
    Engine(by_rule[("qwen2_5_vl", "trained")], EngineConfig(reforge_positions=True))


def test_a_bad_rule_names_the_valid_ones(tiny_dirs):
    with pytest.raises(ValueError, match="position_rule.*valid: trained, transformers"):
        load_adapter(tiny_dirs["qwen2_5_vl"], dtype="float32", device="cpu", position_rule="hf")


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_decoding_is_transformers_generate(by_rule, sampled, penalty):
    """`none` under the transformers rule decodes the tokens transformers' own greedy `generate`
    gives for the same ids and pixels (positions its own), with its repetition penalty (every
    token of the prompt and of the answer so far: logit / p where positive, x p where not)."""
    arch = "qwen2_5_vl"
    ad = by_rule[(arch, "transformers")]
    inputs, prompt = make_inputs(ad, sampled)
    n = 8
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=n, repetition_penalty=penalty)).run(
        inputs, prompt, get_method("none"))
    ids = prompt.input_ids[None]
    with torch.no_grad():
        hf = ad.model.generate(input_ids=ids, pixel_values_videos=inputs.pixel_values,
                               mm_token_type_ids=(ids == ad.video_token_id).long() * 2, **hf_kwargs(arch, inputs),
                               max_new_tokens=n, do_sample=False, repetition_penalty=penalty, eos_token_id=None,
                               min_new_tokens=n)
    assert out.tokens == hf[0, ids.shape[1]:].tolist()[: len(out.tokens)]
    if penalty == 1.0:
        cfg = EngineConfig(chunk_frames=4, max_new_tokens=n, repetition_penalty=None)  # the checkpoint's: none
        assert Engine(ad, cfg).run(inputs, prompt, get_method("none")).tokens == out.tokens
