"""What the engine needs from a model family, and nothing about any compression method.

An adapter turns frames into model-ready video inputs, builds the prompt, knows the
family's position ids, runs the vision encoder in bounded batches, and runs the language
model on embeddings with a given cache. The engine (``retake.engine``) drives it; methods
(``retake.methods``) never see it.

Position ids are always a ``[R, S]`` LongTensor: R = 3 rows (temporal, height, width) for
M-RoPE families, R = 1 for 1-D RoPE. Text tokens have equal rows.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


def feature_buffer(rows: int, width: int, device, dtype) -> torch.Tensor:
    """An empty ``[rows, width]`` tensor for a video's features on ``device``; in pinned
    memory when that is the CPU and CUDA is there (chunks then reach the GPU faster)."""
    device = torch.device(device)
    pin = device.type == "cpu" and torch.cuda.is_available()
    return torch.empty(rows, width, device=device, dtype=dtype, pin_memory=pin)


@dataclass
class VideoInputs:
    """A video made ready for one model.

    ``step_token_offsets[s]`` is the offset of grid step s's first token inside the video's
    token span; the last entry is the span's length (it may include trailing tokens such as
    a newline token, which then belong to the last step).

    ``visual_mask`` (bool ``[N_v]``) is set by families that interleave text with the grid
    tokens inside the span (Qwen3-VL: a timestamp and vision start/end tokens per step): True
    at the ``tokens_per_step`` grid tokens of every step. None: no interleaved text, a step's
    grid tokens are its first ``tokens_per_step`` tokens.
    """

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]  # (grid steps, patch rows, patch cols)
    num_frames: int
    frames_per_step: int
    tokens_per_step: int
    step_token_offsets: list[int]
    sampling_fps: float
    timestamps: list[float]
    visual_mask: torch.Tensor | None = None
    token_grid: tuple[int, int] | None = None  # (rows, cols) of a step's grid tokens, row-major

    @property
    def num_steps(self) -> int:
        return len(self.step_token_offsets) - 1

    @property
    def num_tokens(self) -> int:
        return self.step_token_offsets[-1]

    @property
    def max_step_tokens(self) -> int:
        """Most tokens one grid step costs: its grid tokens plus the most interleaved text of
        any step (``visual_mask``) or trailing tokens (LLaVA's newline, in the last step)."""
        off = self.step_token_offsets
        return max(off[s + 1] - off[s] for s in range(self.num_steps))


@dataclass
class VideoFeatures:
    """``encode_video``'s answer when the language model needs more than the span's embeddings.

    embeds: ``[N_v, hidden]`` input embeddings of the whole video span.
    extras: ``{name: [N_v, ...]}`` per-token inputs (e.g. Qwen3-VL's DeepStack features). The
        engine slices them exactly like ``embeds`` (chunk, ``plan.input_keep``) and hands the
        chunk's slice back through ``forward_embeds(..., video_extras=...)``; text, guide and
        decoding steps get none. Adapters that need nothing more return a plain tensor.
    """

    embeds: torch.Tensor
    extras: dict[str, torch.Tensor]


@dataclass
class Prompt:
    """The full (uncompressed) input: prefix text, video tokens, suffix text.

    input_ids: ``[S]``; position_ids: ``[R, S]``; the video occupies ``[video_start, video_end)``.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    video_start: int
    video_end: int

    @property
    def prefix_len(self) -> int:
        return self.video_start

    @property
    def suffix_len(self) -> int:
        return int(self.input_ids.shape[0]) - self.video_end

    @property
    def num_text_tokens(self) -> int:
        return self.prefix_len + self.suffix_len


class VideoLMAdapter(ABC):
    """Interface between the engine and one model family (see module docstring)."""

    model: torch.nn.Module
    tokenizer: object
    # where the text after a video is placed (retake.config.PositionRule); only families whose
    # rules differ read it (Qwen2-VL / Qwen2.5-VL: position_rule_differs)
    position_rule: str = "trained"
    prompt_layout: str = "qwen"
    position_rule_differs: bool = False
    # frames sized by pixel area (sampling.min_pixels): whether the family's transformers video
    # processor resizes them once more, as lmms-eval's wrapper lets it (Qwen2-VL / Qwen2.5-VL)
    processor_resize: bool = False

    def set_position_rule(self, rule: str) -> None:
        """``trained`` or ``transformers``; the latter with a one-line warning where it changes ids."""
        rule = str(getattr(rule, "value", rule))
        if rule not in ("trained", "transformers"):
            raise ValueError(f"model.position_rule: {rule!r} is not a valid choice; valid: trained, transformers")
        self.position_rule = rule
        if rule == "transformers" and self.position_rule_differs:
            from .. import log

            log.warning("model.position_rule=transformers: the text after the video is placed as transformers 5.x's "
                        "get_rope_index places it (transformers issue 45381), not by the rule the model was trained "
                        "with; use it to match numbers computed that way (lmms-eval's wrappers on transformers 5)")

    def set_prompt_layout(self, layout: str) -> None:
        """``qwen`` or ``transformers`` (``retake.config.PromptLayout``); families where the two
        processors lay out a video alike ignore it."""
        layout = str(getattr(layout, "value", layout))
        if layout not in ("qwen", "transformers"):
            raise ValueError(f"model.prompt_layout: {layout!r} is not a valid choice; valid: qwen, transformers")
        self.prompt_layout = layout

    # -- inputs -------------------------------------------------------------------------
    @property
    @abstractmethod
    def size_factor(self) -> int:
        """Frame sides must be multiples of this (e.g. patch 14 x merge 2 = 28)."""

    @property
    def tokens_follow_resolution(self) -> bool:
        """Whether a frame's token count follows its size (Qwen: one token per 28x28 pixels), so
        that resizing the frames changes the tokens; False where every frame is encoded at one
        fixed input size (LLaVA-OneVision's 384 px)."""
        return True

    @abstractmethod
    def prepare_video(self, frames: torch.Tensor, sampling_fps: float, timestamps: list[float]) -> VideoInputs:
        """uint8 frames ``[T, 3, H, W]`` -> model inputs (normalised, patchified)."""

    @abstractmethod
    def build_prompt(self, question: str, video: VideoInputs, system_prompt: str | None = None) -> Prompt:
        """Chat-template prompt with the video expanded to its tokens, and position ids."""

    @abstractmethod
    def encode_video(self, video: VideoInputs, batch_steps: int = 16,
                     out_device: torch.device | str | None = None) -> torch.Tensor | VideoFeatures:
        """Input embeddings of the video span ``[N_v, hidden]`` in LLM space (visual features;
        interleaved text tokens' embeddings in place), encoded ``batch_steps`` grid steps at a
        time so that vision activations stay bounded; a :class:`VideoFeatures` when the
        language model needs per-token extras too. ``out_device``: where the result is
        assembled (default the model's device; ``"cpu"`` keeps it off the accelerator)."""

    # -- language model -----------------------------------------------------------------
    @property
    @abstractmethod
    def num_layers(self) -> int:
        """The language model's layers that hold a KV cache (every layer, but for a hybrid model's
        attention layers): the layers the methods see and the engine compresses."""

    @property
    def layer_types(self) -> list[str] | None:
        """A hybrid model's decoder layer types in order (``"full_attention"`` /
        ``"linear_attention"``, as transformers' ``config.layer_types``); None: every layer is an
        attention layer."""
        return None

    @property
    @abstractmethod
    def eos_token_ids(self) -> list[int]: ...

    @abstractmethod
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[S]`` token ids -> ``[1, S, hidden]`` embeddings."""

    @abstractmethod
    def forward_embeds(self, embeds: torch.Tensor, position_ids: torch.Tensor, cache, **attn_kwargs) -> torch.Tensor:
        """Run the language model on ``[1, S, hidden]`` with ``[R, S]`` positions appending to
        ``cache``; extra kwargs reach the attention function. Returns final-norm hidden states.
        Adapters whose ``encode_video`` returns :class:`VideoFeatures` also take
        ``video_extras`` (``{name: [n, ...]}``, the extras of the input's first n tokens, the
        chunk; the guide after it has none); the engine passes it only for video chunks."""

    @abstractmethod
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head on ``[..., hidden]``."""

    def last_mlp(self) -> torch.nn.Module | None:
        """The last decoder layer's MLP, whose output for the guide's rows nobody reads (the engine
        skips computing it); None: not known, everything is computed."""
        return None

    @abstractmethod
    def rope(self, position_ids: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``[S, head_dim]`` for ``[R, S]`` positions, as the model applies them
        (``x * cos + rotate_half(x) * sin``). Lets methods un-rotate or re-rotate keys."""

    @classmethod
    @abstractmethod
    def from_loaded(cls, model, tokenizer, name_or_path: str) -> "VideoLMAdapter":
        """Wrap a loaded model; read whatever else the family needs from ``name_or_path``."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


# Passing a dict skips transformers' mask construction: the engine's attention function
# builds the (bottom-right causal) mask itself from the query and key lengths.
NO_MASK = {"full_attention": None, "sliding_attention": None}


class TransformersVideoLM(VideoLMAdapter):
    """Members shared by adapters of transformers ``*ForConditionalGeneration`` models whose
    language model is ``model.model.language_model`` and head ``model.lm_head``. Subclasses
    set ``model``, ``tokenizer`` and ``text_config``."""

    text_config: object

    @property
    def language_model(self):
        return self.model.model.language_model

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.language_model.embed_tokens.weight.device

    @property
    def layer_types(self) -> list[str] | None:
        types = getattr(self.text_config, "layer_types", None)
        if not types or all(t == "full_attention" for t in types):
            return None
        return list(types)

    @property
    def num_layers(self) -> int:
        types = self.layer_types
        return self.text_config.num_hidden_layers if types is None else types.count("full_attention")

    @property
    def eos_token_ids(self) -> list[int]:
        ids = []
        gen = getattr(self.model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if source is None:
                continue
            ids.extend(source if isinstance(source, (list, tuple)) else [source])
        return sorted(set(int(i) for i in ids))

    def embed(self, input_ids):
        return self.language_model.embed_tokens(input_ids.to(self.device)).unsqueeze(0)

    def chat_text(self, question: str, system_prompt: str | None = None) -> str:
        """The chat template's text of a user turn: the video, then the question (a system turn first
        if given)."""
        messages = []
        if system_prompt is not None:
            messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
        messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]})
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
        )

    # 1-D positions (``[1, S]``: LLaVA-OneVision, InternVL); Qwen's M-RoPE adapters override these
    def forward_embeds(self, embeds, position_ids, cache, **attn_kwargs):
        out = self.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids.to(embeds.device),  # [1, S]: batch 1, one row
            past_key_values=cache,
            use_cache=True,
            attention_mask=NO_MASK,
            **attn_kwargs,
        )
        return out.last_hidden_state

    def rope(self, position_ids, like):
        cos, sin = self.language_model.rotary_emb(like, position_ids.to(like.device))
        return cos[0], sin[0]

    def last_mlp(self):
        """The language model's last decoder layer's MLP (the engine skips its rows nobody reads)."""
        return self.language_model.layers[-1].mlp

    def logits(self, hidden):
        return self.model.lm_head(hidden.to(self.model.lm_head.weight.device))


def load_chat_template(tokenizer, name_or_path: str) -> str | None:
    """The tokenizer's template, else the processor's ``chat_template.json`` / ``.jinja``."""
    if getattr(tokenizer, "chat_template", None):
        return None  # the tokenizer's own is used
    from transformers.utils import cached_file

    for fname in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(name_or_path, fname, _raise_exceptions_for_missing_entries=False)
        if path:
            with open(path) as f:
                text = f.read()
            return json.loads(text)["chat_template"] if fname.endswith(".json") else text
    raise ValueError(f"{name_or_path!r} has no chat template (tokenizer_config, chat_template.jinja or chat_template.json)")
