"""Qwen2-VL and Qwen2.5-VL (transformers ``Qwen2VLForConditionalGeneration`` /
``Qwen2_5_VLForConditionalGeneration``).

Video path: frames ``[T, 3, H, W]`` -> normalise -> patchify into rows of
``3 * temporal_patch * patch * patch`` values, ordered (grid step, merged row, merged col,
merge row, merge col) as the model's vision tower expects -> the tower encodes each grid
step independently (its attention never crosses grid steps), so encoding a few steps at a
time is exact and bounds activation memory.

Positions follow Qwen's M-RoPE rule as the models were trained: text tokens use equal ids
on all three rows; a video of ``t x h x w`` merged tokens starting at id ``s`` gets temporal
ids ``s + floor(step * interval)`` and spatial ids ``s + row`` / ``s + col``; text after the
video resumes at ``max(video ids) + 1``. (transformers 5.x resumes at ``s + max(h, w)``
instead, ignoring the temporal extent: ``model.position_rule=transformers`` reproduces it;
see docs/architecture.md.) ``interval`` is 1 for
Qwen2-VL and ``tokens_per_second * temporal_patch_size / sampling_fps`` for Qwen2.5-VL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .base import NO_MASK, Prompt, TransformersVideoLM, VideoInputs, feature_buffer, load_chat_template

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class QwenVisionPreprocessing:
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    @classmethod
    def from_pretrained(cls, name_or_path: str, vision_config) -> "QwenVisionPreprocessing":
        kw = dict(
            patch_size=vision_config.patch_size,
            temporal_patch_size=vision_config.temporal_patch_size,
            merge_size=vision_config.spatial_merge_size,
        )
        from transformers.utils import cached_file

        path = cached_file(name_or_path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        if path:
            with open(path) as f:
                pp = json.load(f)
            if "image_mean" in pp:
                kw["image_mean"] = tuple(pp["image_mean"])
            if "image_std" in pp:
                kw["image_std"] = tuple(pp["image_std"])
        return cls(**kw)

    @property
    def size_factor(self) -> int:
        return self.patch_size * self.merge_size


def patchify(frames: torch.Tensor, pp: QwenVisionPreprocessing, dtype=torch.float32) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """uint8 ``[T, 3, H, W]`` -> (pixel rows ``[t*h*w, 3*tp*ps*ps]``, grid (t, h, w)).

    Same arithmetic as transformers' Qwen2-VL image processor: x/255, (x - mean)/std, then
    the reshape/permute that groups each ``tp x ps x ps`` patch, merge blocks contiguous.
    """
    T, C, H, W = frames.shape
    ps, tp, ms = pp.patch_size, pp.temporal_patch_size, pp.merge_size
    if T % tp:
        raise ValueError(f"frame count {T} is not a multiple of temporal_patch_size {tp}")
    if H % (ps * ms) or W % (ps * ms):
        raise ValueError(f"frame size {H}x{W} is not a multiple of {ps * ms}")
    mean = torch.tensor(pp.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pp.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    x = (frames.float() / 255.0 - mean) / std
    gt, gh, gw = T // tp, H // ps, W // ps
    x = x.reshape(gt, tp, C, gh // ms, ms, ps, gw // ms, ms, ps)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, C * tp * ps * ps).to(dtype), (gt, gh, gw)


def qwen_position_ids(
    prefix_len: int, grid: tuple[int, int, int], merge_size: int, suffix_len: int, interval: float,
    rule: str = "trained",
) -> torch.Tensor:
    """``[3, prefix + video + suffix]`` M-RoPE ids by Qwen's rule (module docstring); ``rule=
    "transformers"``: as transformers 5.x's ``get_rope_index`` computes them (temporal ids in
    fp32, the text after the video at ``s + max(h, w)``)."""
    t, h, w = grid[0], grid[1] // merge_size, grid[2] // merge_size
    prefix = torch.arange(prefix_len).expand(3, -1)
    s = prefix_len
    if rule == "transformers":
        tt = (torch.arange(t) * interval).long()  # int64 x float: fp32, truncated, as theirs
    else:
        tt = (torch.arange(t, dtype=torch.float64) * interval).floor().long()
    T_, H_, W_ = torch.meshgrid(tt, torch.arange(h), torch.arange(w), indexing="ij")
    video = torch.stack([T_, H_, W_]).reshape(3, -1) + s
    if rule == "transformers":
        nxt = s + max(h, w)
    else:
        nxt = int(video.max()) + 1 if video.numel() else s
    suffix = torch.arange(nxt, nxt + suffix_len).expand(3, -1)
    return torch.cat([prefix, video, suffix], dim=1).long()


class QwenVLAdapter(TransformersVideoLM):
    """Adapter for Qwen2-VL and Qwen2.5-VL (same prompt, vision and position layout)."""

    position_rule_differs = True
    processor_resize = True

    def __init__(self, model, tokenizer, preprocessing: QwenVisionPreprocessing, chat_template: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.pp = preprocessing
        self.chat_template = chat_template
        cfg = model.config
        self.model_type = cfg.model_type
        self.video_token_id = cfg.video_token_id
        self.text_config = cfg.get_text_config()
        vc = cfg.vision_config
        self.tokens_per_second = getattr(vc, "tokens_per_second", None) if self.model_type == "qwen2_5_vl" else None

    @classmethod
    def from_loaded(cls, model, tokenizer, name_or_path):
        pp = QwenVisionPreprocessing.from_pretrained(name_or_path, model.config.vision_config)
        return cls(model, tokenizer, pp, chat_template=load_chat_template(tokenizer, name_or_path))

    # -- inputs -------------------------------------------------------------------------
    @property
    def size_factor(self) -> int:
        return self.pp.size_factor

    def temporal_interval(self, sampling_fps: float) -> float:
        if self.tokens_per_second is None:
            return 1.0
        if self.position_rule == "transformers":  # as the processor and get_rope_index compute it: fp32
            step = torch.tensor(self.pp.temporal_patch_size / sampling_fps, dtype=torch.float32)
            return float(step * self.tokens_per_second)
        return self.tokens_per_second * self.pp.temporal_patch_size / sampling_fps

    def prepare_video(self, frames, sampling_fps, timestamps) -> VideoInputs:
        pv, grid = patchify(frames, self.pp, dtype=self.model.model.visual.dtype)
        per_step = (grid[1] // self.pp.merge_size) * (grid[2] // self.pp.merge_size)
        return VideoInputs(
            pixel_values=pv,
            grid_thw=grid,
            num_frames=int(frames.shape[0]),
            frames_per_step=self.pp.temporal_patch_size,
            tokens_per_step=per_step,
            step_token_offsets=[s * per_step for s in range(grid[0] + 1)],
            sampling_fps=sampling_fps,
            timestamps=list(timestamps),
            token_grid=(grid[1] // self.pp.merge_size, grid[2] // self.pp.merge_size),
        )

    def build_prompt(self, question, video, system_prompt=None) -> Prompt:
        text = self.chat_text(question, system_prompt)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        where = [i for i, t in enumerate(ids) if t == self.video_token_id]
        if len(where) != 1:
            raise ValueError(
                f"the chat template produced {len(where)} video placeholder tokens (id {self.video_token_id}); expected 1"
            )
        p = where[0]
        prefix, suffix = ids[:p], ids[p + 1 :]
        input_ids = torch.tensor(prefix + [self.video_token_id] * video.num_tokens + suffix, dtype=torch.long)
        pos = qwen_position_ids(
            len(prefix), video.grid_thw, self.pp.merge_size, len(suffix), self.temporal_interval(video.sampling_fps),
            rule=self.position_rule,
        )
        return Prompt(input_ids=input_ids, position_ids=pos, video_start=p, video_end=p + video.num_tokens)

    @torch.no_grad()
    def encode_video(self, video, batch_steps=16, out_device=None) -> torch.Tensor:
        gt, gh, gw = video.grid_thw
        rows = gh * gw
        visual = self.model.model.visual
        P = video.tokens_per_step
        out = None  # filled batch by batch: no second copy of the whole video's features
        for a in range(0, gt, batch_steps):
            b = min(gt, a + batch_steps)
            pv = video.pixel_values[a * rows : b * rows].to(visual.device, visual.dtype)
            grid = torch.tensor([[b - a, gh, gw]], device=visual.device)
            feats = torch.cat(self.model.model.get_video_features(pv, grid).pooler_output, dim=0)
            if out is None:
                out = feature_buffer(gt * P, feats.shape[-1], out_device or self.device, self.dtype)
            out[a * P : b * P] = feats
        return out

    # -- language model (shared members: TransformersVideoLM) ------------------------------
    def forward_embeds(self, embeds, position_ids, cache, **attn_kwargs):
        out = self.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids.to(embeds.device).unsqueeze(1),
            past_key_values=cache,
            use_cache=True,
            attention_mask=NO_MASK,
            **attn_kwargs,
        )
        return out.last_hidden_state

    def rope(self, position_ids, like):
        cos, sin = self.language_model.rotary_emb(like, position_ids.to(like.device).unsqueeze(1))
        return cos[0], sin[0]
