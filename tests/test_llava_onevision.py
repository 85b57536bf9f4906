"""LLaVA-Video (transformers LlavaOnevision): adapter, engine exactness, weight conversion."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import load_script, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.models import load_adapter
from retake.models.llava_onevision import pooled_tokens_per_frame
from test_engine import plain_model, reference_greedy, reference_logits, rel_err

ARCH = "llava_onevision"


@pytest.fixture(scope="module")
def ad(adapters):
    return adapters[ARCH]


@pytest.fixture(scope="module")
def plain(tiny_dirs):
    return plain_model(tiny_dirs[ARCH])


def test_tokens_per_frame():
    assert pooled_tokens_per_frame(384, 14) == 196  # 27 x 27 patches -> 14 x 14 (ceil)
    assert pooled_tokens_per_frame(70, 14) == 9  # the tiny tower: 5 x 5 -> 3 x 3


def test_prompt_layout(ad, sampled):
    """One video span of T * 9 + 1 tokens, the newline last and in the last grid step;
    1-D consecutive positions; LLaVA-Video's ChatML prompt around it."""
    inputs, prompt = make_inputs(ad, sampled, question="Why?")
    T = inputs.num_frames
    assert inputs.frames_per_step == 1 and inputs.tokens_per_step == 9
    assert inputs.step_token_offsets == [9 * s for s in range(T)] + [9 * T + 1]
    is_video = prompt.input_ids == ad.video_token_id
    assert int(is_video.sum()) == inputs.num_tokens == 9 * T + 1
    assert bool(is_video[prompt.video_start : prompt.video_end].all())  # exactly one contiguous span
    assert prompt.position_ids.shape == (1, prompt.input_ids.shape[0])
    assert torch.equal(prompt.position_ids[0], torch.arange(prompt.input_ids.shape[0]))
    tok = ad.tokenizer
    assert tok.decode(prompt.input_ids[: prompt.video_start]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert tok.decode(prompt.input_ids[prompt.video_end :]) == "\nWhy?<|im_end|>\n<|im_start|>assistant\n"


def test_video_features_batched_and_newline_last(ad, sampled):
    """Encoding 3 frames at a time equals transformers' get_video_features on the whole video
    (its pooling and newline); the last row is the model's image_newline."""
    inputs, _ = make_inputs(ad, sampled)
    feats = ad.encode_video(inputs, batch_steps=3)
    with torch.no_grad():
        ref = ad.model.model.get_video_features(inputs.pixel_values[None]).pooler_output[0]
    assert feats.shape == (inputs.num_tokens, ad.text_config.hidden_size)
    assert torch.allclose(feats, ref, atol=1e-6)
    assert torch.equal(feats[-1], ad.model.model.image_newline.detach())


def test_step_features_leave_the_newline_out(ad, sampled):
    """The frame feature of AdaReTaKe's temporal allocation (and DPSelect's grid) is the mean
    of a frame's pooled tokens: the newline token closing the last step is not part of it."""
    from retake.methods.base import VideoPlan

    inputs, prompt = make_inputs(ad, sampled)
    feats = torch.randn(inputs.num_tokens, 8)
    plan = VideoPlan(num_layers=1, chunks=[], keep_ratio=1.0, max_context=10**6, num_video_tokens=inputs.num_tokens,
                     num_text_tokens=prompt.num_text_tokens, tokens_per_step=inputs.tokens_per_step,
                     step_token_offsets=inputs.step_token_offsets, features=feats, visual_mask=inputs.visual_mask)
    off, m = inputs.step_token_offsets, inputs.tokens_per_step
    assert off[-1] - off[-2] == m + 1  # the last step holds the newline
    expected = torch.stack([feats[off[s] : off[s] + m].mean(0) for s in range(inputs.num_steps)])
    assert torch.allclose(plan.step_features(), expected)
    assert not torch.allclose(plan.step_features()[-1], feats[off[-2] : off[-1]].mean(0))


def test_preprocessing_matches_siglip_processor(ad, sampled):
    """x/255, mean/std 0.5 at the tower's size: transformers' SigLIP processor (PIL) gives the
    same values for frames already at that size, and within resampling rounding otherwise."""
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    size = ad.pp.image_size
    proc = SiglipImageProcessorPil(size={"height": size, "width": size})
    frames = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = ad.prepare_video(frames, 2.0, [0.0, 0.5, 1.0]).pixel_values
    ref = proc([f.permute(1, 2, 0).numpy() for f in frames], return_tensors="pt")["pixel_values"]
    assert torch.allclose(ours, ref, atol=1e-5)
    ours = ad.prepare_video(sampled.frames[:2], 2.0, [0.0, 0.5]).pixel_values
    ref = proc([f.permute(1, 2, 0).numpy() for f in sampled.frames[:2]], return_tensors="pt")["pixel_values"]
    assert ours.shape == ref.shape and float((ours - ref).abs().mean()) < 0.02


@pytest.mark.parametrize("chunk_frames", [1, 3, 5])
def test_chunked_prefill_equals_plain_forward(ad, plain, sampled, chunk_frames):
    """Chunks of any frame count (a grid step is one frame), the newline in the last chunk."""
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=chunk_frames, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    assert rel_err(out.first_logits, reference_logits(plain, ad, inputs, prompt)) <= 1e-5
    assert out.kv_tokens_per_layer == [prompt.input_ids.shape[0]] * ad.num_layers


def test_greedy_answer_equals_plain_model(ad, plain, sampled):
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=3, max_new_tokens=8)).run(inputs, prompt, get_method("none"))
    assert out.tokens == reference_greedy(plain, ad, inputs, prompt, 8)


def test_tiny_model_command(tmp_path, sampled):
    from retake.cli import main

    assert main(["tiny-model", "--arch", ARCH, str(tmp_path / "m")]) == 0
    ad = load_adapter(str(tmp_path / "m"), dtype="float32", device="cpu")
    assert ad.model.config.model_type == ARCH and ad.pp.image_mean == (0.5, 0.5, 0.5)
    inputs, prompt = make_inputs(ad, sampled)
    assert Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=2)).run(inputs, prompt, get_method("adaretake")).tokens


# -- conversion from the original LLaVA-Video layout -----------------------------------------

# The test's own mapping, transformers prefix -> original (LLaVA-NeXT) prefix, written from the
# two models' module trees; the script's mapping is not used to build the reference.
HF_TO_ORIGINAL = [
    ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("model.image_newline", "model.image_newline"),
    ("model.language_model.", "model."),
    ("lm_head.", "lm_head."),
]


def to_original(key: str) -> str:
    for hf, orig in HF_TO_ORIGINAL:
        if key.startswith(hf):
            return orig + key[len(hf) :]
    raise KeyError(key)


def load_converter():
    return load_script("convert_llava_video_weights")


def write_original_checkpoint(path, hf_config, tokenizer, seed=0) -> dict[str, torch.Tensor]:
    """Random tensors under the original key names in two shards (plus a stray rotary buffer,
    which the original checkpoints carry), an original-style config.json and the tokenizer
    (without <image>/<video>). Returns the tensors by original name."""
    from safetensors.torch import save_file
    from transformers import LlavaOnevisionForConditionalGeneration

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlavaOnevisionForConditionalGeneration(hf_config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    tensors = {to_original(k): torch.randn(s, generator=g) / max(1, s[-1]) ** 0.5 for k, s in shapes.items()}
    keys = sorted(tensors)
    os.makedirs(path, exist_ok=True)
    save_file({k: tensors[k] for k in keys[: len(keys) // 2]}, os.path.join(path, "model-00001-of-00002.safetensors"))
    rest = {k: tensors[k] for k in keys[len(keys) // 2 :]}
    rest["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    save_file(rest, os.path.join(path, "model-00002-of-00002.safetensors"))
    text = hf_config.text_config
    original = {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava",
        "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "hidden_act": "silu", "rms_norm_eps": text.rms_norm_eps,
        "rope_theta": 10000.0, "max_position_embeddings": 4096, "vocab_size": text.vocab_size,
        "tie_word_embeddings": False, "torch_dtype": "float32", "use_sliding_window": False,
        "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": hf_config.vision_config.hidden_size, "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_spatial_pool_stride": 2, "mm_spatial_pool_mode": "bilinear",
        "mm_patch_merge_type": "spatial_unpad", "image_aspect_ratio": "anyres_max_9",
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(original, f, indent=2)
    tokenizer.save_pretrained(path)
    return tensors


def test_conversion_gives_the_same_model(tmp_path, sampled):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from retake.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    vocab = len(tok) + 8  # room for <image>/<video>, as Qwen2's padded vocabulary has
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", vocab_size=vocab, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=70, patch_size=14, vision_use_head=False),
        image_token_index=len(tok), video_token_index=len(tok) + 1, tie_word_embeddings=False,
    )
    src, dst = tmp_path / "original", tmp_path / "hf"
    tensors = write_original_checkpoint(src, config, tok)
    load_converter().main([str(src), str(dst), "--vision-num-heads", "2"])

    # reference: the HF model assembled by hand from the same tensors
    ref = LlavaOnevisionForConditionalGeneration(config).eval()
    by_original = {to_original(k): k for k in ref.state_dict()}
    ref.load_state_dict({by_original[k]: v for k, v in tensors.items()}, strict=True)

    converted, info = LlavaOnevisionForConditionalGeneration.from_pretrained(str(dst), dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    cfg = converted.config
    assert (cfg.vision_config.image_size, cfg.vision_config.num_hidden_layers, cfg.vision_config.num_attention_heads) == (70, 2, 2)
    ad = load_adapter(str(dst), dtype="float32", device="cpu")
    assert ad.video_token_id == ad.tokenizer.convert_tokens_to_ids("<video>") == cfg.video_token_id
    assert ad.pp.image_mean == (0.5, 0.5, 0.5) and ad.pp.image_size == 70
    assert set(ad.eos_token_ids) == {ad.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    inputs, prompt = make_inputs(ad, sampled)
    a = reference_logits(converted.eval(), ad, inputs, prompt)
    b = reference_logits(ref, ad, inputs, prompt)
    assert rel_err(a, b) <= 1e-5
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    assert rel_err(out.first_logits, b) <= 1e-5


def test_conversion_rejects_unknown_keys():
    conv = load_converter()
    assert conv.map_key("model.layers.3.mlp.up_proj.weight") == "model.language_model.layers.3.mlp.up_proj.weight"
    assert conv.map_key("model.vision_tower.vision_tower.vision_model.post_layernorm.bias") == "model.vision_tower.post_layernorm.bias"
    assert conv.map_key("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    with pytest.raises(KeyError, match="no mapping"):
        conv.map_key("model.vision_resampler.weight")


def test_uniform_counts_the_newline(ad, video_path):
    """``uniform`` fits frames with a step's full cost: 6 frames' grid tokens leave no room
    for the newline, so 4 frames (an even count) are sampled, within the budget."""
    from retake.pipeline import SamplingConfig, answer_question

    sampling = SamplingConfig(fps=2.0, max_frames=64, max_long_side=84)
    cfg = EngineConfig(chunk_frames=4, max_new_tokens=1)
    text = answer_question(ad, video_path, "q", get_method("none"), sampling, cfg)["text_tokens"]
    budget = text + 6 * ad.tokens_per_frame
    cfg = EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)
    res = answer_question(ad, video_path, "q", get_method("uniform"), sampling, cfg)
    assert res["frames"] == 4 and res["kv_tokens_per_layer"][0] <= budget
