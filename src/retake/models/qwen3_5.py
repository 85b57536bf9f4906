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

import torch

from .qwen3_vl import Qwen3VLAdapter


class Qwen3_5Adapter(Qwen3VLAdapter):
    """Adapter for Qwen3.5 and Qwen3.5-MoE (module docstring)."""

    @torch.no_grad()
    def encode_video(self, video, batch_steps=16, out_device=None) -> torch.Tensor:
        """Span embeddings ``[N_v, hidden]``: the grid tokens' visual features, the timestamps'
        and vision start / end tokens' text embeddings in place."""
        from .base import feature_buffer

        gt, gh, gw = video.grid_thw
        rows, P = gh * gw, video.tokens_per_step
        visual = self.model.model.visual
        embeds = self.embed(video.span_ids)[0]
        if out_device is not None:
            embeds = feature_buffer(*embeds.shape, out_device, embeds.dtype).copy_(embeds)
        vis_idx = video.visual_mask.nonzero().squeeze(1)
        for a in range(0, gt, batch_steps):
            b = min(gt, a + batch_steps)
            pv = video.pixel_values[a * rows : b * rows].to(visual.device, visual.dtype)
            grid = torch.tensor([[b - a, gh, gw]], device=visual.device)
            out = self.model.model.get_video_features(pv, grid, return_dict=True)
            idx = vis_idx[a * P : b * P]
            embeds[idx.to(embeds.device)] = torch.cat(out.pooler_output).to(embeds.device, embeds.dtype)
        return embeds

    def forward_embeds(self, embeds, position_ids, cache, **attn_kwargs):
        # three position rows (no text row): the text model then builds no text position ids
        out = self.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids.to(embeds.device).unsqueeze(1),
            past_key_values=cache,
            use_cache=True,
            attention_mask=None,
            **attn_kwargs,
        )
        return out.last_hidden_state
