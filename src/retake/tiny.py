"""Tiny randomly initialised checkpoints of the supported architectures, fully offline.

``write_tiny_model(arch, out_dir)`` writes a directory that ``from_pretrained`` (and so
every ``--model`` option of this project) loads like a real checkpoint: ``config.json``,
weights, a byte-level Qwen2 tokenizer with the chat special tokens and the Qwen2-VL chat
template, ``preprocessor_config.json`` and ``generation_config.json``. The real code paths
run on it; only the sizes are small.
"""

from __future__ import annotations

import json
import os

import torch

# the four architectures every engine and method test runs on (tests/conftest.py's `arch`)
TEST_ARCHS = ("qwen2_vl", "qwen2_5_vl", "llava_onevision", "qwen3_vl")
# the 2026 families: tested by their own modules and the all-methods test
NEW_ARCHS = ("qwen3_5", "qwen3_5_moe", "internvl")
TINY_ARCHS = TEST_ARCHS + NEW_ARCHS

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL's chat template (the vision-id labels left out): default system prompt,
# content lists with image / video / text parts.
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def tiny_tokenizer():
    """A byte-level ``Qwen2Tokenizer``: 256 byte tokens (no merges) + the chat special tokens."""
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(sorted(_bytes_to_unicode().values(), key=lambda c: ord(c)))}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tok


def tiny_config(arch: str, tokenizer, layers: int = 4, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                intermediate: int | None = None):
    """A small config of ``arch``'s language model (MLP width ``intermediate``, default 2 x hidden)
    and a tiny vision tower; the bench builds real widths with it (Qwen2.5-VL-7B: hidden 3584,
    heads 28 / 4, intermediate 18944)."""
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; valid choices: {', '.join(TINY_ARCHS)}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    head_dim = hidden // heads
    quarter = head_dim // 2 // 4
    text = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "mrope_section": [head_dim // 2 - 2 * quarter - quarter, quarter + quarter // 2, quarter + quarter - quarter // 2]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    if arch == "llava_onevision":
        return tiny_llava_onevision_config(tokenizer, text)
    if arch == "internvl":
        return tiny_internvl_config(tokenizer, text, head_dim)
    common = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    if arch == "qwen3_vl":
        return tiny_qwen3_vl_config(text, common, head_dim)
    if arch in ("qwen3_5", "qwen3_5_moe"):
        return tiny_qwen3_5_config(arch, text, common, layers)
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    from transformers import Qwen2_5_VLConfig

    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                  window_size=56, fullatt_block_indexes=[1], tokens_per_second=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)


def tiny_llava_tokenizer():
    """The byte-level tokenizer plus LLaVA's ``<image>`` / ``<video>`` placeholders and
    LLaVA-Video's chat template (what the conversion script adds to Qwen2's tokenizer)."""
    from transformers import AddedToken

    from .models.llava_onevision import LLAVA_PLACEHOLDERS, LLAVA_VIDEO_CHAT_TEMPLATE

    tok = tiny_tokenizer()
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in LLAVA_PLACEHOLDERS], special_tokens=True)
    tok.chat_template = LLAVA_VIDEO_CHAT_TEMPLATE
    return tok


def tiny_llava_onevision_config(tokenizer, text: dict):
    """Tiny SigLIP tower (70 px, patch 14: 5 x 5 patches, pooled to 3 x 3 = 9 tokens per frame,
    odd like 27 -> 14 at 384 px) and a Qwen2 LLM from the shared text sizes (1-D RoPE)."""
    from transformers import LlavaOnevisionConfig

    text = dict(text, model_type="qwen2", rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=70, patch_size=14, vision_use_head=False)
    return LlavaOnevisionConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
    )


def tiny_qwen3_vl_config(text: dict, common: dict, head_dim: int):
    """Tiny Qwen3-VL: patch 16 (sides multiples of 32), a 3-block tower whose blocks 0 and 1
    feed DeepStack (added after LLM layers 0 and 1), interleaved M-RoPE, no default system prompt."""
    from transformers import Qwen3VLConfig

    text = dict(text, head_dim=head_dim, rope_parameters=dict(text["rope_parameters"], mrope_interleaved=True))
    vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                  num_position_embeddings=64, deepstack_visual_indexes=[0, 1])
    return Qwen3VLConfig(text_config=text, vision_config=vision, **common)


def tiny_qwen3_5_config(arch: str, text: dict, common: dict, layers: int):
    """Tiny Qwen3.5 (dense or MoE) with the real configs' structure: a hybrid stack of Gated
    DeltaNet layers and attention layers (every 4th, ``full_attention_interval``; at least 8
    layers so two hold KV), head_dim 32 with a quarter of it rotated (``partial_rotary_factor``
    0.25, interleaved M-RoPE over those 8 dims), gated attention output; linear attention with
    2 key / 4 value heads of 16; MoE: 8 experts, 2 per token, a shared expert. Qwen3-VL's vision
    tower without DeepStack, patch 16."""
    from transformers import Qwen3_5Config, Qwen3_5MoeConfig

    layers = max(8, layers)
    text = dict(
        text, num_hidden_layers=layers, head_dim=32,
        layer_types=["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [2, 1, 1], "mrope_interleaved": True},
        linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4,
    )
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3, num_position_embeddings=64)
    if arch == "qwen3_5":
        return Qwen3_5Config(text_config=text, vision_config=vision, **common)
    text = dict(text, moe_intermediate_size=text["hidden_size"], shared_expert_intermediate_size=text["hidden_size"],
                num_experts=8, num_experts_per_tok=2)
    text.pop("intermediate_size", None)
    return Qwen3_5MoeConfig(text_config=text, vision_config=vision, **common)


def tiny_internvl_tokenizer():
    """The byte-level tokenizer plus InternVL's ``<img>`` / ``</img>`` / ``<IMG_CONTEXT>`` tokens,
    named on the tokenizer (``start_image_token`` ..., ``video_token``) as the HF checkpoints
    do; ``<video>`` is named but no token (the processor replaces it as text), and the chat
    template is transformers' InternVL one."""
    from transformers import Qwen2Tokenizer

    from .models.internvl import INTERNVL_CHAT_TEMPLATE, INTERNVL_TOKENS

    tokens = [v for k, v in INTERNVL_TOKENS.items() if k != "video_token"]
    vocab = {ch: i for i, ch in enumerate(sorted(_bytes_to_unicode().values(), key=lambda c: ord(c)))}
    for t in SPECIAL_TOKENS + tokens:
        vocab[t] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
                         extra_special_tokens=dict(INTERNVL_TOKENS))
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:] + tokens})
    tok.chat_template = INTERNVL_CHAT_TEMPLATE
    return tok


def tiny_internvl_config(tokenizer, text: dict, head_dim: int):
    """Tiny InternVL3.5: an InternViT tower (CLS token, layer scale, QKV bias, as InternViT-300M)
    at 112 px / patch 14, whose 8 x 8 patches are pixel-shuffled to 4 x 4 = 16 tokens per frame
    (448 px: 32 x 32 -> 256), the MLP projector, and a Qwen3 LLM (q/k norms, explicit head_dim)
    from the shared text sizes; 1-D RoPE."""
    from transformers import InternVLConfig

    text = dict(text, model_type="qwen3", head_dim=head_dim, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=112,
                  patch_size=14, attention_bias=True, use_qk_norm=False, norm_type="layer_norm")
    return InternVLConfig(text_config=text, vision_config=vision, downsample_ratio=0.5, image_seq_length=16,
                          image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), tie_word_embeddings=False)


def write_internvl_processor_files(model, out_dir: str) -> None:
    """The image, video and processor configs of an HF InternVL3.5 checkpoint, at the tower's
    size with ImageNet statistics (so transformers' processor, where torchvision is installed,
    runs on the tiny checkpoint too)."""
    from .models.internvl import IMAGENET_MEAN, IMAGENET_STD

    side = model.config.vision_config.image_size[0]
    common = dict(do_resize=True, size={"height": side, "width": side}, resample=3, do_rescale=True,
                  rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                  do_convert_rgb=True)
    files = {"preprocessor_config.json": {"image_processor_type": "GotOcr2ImageProcessor", "crop_to_patches": False,
                                          "min_patches": 1, "max_patches": 12, **common},
             "video_preprocessor_config.json": {"video_processor_type": "InternVLVideoProcessor", **common},
             "processor_config.json": {"processor_class": "InternVLProcessor",
                                       "image_seq_length": model.config.image_seq_length}}
    for fname, content in files.items():
        with open(os.path.join(out_dir, fname), "w") as f:
            json.dump(content, f, indent=2)


def build_tiny_model(arch: str, seed: int = 0, **sizes):
    """(model, tokenizer), weights drawn from ``seed``."""
    from .models import MODEL_FAMILIES

    tok = tiny_llava_tokenizer() if arch == "llava_onevision" else tiny_tokenizer()
    if arch == "internvl":
        tok = tiny_internvl_tokenizer()
    if arch in ("qwen3_vl", "qwen3_5", "qwen3_5_moe"):  # Qwen3-VL's chat template and processor
        from .models.qwen3_vl import QWEN3_VL_CHAT_TEMPLATE

        tok.chat_template = QWEN3_VL_CHAT_TEMPLATE
    cfg = tiny_config(arch, tok, **sizes)
    torch.manual_seed(seed)
    model_class = MODEL_FAMILIES[cfg.model_type][0]()
    model = model_class(cfg).eval()
    # the default init (std 0.02) gives near-uniform logits; larger weights give the
    # attention patterns and logits some spread, which makes exactness tests stricter
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in name:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
    return model, tok


def write_tiny_model(arch: str, out_dir: str | os.PathLike, seed: int = 0, **sizes) -> str:
    out_dir = os.fspath(out_dir)
    model, tok = build_tiny_model(arch, seed=seed, **sizes)
    os.makedirs(out_dir, exist_ok=True)
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    vc = model.config.vision_config
    if arch == "internvl":
        write_internvl_processor_files(model, out_dir)
        return out_dir
    if arch == "llava_onevision":
        from .models.llava_onevision import siglip_preprocessor_config

        with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
            json.dump(siglip_preprocessor_config(vc.image_size), f, indent=2)
        return out_dir
    if arch in ("qwen3_vl", "qwen3_5", "qwen3_5_moe"):  # Qwen3-VL's image and video processor configs: mean/std 0.5
        pp = dict(patch_size=vc.patch_size, temporal_patch_size=vc.temporal_patch_size, merge_size=vc.spatial_merge_size,
                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
        for fname, key, kind in (("preprocessor_config.json", "image_processor_type", "Qwen2VLImageProcessor"),
                                 ("video_preprocessor_config.json", "video_processor_type", "Qwen3VLVideoProcessor")):
            with open(os.path.join(out_dir, fname), "w") as f:
                json.dump({key: kind, **pp}, f, indent=2)
        return out_dir
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(
            {
                "image_processor_type": "Qwen2VLImageProcessor",
                "patch_size": vc.patch_size,
                "temporal_patch_size": vc.temporal_patch_size,
                "merge_size": vc.spatial_merge_size,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "min_pixels": 28 * 28,
                "max_pixels": 448 * 448,
            },
            f,
            indent=2,
        )
    return out_dir


def write_tiny_model_atomic(arch: str, out_dir: str | os.PathLike, seed: int = 0) -> str:
    """:func:`write_tiny_model` into a temporary sibling, then renamed to ``out_dir``, so that
    processes starting together never load half a checkpoint (the first rename wins)."""
    import shutil

    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = f"{out_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_tiny_model(arch, tmp, seed=seed)
    try:
        os.rename(tmp, out_dir)
    except OSError:  # written by another process meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
