"""Model families and loading: a local checkpoint directory or a hub id.

``load_adapter(name_or_path)`` reads the checkpoint's ``config.json``, picks the adapter for
its ``model_type`` and loads weights with transformers (``from_pretrained``), with the
engine's attention function registered for the language model.
"""

from __future__ import annotations

from typing import Callable

import torch

from .base import Prompt, VideoInputs, VideoLMAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_vl import QwenVLAdapter
from .qwen3_vl import Qwen3VLAdapter

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _qwen2_vl_classes():
    from transformers import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration


def _qwen2_5_vl_classes():
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration


def _qwen3_vl_classes():
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration


def _llava_onevision_classes():
    from transformers import LlavaOnevisionForConditionalGeneration

    return LlavaOnevisionForConditionalGeneration


# model_type (config.json) -> (model class factory, adapter class)
MODEL_FAMILIES: dict[str, tuple[Callable, type[VideoLMAdapter]]] = {
    "qwen2_vl": (_qwen2_vl_classes, QwenVLAdapter),
    "qwen2_5_vl": (_qwen2_5_vl_classes, QwenVLAdapter),
    "llava_onevision": (_llava_onevision_classes, LlavaOnevisionAdapter),
    "qwen3_vl": (_qwen3_vl_classes, Qwen3VLAdapter),
}


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        # bf16 on accelerators; fp32 on CPU, where bf16 matmuls are several times slower
        return torch.bfloat16 if torch.device(device).type != "cpu" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid choices: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def apply_yarn(config, factor: float) -> None:
    """Set YaRN RoPE scaling on the text config, keeping every other RoPE parameter
    (``mrope_section`` included); ``original_max_position_embeddings`` is the checkpoint's
    ``max_position_embeddings``."""
    if not factor >= 1:
        raise ValueError(f"rope_scaling_factor must be >= 1, got {factor}")
    text = config.get_text_config()
    params = dict(text.rope_parameters or {})
    params.update(rope_type="yarn", factor=float(factor), original_max_position_embeddings=text.max_position_embeddings)
    text.rope_parameters = params


def load_adapter(
    name_or_path: str,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str = "sdpa",
    rope_scaling_factor: float | None = None,
) -> VideoLMAdapter:
    """Load a supported video LLM and wrap it in its adapter.

    attn_implementation: the kernel the vision tower uses ("sdpa", "flash_attention_2", ...);
    the language model always runs through the engine's attention function, which calls SDPA.
    rope_scaling_factor: YaRN scaling of the language model's RoPE by this factor (the
    authors run Qwen2/2.5-VL with 4 so that long videos stay in range), keeping the M-RoPE
    sections; None keeps the checkpoint's RoPE.
    """
    from transformers import AutoConfig, AutoTokenizer

    from ..engine.attention import ATTENTION_NAME, register_attention

    config = AutoConfig.from_pretrained(name_or_path)
    if config.model_type not in MODEL_FAMILIES:
        raise ValueError(
            f"unsupported model type {config.model_type!r} in {name_or_path!r}; "
            f"supported: {', '.join(sorted(MODEL_FAMILIES))}"
        )
    factory, adapter_cls = MODEL_FAMILIES[config.model_type]
    if rope_scaling_factor is not None:
        apply_yarn(config, rope_scaling_factor)
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    register_attention()
    model_cls = factory()
    model = model_cls.from_pretrained(
        name_or_path,
        dtype=torch_dtype,
        attn_implementation={"text_config": ATTENTION_NAME, "vision_config": attn_implementation, "": attn_implementation},
        device_map=device_map,
        config=config,
    )
    if device_map is None:
        model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return adapter_cls.from_loaded(model, tokenizer, name_or_path)


__all__ = [
    "MODEL_FAMILIES",
    "Prompt",
    "VideoInputs",
    "VideoLMAdapter",
    "load_adapter",
    "resolve_dtype",
]
