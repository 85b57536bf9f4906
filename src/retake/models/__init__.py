"""Model families and loading: a local checkpoint directory or a hub id.

``load_adapter(name_or_path)`` reads the checkpoint's ``config.json``, picks the adapter for
its ``model_type`` and loads weights with transformers (``from_pretrained``), with the
engine's attention function registered for the language model.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Callable

import torch

from .base import Prompt, VideoInputs, VideoLMAdapter
from .internvl import InternVLAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_vl import QwenVLAdapter
from .qwen3_5 import Qwen3_5Adapter
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


def _qwen3_5_classes():
    from transformers import Qwen3_5ForConditionalGeneration

    return Qwen3_5ForConditionalGeneration


def _qwen3_5_moe_classes():
    from transformers import Qwen3_5MoeForConditionalGeneration

    return Qwen3_5MoeForConditionalGeneration


def _llava_onevision_classes():
    from transformers import LlavaOnevisionForConditionalGeneration

    return LlavaOnevisionForConditionalGeneration


def _internvl_classes():
    from transformers import InternVLForConditionalGeneration

    return InternVLForConditionalGeneration


# model_type (config.json) -> (model class factory, adapter class)
MODEL_FAMILIES: dict[str, tuple[Callable, type[VideoLMAdapter]]] = {
    "qwen2_vl": (_qwen2_vl_classes, QwenVLAdapter),
    "qwen2_5_vl": (_qwen2_5_vl_classes, QwenVLAdapter),
    "llava_onevision": (_llava_onevision_classes, LlavaOnevisionAdapter),
    "qwen3_vl": (_qwen3_vl_classes, Qwen3VLAdapter),
    "qwen3_5": (_qwen3_5_classes, Qwen3_5Adapter),  # hybrid: Gated DeltaNet + attention layers
    "qwen3_5_moe": (_qwen3_5_moe_classes, Qwen3_5Adapter),
    "internvl": (_internvl_classes, InternVLAdapter),
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


class ModelNotFoundError(ValueError):
    """``--model`` / ``model.pretrained`` names no loadable checkpoint; the message says what is
    missing (a directory, its config, its weights, its tokenizer) or why a hub id failed."""


# a hub id is "name" or "namespace/name" (letters, digits, - _ .); anything else is a local path
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def is_local_path(name_or_path: str) -> bool:
    """Whether ``name_or_path`` means a directory on this machine rather than a hub id: it
    exists, is absolute or starts with ``.``/``~``, or has more than one ``/``."""
    text = os.fspath(name_or_path)
    return os.path.exists(text) or text.startswith((".", "~", os.sep)) or not _HUB_ID.match(text)


def check_checkpoint(name_or_path: str) -> None:
    """Fail with :class:`ModelNotFoundError` naming what is missing when ``name_or_path`` is a
    local path that is no checkpoint directory (a hub id is left to transformers)."""
    path = os.path.expanduser(os.fspath(name_or_path))
    if not is_local_path(path):
        return
    make = "write a tiny offline one with `retake tiny-model DIR`, or give a hub id such as Qwen/Qwen2.5-VL-7B-Instruct"
    if not os.path.exists(path):
        raise ModelNotFoundError(f"no such checkpoint directory: {path} ({make})")
    if not os.path.isdir(path):
        raise ModelNotFoundError(f"{path} is a file, not a checkpoint directory ({make})")
    files = sorted(os.listdir(path))
    listing = ", ".join(files[:12]) + (", ..." if len(files) > 12 else "") if files else "it is empty"
    if "config.json" not in files:
        raise ModelNotFoundError(f"{path} is not a model checkpoint: it has no config.json (found: {listing})")
    if not any(glob.glob(os.path.join(glob.escape(path), p)) for p in WEIGHT_PATTERNS):
        raise ModelNotFoundError(
            f"{path} has a config.json but no weights (*.safetensors or pytorch_model*.bin; found: {listing})")
    if not any(f in files for f in TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"{path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}; found: {listing}); "
            "copy the tokenizer files of the model it was trained from")


def _read_config(name_or_path: str):
    from transformers import AutoConfig

    check_checkpoint(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except OSError as e:  # a hub id that does not resolve (offline, private, misspelt)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(
            f"cannot load {name_or_path!r}: it is no local directory, and as a hub id it failed: {first}"
        ) from None
    except ValueError as e:  # config.json of an architecture this transformers does not know
        raise ModelNotFoundError(f"cannot read the config of {name_or_path!r}: {e}") from None


def load_adapter(
    name_or_path: str,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str = "sdpa",
    rope_scaling_factor: float | None = None,
    position_rule: str = "trained",
    prompt_layout: str = "qwen",
) -> VideoLMAdapter:
    """Load a supported video LLM and wrap it in its adapter.

    attn_implementation: the kernel the vision tower uses ("sdpa", "flash_attention_2", ...);
    the language model always runs through the engine's attention function, which calls SDPA.
    rope_scaling_factor: YaRN scaling of the language model's RoPE by this factor (the
    authors run Qwen2/2.5-VL with 4 so that long videos stay in range), keeping the M-RoPE
    sections; None keeps the checkpoint's RoPE.
    position_rule: where Qwen2-VL / Qwen2.5-VL put the text after a video, ``trained`` or
    ``transformers`` (``retake.config.PositionRule``); prompt_layout: whose processor lays out
    the video's tokens, ``qwen`` or ``transformers`` (``retake.config.PromptLayout``).
    """
    from transformers import AutoTokenizer

    from ..engine.attention import ATTENTION_NAME, register_attention

    name_or_path = os.path.expanduser(os.fspath(name_or_path))
    config = _read_config(name_or_path)
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
    adapter = adapter_cls.from_loaded(model, tokenizer, name_or_path)
    adapter.set_position_rule(position_rule)
    adapter.set_prompt_layout(prompt_layout)
    return adapter


__all__ = [
    "MODEL_FAMILIES",
    "ModelNotFoundError",
    "Prompt",
    "VideoInputs",
    "VideoLMAdapter",
    "load_adapter",
    "resolve_dtype",
]
