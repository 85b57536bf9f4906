"""Qwen3.5, dense and MoE (transformers ``Qwen3_5ForConditionalGeneration`` /
``Qwen3_5MoeForConditionalGeneration``): natively multimodal, with a **hybrid** language model.

Inputs are Qwen3-VL's (:mod:`retake.models.qwen3_vl`): transformers maps both ``qwen3_5`` model
types to ``Qwen3VLProcessor`` and ``Qwen3VLVideoProcessor``, so the video prompt is the same
per-step expansion, ``<{t:.1f} seconds><|vision_start|>`` + the step's merged tokens +
``<|vision_end|>``, patch 16, and ``Qwen3_5Model.get_rope_index`` computes Qwen3-VL's
interleaved M-RoPE ids (a step has one temporal id and advances ``max(h, w)``; the text after
it resumes at max id + 1; tested against transformers). The vision tower has no DeepStack:
``encode_video`` returns the span's embeddings alone.

The language model interleaves **Gated DeltaNet** (linear attention) layers with attention
layers: ``config.layer_types``, three ``linear_attention`` layers for every ``full_attention``
one (``full_attention_interval`` 4). Only the attention layers hold a KV cache; the linear
layers carry a fixed-size state (causal-conv + recurrent) that absorbs every token fed and cannot
drop one. So here ``num_layers`` counts the attention layers (what the methods see and the
engine compresses, ``layer_types`` the whole stack), and the engine keeps the guide out of the
states (``Engine._chunk_then_guide``). Attention layers rotate the first quarter of each head
(``partial_rotary_factor`` 0.25): ``rope`` returns cos/sin of that width, which
``retake.rope`` applies to the first dims only, as transformers does; their output is gated.
"""

from __future__ import annotations

from .qwen3_vl import Qwen3VLAdapter


class Qwen3_5Adapter(Qwen3VLAdapter):
    """Adapter for Qwen3.5 and Qwen3.5-MoE (module docstring): Qwen3-VL's, whose ``encode_video``
    returns the embeddings alone for a tower without DeepStack and whose ``num_layers`` /
    ``layer_types`` (``TransformersVideoLM``) count the attention layers of a hybrid stack."""
