"""Qwen3-VL (transformers ``Qwen3VLForConditionalGeneration``).

Video prompt, as Qwen's processor writes it: every grid step (2 frames) is
``<{t:.1f} seconds><|vision_start|>`` + its ``h x w`` merged video tokens + ``<|vision_end|>``,
``t`` the mean time of the step's first and last frame (``Qwen3VLProcessor._calculate_timestamps``).
This expansion replaces the chat template's ``<|vision_start|><|video_pad|><|vision_end|>``
(Qwen's own processor, transformers 4.57); transformers >= 5.10 replaces only the
``<|video_pad|>`` and keeps that outer pair around the steps: ``outer_vision_tokens=True``
(``model.prompt_layout=transformers``).
The engine's video span is the whole expansion: step s starts at its timestamp
(``step_token_offsets``), ``visual_mask`` marks the grid tokens, and ``encode_video`` returns
the timestamp / start / end tokens' text embeddings in place. Methods may drop those text
tokens like any other span token.

Positions (interleaved M-RoPE; ``Qwen3VLModel.get_rope_index``): text tokens advance one id on
all three rows; a grid step starting at id ``c`` gets temporal id ``c`` for all its tokens and
spatial ids ``c + row`` / ``c + col``; the text after it resumes at ``c + max(h, w)`` (=
max id + 1: a step has one temporal id). Time is in the timestamps, not in the temporal ids.
transformers 5.23 computes exactly this (tested), unlike its Qwen2-VL rule.

DeepStack: the vision tower's features from ``deepstack_visual_indexes`` layers (each through
its own merger) are added to the hidden states of the first LLM layers at the visual tokens.
``encode_video`` returns them as per-token extras ``[N_v, n_deepstack, hidden]`` (zero at text
tokens) with the ``visual`` mask; ``forward_embeds`` hands a chunk's slice to the text model as
``visual_pos_masks`` / ``deepstack_visual_embeds``. They wait in ``deepstack_device`` (host
memory by default: 3 x hidden per token, a sixth of a token's KV at 8B).

Preprocessing is Qwen2-VL's patchify with patch 16 (sides multiples of 32), mean/std 0.5.
The vision tower attends within each grid step, so encoding a few steps at a time is exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..video import resize_frames, target_size
from .base import Prompt, VideoFeatures, VideoInputs, feature_buffer, load_chat_template
from .qwen2_vl import QwenVisionPreprocessing, QwenVLAdapter, patchify

QWEN3_MEAN = (0.5, 0.5, 0.5)
QWEN3_STD = (0.5, 0.5, 0.5)

# Qwen3-VL's chat template, its image / video / text parts (no tools or reasoning branches):
# no default system prompt; a video part is <|vision_start|><|video_pad|><|vision_end|>.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen3_preprocessing(name_or_path: str, vision_config) -> QwenVisionPreprocessing:
    """Patch sizes from the vision config; mean/std from the checkpoint's (video) preprocessor
    config, 0.5 / 0.5 when it has none."""
    from transformers.utils import cached_file

    kw = dict(patch_size=vision_config.patch_size, temporal_patch_size=vision_config.temporal_patch_size,
              merge_size=vision_config.spatial_merge_size, image_mean=QWEN3_MEAN, image_std=QWEN3_STD)
    for fname in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = cached_file(name_or_path, fname, _raise_exceptions_for_missing_entries=False)
        if path:
            with open(path) as f:
                pp = json.load(f)
            kw["image_mean"] = tuple(pp.get("image_mean", kw["image_mean"]))
            kw["image_std"] = tuple(pp.get("image_std", kw["image_std"]))
            break
    return QwenVisionPreprocessing(**kw)


def step_times(timestamps: list[float], temporal_patch_size: int) -> list[float]:
    """Seconds shown for each grid step: the mean of its first and last frame's time (the last
    frame repeated to fill a step), as ``Qwen3VLProcessor._calculate_timestamps``."""
    ts = list(timestamps)
    ts += ts[-1:] * (-len(ts) % temporal_patch_size)
    return [(ts[i] + ts[i + temporal_patch_size - 1]) / 2 for i in range(0, len(ts), temporal_patch_size)]


def timestamp_text(seconds: float) -> str:
    return f"<{seconds:.1f} seconds>"


def qwen3_position_ids(visual: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[3, S]`` M-RoPE ids by Qwen3-VL's rule (module docstring). visual: bool ``[S]``, True
    at grid tokens, which come in runs of ``h * w`` (one grid step each, row-major)."""
    visual = visual.bool()
    P = h * w
    within = (torch.cumsum(visual.long(), 0) - 1) % P  # index inside its step, for grid tokens
    last = visual & (within == P - 1)
    inc = torch.where(visual, torch.where(last, max(h, w), 0), 1)  # a step advances max(h, w) in all
    base = torch.cumsum(inc, 0) - inc  # a step's tokens all get the id where it starts
    row = torch.where(visual, within // w, 0)
    col = torch.where(visual, within % w, 0)
    return torch.stack([base, base + row, base + col]).long()


@dataclass
class Qwen3VideoInputs(VideoInputs):
    """``span_ids``: the span's token ids ``[N_v]`` (timestamps, vision start/end, video pads)."""

    span_ids: torch.Tensor | None = None


class Qwen3VLAdapter(QwenVLAdapter):
    """Adapter for Qwen3-VL (see module docstring).

    outer_vision_tokens: keep the chat template's ``<|vision_start|>`` / ``<|vision_end|>``
        around the per-step expansion, as transformers >= 5.10's processor does (default: the
        layout of Qwen's own processor, which replaces them).
    deepstack_device: where DeepStack features wait for their chunk (None: the LLM's device).
    """

    position_rule_differs = False  # transformers 5.x computes the trained ids (timestamps carry time)
    processor_resize = False  # lmms-eval's Qwen3 wrapper passes do_resize=False

    def __init__(self, model, tokenizer, preprocessing, chat_template=None, outer_vision_tokens: bool = False,
                 deepstack_device: str | None = "cpu"):
        super().__init__(model, tokenizer, preprocessing, chat_template)
        cfg = model.config
        self.vision_start_id = cfg.vision_start_token_id
        self.vision_end_id = cfg.vision_end_token_id
        self.outer_vision_tokens = outer_vision_tokens
        self.deepstack_device = deepstack_device

    def set_prompt_layout(self, layout: str) -> None:
        super().set_prompt_layout(layout)
        self.outer_vision_tokens = self.prompt_layout == "transformers"

    @classmethod
    def from_loaded(cls, model, tokenizer, name_or_path):
        pp = qwen3_preprocessing(name_or_path, model.config.vision_config)
        return cls(model, tokenizer, pp, chat_template=load_chat_template(tokenizer, name_or_path))

    # -- inputs -------------------------------------------------------------------------
    def prepare_video(self, frames, sampling_fps, timestamps) -> Qwen3VideoInputs:
        """Frames whose sides are not multiples of 32 (sampled for another family) are resized
        to the nearest multiples, long side not above its current length, as the loader would."""
        if len(timestamps) != frames.shape[0]:
            raise ValueError(f"{len(timestamps)} timestamps for {frames.shape[0]} frames")
        H, W = frames.shape[-2:]
        sf = self.size_factor
        if H % sf or W % sf:
            frames = resize_frames(frames, target_size(H, W, max(H, W), sf))
        pv, grid = patchify(frames, self.pp, dtype=self.model.model.visual.dtype)
        h, w = grid[1] // self.pp.merge_size, grid[2] // self.pp.merge_size
        # each timestamp sits between special tokens (or after the user header's newline), so
        # tokenizing it alone gives the tokens of the whole prompt (tested)
        texts = [timestamp_text(t) for t in step_times(timestamps, self.pp.temporal_patch_size)]
        ids, offsets = [], [0]
        for stamp in self.tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids += stamp + [self.vision_start_id] + [self.video_token_id] * (h * w) + [self.vision_end_id]
            offsets.append(len(ids))
        span = torch.tensor(ids, dtype=torch.long)
        return Qwen3VideoInputs(
            pixel_values=pv,
            grid_thw=grid,
            num_frames=int(frames.shape[0]),
            frames_per_step=self.pp.temporal_patch_size,
            tokens_per_step=h * w,
            token_grid=(h, w),
            step_token_offsets=offsets,
            sampling_fps=sampling_fps,
            timestamps=list(timestamps),
            visual_mask=span == self.video_token_id,
            span_ids=span,
        )

    def build_prompt(self, question, video, system_prompt=None) -> Prompt:
        ids = self.tokenizer(self.chat_text(question, system_prompt), add_special_tokens=False)["input_ids"]
        where = [i for i, t in enumerate(ids) if t == self.video_token_id]
        if len(where) != 1:
            raise ValueError(
                f"the chat template produced {len(where)} video placeholder tokens (id {self.video_token_id}); expected 1"
            )
        a = b = where[0]
        wrapped = 0 < a and b + 1 < len(ids) and ids[a - 1] == self.vision_start_id and ids[b + 1] == self.vision_end_id
        if wrapped and not self.outer_vision_tokens:  # the expansion replaces the wrapped placeholder
            a, b = a - 1, b + 1
        prefix, suffix = ids[:a], ids[b + 1 :]
        input_ids = torch.cat([torch.tensor(prefix, dtype=torch.long), video.span_ids, torch.tensor(suffix, dtype=torch.long)])
        grid = video.grid_thw
        pos = qwen3_position_ids(input_ids == self.video_token_id, grid[1] // self.pp.merge_size, grid[2] // self.pp.merge_size)
        return Prompt(input_ids=input_ids, position_ids=pos, video_start=a, video_end=a + video.num_tokens)

    @torch.no_grad()
    def encode_video(self, video, batch_steps=16, out_device=None) -> VideoFeatures:
        """Span embeddings ``[N_v, hidden]`` and extras ``visual`` (bool ``[N_v]``) and
        ``deepstack`` (``[N_v, n_deepstack, hidden]``, zero at text tokens); the embeddings alone
        for a tower without DeepStack (Qwen3.5)."""
        gt, gh, gw = video.grid_thw
        rows, P = gh * gw, video.tokens_per_step
        visual = self.model.model.visual
        embeds = self.embed(video.span_ids)[0]
        if out_device is not None:
            embeds = feature_buffer(*embeds.shape, out_device, embeds.dtype).copy_(embeds)
        vis_idx = video.visual_mask.nonzero().squeeze(1)
        ds_device = out_device or self.deepstack_device or self.device
        n_deep = len(getattr(visual, "deepstack_visual_indexes", None) or [])
        deep = torch.zeros(embeds.shape[0], n_deep, embeds.shape[1], device=ds_device, dtype=self.dtype) if n_deep else None
        for a in range(0, gt, batch_steps):
            b = min(gt, a + batch_steps)
            pv = video.pixel_values[a * rows : b * rows].to(visual.device, visual.dtype)
            grid = torch.tensor([[b - a, gh, gw]], device=visual.device)
            out = self.model.model.get_video_features(pv, grid, return_dict=True)
            idx = vis_idx[a * P : b * P]
            embeds[idx.to(embeds.device)] = torch.cat(out.pooler_output).to(embeds.device, embeds.dtype)
            for i, f in enumerate(out.deepstack_features if n_deep else ()):
                deep[idx.to(ds_device), i] = torch.cat(f).to(ds_device, deep.dtype)
        if not n_deep:
            return embeds
        return VideoFeatures(embeds, {"visual": video.visual_mask.clone(), "deepstack": deep})

    # -- language model -----------------------------------------------------------------
    def forward_embeds(self, embeds, position_ids, cache, video_extras=None, **attn_kwargs):
        deepstack = {}
        if video_extras is not None and bool(video_extras["visual"].any()):
            vis = video_extras["visual"]
            mask = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
            mask[0, : vis.shape[0]] = vis.to(embeds.device)
            ds = video_extras["deepstack"][vis.to(video_extras["deepstack"].device)].to(embeds.device)
            deepstack = dict(visual_pos_masks=mask, deepstack_visual_embeds=list(ds.unbind(1)))
        # attention_mask=None: the text model builds its usual mask, which the engine's
        # attention function ignores (it aligns causality at the bottom-right itself)
        out = self.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids.to(embeds.device).unsqueeze(1),
            past_key_values=cache,
            use_cache=True,
            attention_mask=None,
            **deepstack,
            **attn_kwargs,
        )
        return out.last_hidden_state
