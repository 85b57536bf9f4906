"""LLaVA-Video / LLaVA-OneVision (transformers ``LlavaOnevisionForConditionalGeneration``).

Video path, as transformers' ``LlavaOnevisionModel.get_video_features`` computes it (its
modules are called, nothing is re-implemented): every frame is resized to the tower's square
input (384 x 384 for SigLIP so400m), normalised with the checkpoint's mean/std; the tower
encodes each frame on its own (27 x 27 patches), the projector maps every patch to the LLM,
``apply_pooling`` halves each side bilinearly (ceil: 27 -> 14, so 196 tokens per frame);
after the last frame comes the video's one ``image_newline`` embedding. A grid step is one
frame; the newline belongs to the last step (``step_token_offsets[-1] = T * 196 + 1``).
Frames are independent in the tower, so encoding a few at a time is exact.

Positions: 1-D RoPE (Qwen2 LLM), ids ``[1, S]`` consecutive over the whole prompt, video
tokens included; the engine shifts the guide and continues decoding after the largest id.

Prompt: the checkpoint's chat template, LLaVA-Video's Qwen2 ChatML layout with the default
system prompt and the ``<video>`` placeholder on its own line before the question
(:data:`LLAVA_VIDEO_CHAT_TEMPLATE` is what ``scripts/convert_llava_video_weights.py`` and the
tiny checkpoints write). The single ``<video>`` token is expanded to the video's tokens.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from ..video import resize_frames
from .base import Prompt, TransformersVideoLM, VideoInputs, feature_buffer, load_chat_template

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
LLAVA_PLACEHOLDERS = ["<image>", "<video>"]  # special tokens added to Qwen2's tokenizer

# LLaVA-Video's conversation format ("qwen_1_5": ChatML, default system prompt, the visual
# placeholder then a newline then the text), for content lists with image / video / text parts.
LLAVA_VIDEO_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}<image>\n{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}<video>\n{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def siglip_preprocessor_config(image_size: int) -> dict:
    """``preprocessor_config.json`` of LLaVA-Video's frame preprocessing (SigLIP)."""
    return {
        "image_processor_type": "LlavaOnevisionImageProcessor",
        "size": {"height": image_size, "width": image_size},
        "resample": 3,  # bicubic
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(SIGLIP_MEAN),
        "image_std": list(SIGLIP_STD),
    }


@dataclass
class SiglipPreprocessing:
    """Square resize (bicubic, antialiased, as the fast video processor does on tensors),
    x/255, (x - mean)/std."""

    image_size: int = 384
    image_mean: tuple[float, float, float] = SIGLIP_MEAN
    image_std: tuple[float, float, float] = SIGLIP_STD

    @classmethod
    def from_pretrained(cls, name_or_path: str, vision_config) -> "SiglipPreprocessing":
        from transformers.utils import cached_file

        kw = dict(image_size=vision_config.image_size)
        for fname in ("preprocessor_config.json", "video_preprocessor_config.json"):
            path = cached_file(name_or_path, fname, _raise_exceptions_for_missing_entries=False)
            if path:
                with open(path) as f:
                    pp = json.load(f)
                if "image_mean" in pp:
                    kw["image_mean"] = tuple(pp["image_mean"])
                if "image_std" in pp:
                    kw["image_std"] = tuple(pp["image_std"])
                break
        return cls(**kw)

    def __call__(self, frames: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """uint8 ``[T, 3, H, W]`` -> normalised ``[T, 3, image_size, image_size]``."""
        x = resize_frames(frames, (self.image_size, self.image_size)).float() / 255.0
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)


def pooled_tokens_per_frame(image_size: int, patch_size: int) -> int:
    """Tokens per frame after ``apply_pooling``: each side of the patch grid halved, rounded up."""
    side = math.ceil(image_size // patch_size / 2)
    return side * side


class LlavaOnevisionAdapter(TransformersVideoLM):
    """Adapter for LlavaOnevision checkpoints (LLaVA-Video-7B-Qwen2 after conversion)."""

    def __init__(self, model, tokenizer, preprocessing: SiglipPreprocessing, chat_template: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.pp = preprocessing
        self.chat_template = chat_template
        cfg = model.config
        self.model_type = cfg.model_type
        self.video_token_id = cfg.video_token_id
        self.text_config = cfg.get_text_config()
        vc = cfg.vision_config
        self.patch_size = vc.patch_size
        self.tokens_per_frame = pooled_tokens_per_frame(vc.image_size, vc.patch_size)

    @classmethod
    def from_loaded(cls, model, tokenizer, name_or_path):
        pp = SiglipPreprocessing.from_pretrained(name_or_path, model.config.vision_config)
        return cls(model, tokenizer, pp, chat_template=load_chat_template(tokenizer, name_or_path))

    # -- inputs -------------------------------------------------------------------------
    @property
    def size_factor(self) -> int:
        return self.patch_size  # frames are resized to the tower's square input anyway

    @property
    def tokens_follow_resolution(self) -> bool:
        return False  # every frame is resized to the tower's square input

    @property
    def pooled_side(self) -> int:
        """Rows (= columns) of a frame's token grid after the 2x2 pooling (14 at 384 px)."""
        side = int(round(self.tokens_per_frame ** 0.5))
        if side * side != self.tokens_per_frame:
            raise ValueError(f"{self.tokens_per_frame} tokens per frame are not a square grid")
        return side

    def prepare_video(self, frames, sampling_fps, timestamps) -> VideoInputs:
        pv = self.pp(frames, dtype=self.model.model.vision_tower.dtype)
        T, side = int(frames.shape[0]), self.pp.image_size // self.patch_size
        per_frame = self.tokens_per_frame
        offsets = [s * per_frame for s in range(T)] + [T * per_frame + 1]  # + the newline, in the last step
        return VideoInputs(
            pixel_values=pv,
            grid_thw=(T, side, side),
            num_frames=T,
            frames_per_step=1,
            tokens_per_step=per_frame,
            step_token_offsets=offsets,
            sampling_fps=sampling_fps,
            timestamps=list(timestamps),
            token_grid=(self.pooled_side, self.pooled_side),
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
        position_ids = torch.arange(input_ids.shape[0])[None]
        return Prompt(input_ids=input_ids, position_ids=position_ids, video_start=p, video_end=p + video.num_tokens)

    @torch.no_grad()
    def encode_video(self, video, batch_steps=16, out_device=None) -> torch.Tensor:
        """``[T * tokens_per_frame + 1, hidden]``: ``get_video_features`` on ``batch_steps``
        frames at a time; each call appends the newline, which is kept after the last frame only."""
        tower = self.model.model.vision_tower
        out, at = None, 0  # filled batch by batch: no second copy of the whole video's features
        for a in range(0, video.num_frames, batch_steps):
            pv = video.pixel_values[a : a + batch_steps].to(tower.device, tower.dtype)
            feats = self.model.model.get_video_features(pv[None]).pooler_output[0]  # [f * P + 1, hidden]
            if out is None:
                out = feature_buffer(video.num_tokens, feats.shape[-1], out_device or self.device, self.dtype)
            n = feats.shape[0] - 1
            if at + n + 1 > video.num_tokens:
                raise RuntimeError(f"vision features: more than the {video.num_tokens} tokens the prompt expects")
            out[at : at + n] = feats[:-1]
            at += n
            out[at] = feats[-1]  # the newline: kept after the last frame only (overwritten until then)
        if at + 1 != video.num_tokens:
            raise RuntimeError(f"vision features: {at + 1} tokens, the prompt expects {video.num_tokens}")
        return out
