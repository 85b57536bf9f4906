"""Checks of a cell that need the model's tokenizer but not its weights, run before the weights
load: a budget (``engine.max_context``) that leaves no room for the video after the text is one
line before the model loads, instead of the same failure on every sample after it.

The text's length is counted by the model's own adapter (its chat template, its prompt
layout), built around a model on PyTorch's ``meta`` device: the architecture without a byte of
weights. The engine needs ``max_context - text >= 1`` (``engine.keep_ratio``); the text is the
prompt's tokens outside the video span (``Prompt.num_text_tokens``), or in question mode
``unknown`` the template's without a question plus ``engine.question_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .samples import Sample, format_prompt

# a question adds at most one token per byte of its UTF-8 text (byte-level BPE: every token
# covers at least one byte) and a few where it meets the template; only prompts that could
# reach the budget by that bound are counted exactly
_JOIN_SLACK = 16


def weightless_adapter(pretrained: str):
    """The adapter of the checkpoint ``pretrained`` around a model on the ``meta`` device
    (config, tokenizer and preprocessing read; no weights)."""
    from transformers import AutoTokenizer

    from ..models import MODEL_FAMILIES, _read_config

    config = _read_config(pretrained)
    if config.model_type not in MODEL_FAMILIES:
        raise ValueError(f"unsupported model type {config.model_type!r} in {pretrained!r}; "
                         f"supported: {', '.join(sorted(MODEL_FAMILIES))}")
    factory, adapter_cls = MODEL_FAMILIES[config.model_type]
    with torch.device("meta"):
        model = factory()._from_config(config)
    return adapter_cls.from_loaded(model, AutoTokenizer.from_pretrained(pretrained), pretrained)


def text_counter(adapter, system_prompt: str | None = None) -> Callable[[str], int]:
    """``question -> text tokens`` of the prompt ``adapter`` builds around a video (the video's
    own tokens, timestamps included, are not text; two grid steps of blank frames stand in)."""
    side = adapter.size_factor
    frames = torch.zeros(4, 3, side, side, dtype=torch.uint8)
    video = adapter.prepare_video(frames, 2.0, [0.0, 0.5, 1.0, 1.5])
    return lambda question: adapter.build_prompt(question, video, system_prompt=system_prompt).num_text_tokens


def budget_problem(max_context: int, samples: list[Sample], count: Callable[[str], int], question_mode: str = "aware",
                   question_tokens: int = 0) -> tuple[str | None, str | None]:
    """(an error: no sample fits the budget, a warning: some do not; each None when not so)."""
    if question_mode == "unknown":
        need = count("") + question_tokens + 1
        if max_context >= need:
            return None, None
        return (f"engine.max_context={max_context} leaves no room for the video: question mode 'unknown' reserves "
                f"{need - 1} text tokens ({need - 1 - question_tokens} of the template and "
                f"engine.question_tokens={question_tokens}); the smallest valid engine.max_context is {need} "
                "(or lower engine.question_tokens)"), None
    base = count("")
    texts = {}
    for s in samples:
        prompt = format_prompt(s)
        if base + len(prompt.encode("utf-8")) + _JOIN_SLACK >= max_context:  # else it fits for sure
            texts[s.uid] = count(prompt)
    over = {uid: n for uid, n in texts.items() if n >= max_context}
    if not over:
        return None, None
    longest = max(over, key=over.get)
    if len(over) == len(samples):
        shortest = min(over, key=over.get)
        return (f"engine.max_context={max_context} is smaller than the text of every sample: the shortest prompt "
                f"is {over[shortest]} tokens (uid {shortest}), the longest {over[longest]} (uid {longest}); "
                f"the smallest valid engine.max_context is {over[shortest] + 1} ({over[longest] + 1} fits every "
                "sample)"), None
    return None, (f"{len(over)} of {len(samples)} samples have a text longer than engine.max_context={max_context} "
                  f"(up to {over[longest]} tokens, uid {longest}): they will fail; engine.max_context="
                  f"{over[longest] + 1} fits every sample")


# the model types whose lmms-eval chat wrapper protocol=lmms_eval reproduces (make parity checks
# Qwen2.5-VL and Qwen3-VL; Qwen3.5 runs through lmms-eval's qwen3_vl wrapper)
LMMS_EVAL_PROTOCOL_TYPES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe")


def protocol_warning(protocol: str, model_type: str) -> str | None:
    """A warning when ``protocol=lmms_eval`` meets a family whose lmms-eval wrapper it does not
    reproduce (it reproduces the Qwen chat wrappers' frames, sizes, prompt and positions)."""
    if protocol != "lmms_eval" or model_type in LMMS_EVAL_PROTOCOL_TYPES:
        return None
    return (f"protocol=lmms_eval reproduces lmms-eval's Qwen chat wrappers ({', '.join(LMMS_EVAL_PROTOCOL_TYPES)}); "
            f"this model is {model_type!r}, whose lmms-eval wrapper samples, sizes and prompts its own way: "
            "the cell has lmms-eval's Qwen inputs, not that wrapper's (docs/harness.md, \"Protocols\")")


def check_budget(cfg, samples: list[Sample], log=print) -> None:
    """Raise ValueError (one line) when ``engine.max_context`` leaves no sample room for its
    video; warn when it leaves some without. Reads the tokenizer, never the weights."""
    if not samples:
        return
    adapter = weightless_adapter(str(cfg.model.pretrained))
    note = protocol_warning(str(cfg.get("protocol", "authors")), adapter.model.config.model_type)
    if note:
        log(f"WARNING: {note}")
    error, warning = budget_problem(int(cfg.engine.max_context), samples,
                                    text_counter(adapter, cfg.model.get("system_prompt")),
                                    str(cfg.engine.question_mode), int(cfg.engine.question_tokens))
    if error:
        raise ValueError(error)
    if warning:
        log(f"WARNING: {warning}")
