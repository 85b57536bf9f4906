"""InternVL3.5 in transformers' native format (``InternVLForConditionalGeneration``,
``model_type: internvl``; hub ids ``OpenGVLab/InternVL3_5-*-HF``).

Video path, as InternVL's own video pipeline and transformers' processor define it: every frame
is one 448 x 448 tile (the tower's ``image_size``; no dynamic tiling for video), bicubic with
antialiasing, then ``(x - 255 mean) / (255 std)`` with the checkpoint's ImageNet statistics
(transformers' fused rescale-and-normalize, the same floats). The tower (InternViT) encodes
each frame on its own; ``get_image_features`` drops the CLS token, pixel-shuffles the 32 x 32
patches by 0.5 (2 x 2 neighbours into one vector: 16 x 16 = 256 tokens, row-major) and the
MLP projector maps them to the LLM. Frames are independent, so encoding a few at a time is exact.

Prompt: the chat template's ``<video>`` placeholder (text, not a token) is replaced, as
``InternVLProcessor.replace_video_token`` writes it, by one entry per frame joined by newlines:
``Frame{i}: <img>`` + 256 ``<IMG_CONTEXT>`` + ``</img>``. A grid step is one frame; step s is
its label (``"\\nFrame{s+1}: "``, the first without the newline), ``<img>``, its 256 grid tokens
and ``</img>``; ``visual_mask`` marks the grid tokens and ``encode_video`` returns the label
and marker tokens' own embeddings in place. Methods may drop those text tokens like any other.

Positions: 1-D RoPE (Qwen3 LLM), ids ``[1, S]`` consecutive over the whole prompt; the engine
shifts the guide and continues decoding after the largest id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..video import resize_frames
from .base import Prompt, TransformersVideoLM, VideoInputs, feature_buffer, load_chat_template

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the tokenizer's named InternVL tokens (``tokenizer.<name>``) and their values when it has none
INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                   "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}

# transformers' InternVL chat template (its conversion script's): ChatML, no default system
# prompt, an image part is "<IMG_CONTEXT>\n", a video part "<video>\n", then the text.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def frame_label(index: int) -> str:
    """The text before frame ``index``'s (0-based) image, as the processor joins the frames."""
    return f"Frame{index + 1}: " if index == 0 else f"\nFrame{index + 1}: "


@dataclass
class InternVLPreprocessing:
    """Square resize (bicubic, antialiased: torch's uint8 kernel, what torchvision's v2 resize
    runs on a CPU uint8 tensor) to the tower's input, then transformers' fused rescale and
    normalize: ``(x - mean / rescale_factor) / (std / rescale_factor)`` in fp32.

    The statistics are the image processor's (``preprocessor_config.json``), what InternVL's
    own video pipeline uses for frames; the size is the tower's ``image_size``
    (docs/models.md: why the video processor's config is not read)."""

    image_size: int = 448
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    rescale_factor: float = 1 / 255

    @classmethod
    def from_pretrained(cls, name_or_path: str, vision_config) -> InternVLPreprocessing:
        from transformers.utils import cached_file

        size = vision_config.image_size
        h, w = (size, size) if isinstance(size, int) else size
        if h != w:
            raise ValueError(f"InternVL tower input {h}x{w}: only square inputs are supported")
        kw = dict(image_size=int(h))
        path = cached_file(name_or_path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        if path:
            with open(path) as f:
                pp = json.load(f)
            for key in ("image_mean", "image_std"):
                if key in pp:
                    kw[key] = tuple(pp[key])
            if "rescale_factor" in pp:
                kw["rescale_factor"] = float(pp["rescale_factor"])
        return cls(**kw)

    def __call__(self, frames: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """uint8 ``[T, 3, H, W]`` -> normalised ``[T, 3, image_size, image_size]``."""
        x = resize_frames(frames, (self.image_size, self.image_size)).float()
        scale = 1.0 / self.rescale_factor
        mean = (torch.tensor(self.image_mean) * scale).view(1, 3, 1, 1)
        std = (torch.tensor(self.image_std) * scale).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)


@dataclass
class InternVLVideoInputs(VideoInputs):
    """``span_ids``: the span's token ids ``[N_v]`` (frame labels, ``<img>``, grid, ``</img>``)."""

    span_ids: torch.Tensor | None = None


class InternVLAdapter(TransformersVideoLM):
    """Adapter for InternVL checkpoints in transformers' format (see module docstring)."""

    def __init__(self, model, tokenizer, preprocessing: InternVLPreprocessing, chat_template: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.pp = preprocessing
        self.chat_template = chat_template
        cfg = model.config
        self.model_type = cfg.model_type
        self.text_config = cfg.get_text_config()
        self.image_token_id = cfg.image_token_id
        tokens = {name: getattr(tokenizer, name, None) or default for name, default in INTERNVL_TOKENS.items()}
        self.video_token = tokens["video_token"]  # replaced in the chat text, as the processor does
        self.start_id, self.end_id, context_id = (tokenizer.convert_tokens_to_ids(tokens[k]) for k in (
            "start_image_token", "end_image_token", "context_image_token"))
        if context_id != self.image_token_id:
            raise ValueError(f"the tokenizer's {tokens['context_image_token']} is id {context_id}, the model's "
                             f"image_token_id is {self.image_token_id}")
        vc = cfg.vision_config
        patch = vc.patch_size if isinstance(vc.patch_size, int) else vc.patch_size[0]
        self.patch_size = int(patch)
        side = self.pp.image_size // self.patch_size
        merged = side * cfg.downsample_ratio
        if side * self.patch_size != self.pp.image_size or merged != int(merged):
            raise ValueError(f"image size {self.pp.image_size} / patch {self.patch_size} / downsample "
                             f"{cfg.downsample_ratio} give no whole token grid")
        self.grid_side = int(merged)  # tokens per frame: grid_side ** 2 (16 x 16 at 448 px)

    @classmethod
    def from_loaded(cls, model, tokenizer, name_or_path):
        pp = InternVLPreprocessing.from_pretrained(name_or_path, model.config.vision_config)
        return cls(model, tokenizer, pp, chat_template=load_chat_template(tokenizer, name_or_path))

    # -- inputs -------------------------------------------------------------------------
    @property
    def size_factor(self) -> int:
        return self.patch_size  # frames are resized to the tower's square input anyway

    @property
    def tokens_follow_resolution(self) -> bool:
        return False  # every frame is resized to the tower's square input

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_side * self.grid_side

    def prepare_video(self, frames, sampling_fps, timestamps) -> InternVLVideoInputs:
        T = int(frames.shape[0])
        if len(timestamps) != T:
            raise ValueError(f"{len(timestamps)} timestamps for {T} frames")
        pv = self.pp(frames, dtype=self.model.model.vision_tower.dtype)
        P = self.tokens_per_frame
        # each label sits between special tokens (or after the user header's newline), so
        # tokenizing it alone gives the tokens of the whole prompt (checked in build_prompt)
        labels = self.tokenizer([frame_label(i) for i in range(T)], add_special_tokens=False)["input_ids"]
        ids, offsets = [], [0]
        for label in labels:
            ids += label + [self.start_id] + [self.image_token_id] * P + [self.end_id]
            offsets.append(len(ids))
        span = torch.tensor(ids, dtype=torch.long)
        side = self.pp.image_size // self.patch_size
        return InternVLVideoInputs(
            pixel_values=pv,
            grid_thw=(T, side, side),
            num_frames=T,
            frames_per_step=1,
            tokens_per_step=P,
            token_grid=(self.grid_side, self.grid_side),
            step_token_offsets=offsets,
            sampling_fps=sampling_fps,
            timestamps=list(timestamps),
            visual_mask=span == self.image_token_id,
            span_ids=span,
        )

    def build_prompt(self, question, video, system_prompt=None) -> Prompt:
        text = self.chat_text(question, system_prompt)
        parts = text.split(self.video_token)
        if len(parts) != 2:
            raise ValueError(f"the chat template produced {len(parts) - 1} video placeholders {self.video_token!r}; expected 1")
        prefix_text, suffix_text = parts
        prefix, suffix = self._ids(prefix_text), self._ids(suffix_text)
        first = video.span_ids[: video.step_token_offsets[1]].tolist()
        label = first[: first.index(self.start_id)]
        if self._ids(prefix_text + frame_label(0)) != prefix + label:  # the template's text runs into "Frame1"
            raise ValueError(f"the text before {self.video_token!r} merges with the first frame label when "
                             "tokenized; the prompt would differ from the processor's")
        input_ids = torch.cat([torch.tensor(prefix, dtype=torch.long), video.span_ids, torch.tensor(suffix, dtype=torch.long)])
        a = len(prefix)
        return Prompt(input_ids=input_ids, position_ids=torch.arange(input_ids.shape[0])[None],
                      video_start=a, video_end=a + video.num_tokens)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def encode_video(self, video, batch_steps=16, out_device=None) -> torch.Tensor:
        """``[N_v, hidden]``: the span's text tokens' embeddings, and at the grid tokens
        ``get_image_features`` of ``batch_steps`` frames at a time."""
        tower = self.model.model.vision_tower
        embeds = self.embed(video.span_ids)[0]
        if out_device is not None:
            embeds = feature_buffer(*embeds.shape, out_device, embeds.dtype).copy_(embeds)
        vis_idx = video.visual_mask.nonzero().squeeze(1).to(embeds.device)
        P = video.tokens_per_step
        for a in range(0, video.num_frames, batch_steps):
            pv = video.pixel_values[a : a + batch_steps].to(tower.device, tower.dtype)
            feats = self.model.model.get_image_features(pixel_values=pv, return_dict=True).pooler_output
            if feats.shape[1] != P:
                raise RuntimeError(f"vision features: {feats.shape[1]} tokens per frame, the prompt expects {P}")
            embeds[vis_idx[a * P : a * P + feats.shape[0] * P]] = feats.flatten(0, 1).to(embeds.device, embeds.dtype)
        return embeds
