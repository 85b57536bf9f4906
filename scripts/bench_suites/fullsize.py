"""Qwen2.5-VL-7B's architecture with random weights (the gpu suite's model) and random video
inputs in its real shapes."""

from __future__ import annotations

import torch

QWEN2_5_VL_7B = {  # Qwen/Qwen2.5-VL-7B-Instruct's config.json
    "text": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                   window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
}


def full_size_config(layers: int | None = None, vision_depth: int | None = None):
    """Qwen2.5-VL-7B's architecture with the tiny tokenizer's special-token ids (the vocabulary
    keeps the real size, so embedding and head bytes are the real ones). ``layers`` /
    ``vision_depth`` shrink only the depth (tests)."""
    from transformers import Qwen2_5_VLConfig

    from retake.tiny import SPECIAL_TOKENS, tiny_tokenizer

    tok = tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(QWEN2_5_VL_7B["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    vision = dict(QWEN2_5_VL_7B["vision"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    if layers:
        text["num_hidden_layers"] = layers
    if vision_depth:
        vision["depth"] = vision_depth
        vision["fullatt_block_indexes"] = [i for i in vision["fullatt_block_indexes"] if i < vision_depth] or [vision_depth - 1]
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    return cfg, tok


def build_random(cfg, tok, device: str, dtype: torch.dtype, workdir: str):
    """The model of ``cfg`` with transformers' random init, made on ``device`` in ``dtype``, and
    its adapter (tokenizer / preprocessor files from a tiny checkpoint in ``workdir``)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from retake.engine.attention import ATTENTION_NAME, register_attention
    from retake.models.qwen2_vl import QwenVLAdapter
    from retake.tiny import write_tiny_model

    write_tiny_model("qwen2_5_vl", workdir, seed=0)
    register_attention()
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    model.set_attn_implementation({"text_config": ATTENTION_NAME, "vision_config": "sdpa", "": "sdpa"})
    return QwenVLAdapter.from_loaded(model, tok, workdir)


def synthetic_inputs(ad, frames: int, size: int, seed: int = 0):
    """VideoInputs of ``frames`` frames at ``size`` px with random normalised pixel values, made
    directly (decoding and preprocessing are measured by the input suite, not here)."""
    from retake.models import VideoInputs

    small = ad.prepare_video(torch.zeros(2, 3, size, size, dtype=torch.uint8), 2.0, [0.0, 0.5])
    steps = frames // small.frames_per_step
    rows = small.pixel_values.shape[0]
    g = torch.Generator().manual_seed(seed)
    pixels = torch.empty(steps * rows, small.pixel_values.shape[1], dtype=torch.bfloat16)
    for a in range(0, pixels.shape[0], 1 << 16):
        pixels[a : a + (1 << 16)] = torch.randn(pixels[a : a + (1 << 16)].shape, generator=g).to(torch.bfloat16)
    tps = small.tokens_per_step
    return VideoInputs(pixel_values=pixels, grid_thw=(steps, *small.grid_thw[1:]), num_frames=frames,
                       frames_per_step=small.frames_per_step, tokens_per_step=tps,
                       step_token_offsets=[k * tps for k in range(steps + 1)], sampling_fps=2.0,
                       timestamps=[k / 2.0 for k in range(frames)])
