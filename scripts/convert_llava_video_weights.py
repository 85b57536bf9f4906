"""Convert an original-layout LLaVA-Video checkpoint into transformers' LlavaOnevision format.

    python scripts/convert_llava_video_weights.py SRC_DIR checkpoints/llava_video_7b_hf

SRC_DIR is a local copy of the original checkpoint (LLaVA-NeXT code, ``LlavaQwenForCausalLM``;
e.g. lmms-lab/LLaVA-Video-7B-Qwen2): ``config.json``, ``*.safetensors`` with the original key
names, and the Qwen2 tokenizer files. The output directory holds what ``retake`` (and
``LlavaOnevisionForConditionalGeneration.from_pretrained``) loads: ``config.json``,
safetensors shards with transformers' key names, the tokenizer with ``<image>`` / ``<video>``
added and LLaVA-Video's chat template, ``preprocessor_config.json`` and
``generation_config.json``. Tensors are streamed one source shard at a time and keep their
dtype unless ``--dtype`` is given.

Key mapping (original -> transformers):
    model.embed_tokens / model.layers.* / model.norm    -> model.language_model.*
    lm_head.weight                                      -> lm_head.weight
    model.vision_tower.vision_tower.vision_model.*      -> model.vision_tower.*
    model.mm_projector.0 / .2 (mlp2x_gelu)              -> model.multi_modal_projector.linear_1 / linear_2
    model.image_newline                                 -> model.image_newline
    *.rotary_emb.inv_freq                               -> dropped (recomputed)

The vision tower is SigLIP so400m as LLaVA runs it: its last layer and head are removed when
LLaVA loads it, so the checkpoint holds the layers that are used, and transformers reads the
output of the last stored layer (``vision_feature_layer=-1``, all patches: "full"). Tower sizes
are read from the tensors; the head count is not in them (``--vision-num-heads``, 16).

What transformers' LlavaOnevision computes for video, and so what the converted model does:
2x2 bilinear pooling of each frame's projected patches (27x27 -> 14x14 = 196 tokens) and one
``image_newline`` after the last frame. The original code can be configured otherwise
(``mm_spatial_pool_mode``, ``mm_newline_position``); the script says so when the source
config asks for something else.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SIGLIP_SO400M_HEADS = 16
QWEN2_TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "use_sliding_window",
    "sliding_window", "max_window_layers", "attention_dropout", "bos_token_id", "eos_token_id",
    "tie_word_embeddings",
)
_MAPPING = [
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "model.image_newline"),
    (r"^model\.(embed_tokens|layers|norm)\b", r"model.language_model.\1"),
    (r"^lm_head\.", "lm_head."),
]


def map_key(key: str) -> str | None:
    """Original key -> transformers key; None for tensors that are not weights."""
    if key.endswith(".rotary_emb.inv_freq"):
        return None
    for pattern, repl in _MAPPING:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    raise KeyError(f"no mapping for original key {key!r}")


def source_shards(src: str) -> list[str]:
    shards = sorted(glob.glob(os.path.join(src, "*.safetensors")))
    if not shards:
        raise FileNotFoundError(f"no *.safetensors in {src!r}")
    return shards


def read_shapes(shards: list[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for path in shards:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def vision_config(shapes: dict[str, tuple[int, ...]], num_heads: int) -> dict:
    """SigLIP sizes from the tower's tensors (head count given)."""
    pre = "model.vision_tower.vision_tower.vision_model."
    hidden, channels, patch, _ = shapes[pre + "embeddings.patch_embedding.weight"]
    side = math.isqrt(shapes[pre + "embeddings.position_embedding.weight"][0])
    layers = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(pre) + r"encoder\.layers\.(\d+)\.", k))}
    if hidden % num_heads:
        raise ValueError(f"vision hidden size {hidden} is not divisible by --vision-num-heads {num_heads}")
    return dict(
        model_type="siglip_vision_model", hidden_size=hidden, num_channels=channels, patch_size=patch,
        image_size=side * patch, intermediate_size=shapes[pre + "encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=len(layers), num_attention_heads=num_heads, vision_use_head=False,
    )


def text_config(orig: dict) -> dict:
    text = {k: orig[k] for k in QWEN2_TEXT_KEYS if k in orig}
    rope = {"rope_type": "default", "rope_theta": float(orig.get("rope_theta", 10000.0))}
    if orig.get("rope_scaling"):
        rope.update(orig["rope_scaling"])
        rope["rope_type"] = rope.pop("type", rope.get("rope_type", "default"))
    return dict(text, model_type="qwen2", rope_parameters=rope)


def check_source_config(orig: dict) -> None:
    if orig.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(f"mm_projector_type {orig['mm_projector_type']!r}: only mlp2x_gelu maps to LlavaOnevision")
    notes = []
    if orig.get("mm_spatial_pool_mode", "bilinear") != "bilinear":
        notes.append(f"mm_spatial_pool_mode={orig['mm_spatial_pool_mode']!r} (LlavaOnevision pools 2x2 bilinearly)")
    if orig.get("mm_newline_position", "one_token") != "one_token":
        notes.append(f"mm_newline_position={orig['mm_newline_position']!r} (LlavaOnevision adds one newline per video)")
    for note in notes:
        print(f"note: the source config sets {note}", file=sys.stderr)


def convert(src: str, dst: str, vision_num_heads: int = SIGLIP_SO400M_HEADS, dtype: torch.dtype | None = None) -> str:
    from transformers import AddedToken, AutoTokenizer, GenerationConfig, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from retake.models.llava_onevision import LLAVA_PLACEHOLDERS, LLAVA_VIDEO_CHAT_TEMPLATE, siglip_preprocessor_config

    with open(os.path.join(src, "config.json")) as f:
        orig = json.load(f)
    check_source_config(orig)
    shards = source_shards(src)
    shapes = read_shapes(shards)

    tok = AutoTokenizer.from_pretrained(src)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in LLAVA_PLACEHOLDERS], special_tokens=True)
    tok.chat_template = LLAVA_VIDEO_CHAT_TEMPLATE
    text = text_config(orig)
    if len(tok) > text["vocab_size"]:
        raise ValueError(f"the tokenizer ({len(tok)} tokens with <image>/<video>) outgrows the embeddings ({text['vocab_size']})")
    extra = {"image_grid_pinpoints": orig["image_grid_pinpoints"]} if orig.get("image_grid_pinpoints") else {}
    config = LlavaOnevisionConfig(
        text_config=text, vision_config=vision_config(shapes, vision_num_heads),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
        tie_word_embeddings=bool(orig.get("tie_word_embeddings", False)), **extra,
    )
    if dtype is not None:
        config.dtype = dtype
    elif orig.get("torch_dtype") or orig.get("dtype"):
        config.dtype = orig.get("dtype") or orig.get("torch_dtype")

    # the names transformers expects: from the model built on the meta device (no memory)
    with torch.device("meta"):
        expected = set(LlavaOnevisionForConditionalGeneration(config).state_dict())
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    mapped = {k: map_key(k) for k in shapes}
    got = {v for v in mapped.values() if v is not None}
    if got != expected:
        raise ValueError(f"key mismatch: missing {sorted(expected - got)[:8]}, unexpected {sorted(got - expected)[:8]}")

    os.makedirs(dst, exist_ok=True)
    weight_map, total = {}, 0
    for i, path in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                if mapped[key] is None:
                    continue
                t = f.get_tensor(key)
                tensors[mapped[key]] = (t.to(dtype) if dtype is not None else t).contiguous()
        save_file(tensors, os.path.join(dst, name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({k: name for k in tensors})
        del tensors
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)

    config.architectures = ["LlavaOnevisionForConditionalGeneration"]
    config.save_pretrained(dst)
    tok.save_pretrained(dst)
    eos = [i for i in (tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")) if i is not None and i != tok.unk_token_id]
    GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id).save_pretrained(dst)
    with open(os.path.join(dst, "preprocessor_config.json"), "w") as f:
        json.dump(siglip_preprocessor_config(config.vision_config.image_size), f, indent=2)
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="original LLaVA-Video checkpoint directory")
    ap.add_argument("dst", help="output directory (transformers LlavaOnevision format)")
    ap.add_argument("--vision-num-heads", type=int, default=SIGLIP_SO400M_HEADS)
    ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None, help="default: keep the source dtype")
    args = ap.parse_args(argv)
    print(convert(args.src, args.dst, args.vision_num_heads, getattr(torch, args.dtype) if args.dtype else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
