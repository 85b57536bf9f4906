"""The settings of a run, declared once: what the library takes and what Hydra types.

:class:`SamplingConfig` (video file -> frames), :class:`EngineConfig` (the chunked prefill)
and :class:`ModelConfig` (how a checkpoint is loaded and prompted) are plain dataclasses the
library takes (``answer_question(..., sampling, engine)``, ``Engine(..., config)``) and, the
same classes, the typed sections of a Hydra cell config (``retake.harness.schema``), the
lmms-eval model's ``--model_args`` (:func:`from_strings`, the one place strings are parsed)
and ``retake ask``'s flags (:func:`add_arguments`). A field added here is settable
everywhere; its default and its range check live here only.

Choices are :class:`Choice` enums (a ``str`` subclass: ``SamplingConfig().backend == "pyav"``),
so Hydra names the valid values of a wrong one when the config is composed.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Choice(str, Enum):
    """A setting's choice; compares, hashes, prints and serialises as its value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value: Any, key: str) -> "Choice":
        try:
            return cls(value.value if isinstance(value, Enum) else value)
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not a valid choice; valid: {', '.join(c.value for c in cls)}") from None


class Backend(Choice):
    pyav = "pyav"
    decord = "decord"


class Resize(Choice):
    uint8 = "uint8"
    float32 = "float32"


class FrameRule(Choice):
    """How many frames: ``fps`` (the authors': duration x sampling.fps, rounded to even, at most
    max_frames) or ``count`` (lmms-eval's Qwen chat wrappers: max_frames whatever the duration)."""

    fps = "fps"
    count = "count"


class QuestionMode(Choice):
    aware = "aware"
    unknown = "unknown"


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{key}: {message}")


def _choice(obj, name: str, cls: type[Choice], section: str) -> None:
    """A choice given as a string (library callers) becomes its enum; a bad one names the valid ones."""
    setattr(obj, name, cls.parse(getattr(obj, name), f"{section}.{name}"))


@dataclass
class SamplingConfig:
    """A video file -> the frames a model sees (``retake.video.load_video``)."""

    fps: float = 2.0  # frames sampled per second of video (frame_rule fps)
    max_frames: int = 2048  # the most frames sampled
    max_long_side: int = 448  # frames resized so their long side is at most this, never up
    backend: Backend = Backend.pyav  # the decoder (pyav measured faster: docs/performance.md)
    resize: Resize = Resize.uint8  # the bicubic resize kernel (uint8 faster; float32 = qwen-vl-utils')
    # refuse a file whose header declares more frames than decode (default: sample over those that do)
    strict_frames: bool = False
    frame_rule: FrameRule = FrameRule.fps  # how many frames: fps (the authors') or count (lmms-eval's: max_frames)
    # frame size by pixel area, as qwen-vl-utils sizes a video (lmms-eval's Qwen wrappers; may
    # upscale) instead of by max_long_side; both null: max_long_side (the authors')
    min_pixels: int | None = None
    max_pixels: int | None = None  # (with min_pixels) the largest frame area

    def __post_init__(self):
        _choice(self, "backend", Backend, "sampling")
        _choice(self, "resize", Resize, "sampling")
        _choice(self, "frame_rule", FrameRule, "sampling")
        for key in ("min_pixels", "max_pixels"):
            v = getattr(self, key)
            _check(v is None or v >= 1, f"sampling.{key}", f"must be >= 1 or null, got {v}")
        _check(self.min_pixels is None or self.max_pixels is None or self.max_pixels >= self.min_pixels,
               "sampling.max_pixels", f"must be >= sampling.min_pixels={self.min_pixels}, got {self.max_pixels}")
        _check(self.fps > 0, "sampling.fps", f"must be > 0, got {self.fps}")
        _check(self.max_frames >= 2, "sampling.max_frames", f"must be >= 2, got {self.max_frames}")
        _check(self.max_long_side >= 28, "sampling.max_long_side", f"must be >= 28, got {self.max_long_side}")


@dataclass
class EngineConfig:
    """The chunked prefill (``retake.engine.Engine``)."""

    chunk_frames: int = 32  # frames per prefill chunk (a multiple of the frames per grid step)
    max_context: int = 16384  # the budget: text + kept video tokens per layer
    max_new_tokens: int = 128  # the longest answer, in tokens (greedy decoding)
    # guide tokens shown with each chunk (the suffix's first ones); None: the whole suffix (the
    # harness's null: the dataset's own, LongVideoBench 152)
    max_guide_tokens: int | None = None
    vision_batch_steps: int = 16  # grid steps per vision-encoder batch (bounds its activations)
    reforge_positions: bool = False  # compress kept tokens' temporal ids per layer (engine.positions)
    # keep the video's input embeddings [N_v, hidden] in (pinned) CPU memory and send each
    # chunk's to the accelerator: accelerator memory then stops growing with the frames
    offload_features: bool = False
    # aware: the guide is the question (the papers' setting); unknown: the video is compressed
    # without it (guided methods see the proxy guide), so one compressed cache serves every
    # question on the video (a cell of its own: __unknown)
    question_mode: QuestionMode = QuestionMode.aware
    question_tokens: int = 256  # unknown: the room the budget leaves for a question's tokens
    # skip work whose result nobody reads, same answers (docs/performance.md §1): the prefix runs
    # in the first chunk's forward, and the guide's rows skip the last layer's MLP; False runs
    # every forward in full (the reference the tests compare against)
    fast_paths: bool = True
    # greedy decoding's repetition penalty, as transformers applies it (a token already in the
    # prompt or the answer: its logit / p if > 0, else x p); 1: off; null: the checkpoint's
    # generation_config.json (lmms-eval's wrappers decode with it: protocol=lmms_eval)
    repetition_penalty: float | None = 1.0

    def __post_init__(self):
        _choice(self, "question_mode", QuestionMode, "engine")
        _check(self.repetition_penalty is None or self.repetition_penalty > 0, "engine.repetition_penalty",
               f"must be > 0 or null, got {self.repetition_penalty}")
        for key in ("chunk_frames", "max_context", "vision_batch_steps"):
            _check(getattr(self, key) >= 1, f"engine.{key}", f"must be >= 1, got {getattr(self, key)}")
        _check(self.max_new_tokens >= 0, "engine.max_new_tokens", f"must be >= 0, got {self.max_new_tokens}")
        _check(self.max_guide_tokens is None or self.max_guide_tokens >= 1, "engine.max_guide_tokens",
               f"must be >= 1 or null, got {self.max_guide_tokens}")
        _check(self.question_tokens >= 0, "engine.question_tokens", f"must be >= 0, got {self.question_tokens}")


class PositionRule(Choice):
    """Where Qwen2-VL / Qwen2.5-VL put the text after a video (M-RoPE; docs/architecture.md):
    ``trained``: after the video's largest id (the rule the models were trained with, transformers
    4.x); ``transformers``: ``max(h, w)`` merged tokens after the video's start, whatever its
    temporal extent (transformers 5.x's ``get_rope_index``; its issue 45381), what lmms-eval's
    wrappers compute on transformers 5. Other families: both rules give the same ids."""

    trained = "trained"
    transformers = "transformers"


class PromptLayout(Choice):
    """Whose processor lays out the video in the prompt: ``qwen`` (Qwen's own processor,
    transformers 4.x) or ``transformers`` (transformers >= 5.10's, what lmms-eval's wrappers use
    on transformers 5). Only Qwen3-VL / Qwen3.5 differ: transformers keeps the template's
    ``<|vision_start|>`` / ``<|vision_end|>`` around the per-step expansion."""

    qwen = "qwen"
    transformers = "transformers"


class Dtype(Choice):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


PROMPT_FIELDS = ("system_prompt",)  # ModelConfig fields used when prompting, not when loading


@dataclass
class ModelConfig:
    """How a checkpoint is loaded (``retake.models.load_adapter``)."""

    pretrained: str = ""  # a local checkpoint directory or a hub id
    dtype: Dtype = Dtype.auto  # auto: bf16 on an accelerator, fp32 on CPU
    attn_implementation: str = "sdpa"  # the vision tower's kernel
    rope_scaling_factor: float | None = None  # YaRN factor for the LLM's RoPE (the papers: 4)
    device: str | None = None  # cuda, cpu, cuda:1, ...; null: cuda:LOCAL_RANK when there, else CPU
    device_map: Any = None  # model parallel: "auto" or a {module: device} map
    # the chat's system message; null: the chat template's own (Qwen: "You are a helpful assistant.")
    system_prompt: str | None = None
    position_rule: PositionRule = PositionRule.trained  # text positions after a video (PositionRule)
    prompt_layout: PromptLayout = PromptLayout.qwen  # the video's tokens in the prompt (PromptLayout)

    def __post_init__(self):
        _choice(self, "dtype", Dtype, "model")
        _choice(self, "position_rule", PositionRule, "model")
        _choice(self, "prompt_layout", PromptLayout, "model")
        _check(self.rope_scaling_factor is None or self.rope_scaling_factor >= 1, "model.rope_scaling_factor",
               f"must be >= 1 or null, got {self.rope_scaling_factor}")

    def load(self, **overrides):
        """The adapter of this checkpoint."""
        from .models import load_adapter

        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig) if f.name not in PROMPT_FIELDS}
        kw.update(overrides)
        return load_adapter(kw.pop("pretrained"), **{k: (v.value if isinstance(v, Enum) else v) for k, v in kw.items()})


# -- strings (a command line) -> typed values, by the dataclasses' own field types ---------------

_NONE = {"", "none", "null"}


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {v!r}")


def _parse_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got {v!r}")
    f = float(v)
    if f != int(f):
        raise ValueError(f"expected an integer, got {v!r}")
    return int(f)


def _parse_any(v: Any) -> Any:
    """A free-form value: a JSON object / list when it looks like one, else the text itself
    (a device map: "auto" or ``{"model.visual": "cuda:0", ...}``)."""
    if isinstance(v, str):
        text = v.strip()
        if text[:1] in "{[":
            return json.loads(text)
        return text
    return v


def parse_value(tp: Any, value: Any) -> Any:
    """``value`` (a string from a command line, or already a value) as the type ``tp``."""
    args = typing.get_args(tp)
    if type(None) in args:  # X | None
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        (tp,) = [a for a in args if a is not type(None)]
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value.value if isinstance(value, Enum) else str(value).strip())
    if tp is bool:
        return _parse_bool(value)
    if tp is int:
        return _parse_int(value)
    if tp is float:
        return float(value)
    if tp is str:
        return str(value)
    if typing.get_origin(tp) is dict or tp is dict:
        d = _parse_any(value) if value is not None else {}
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {value!r}")
        return d
    return _parse_any(value) if value is not None else None


def from_strings(cls, values: dict, section: str = ""):
    """An instance of the dataclass ``cls`` from ``values`` (strings or values; missing fields
    take their defaults). A value that does not parse names its key and the valid choices."""
    hints = _hints(cls)
    kw = {}
    for name, value in values.items():
        try:
            kw[name] = parse_value(hints[name], value)
        except (TypeError, ValueError) as e:
            key = f"{section}.{name}" if section else name
            tp = hints[name]
            choices = [a for a in (tp, *typing.get_args(tp)) if isinstance(a, type) and issubclass(a, Enum)]
            valid = f"; valid: {', '.join(c.value for c in choices[0])}" if choices else ""
            raise ValueError(f"{key}={value!r}: {e}{valid}") from None
    return cls(**kw)


def to_plain(value: Any) -> Any:
    """A value as a command line writes it back (enums as their value)."""
    return value.value if isinstance(value, Enum) else value


def field_comments(cls) -> dict[str, str]:
    """Each field's comment in the class's source (the comment lines just above it and the one
    after it on its line): the one description of a setting, which ``--help`` shows too."""
    import inspect
    import io
    import tokenize

    out: dict[str, str] = {}
    above: list[str] = []
    pending = None  # a field whose line may still carry a trailing comment
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline))
    except (OSError, TypeError, tokenize.TokenError):
        return out
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if pending is not None and tokens[i - 1].start[0] == tok.start[0]:
                out[pending] = " ".join([out.get(pending, ""), text]).strip()
            else:
                above.append(text)
        elif tok.type == tokenize.NAME and tok.start[1] == 4 and i + 1 < len(tokens) and tokens[i + 1].string == ":":
            pending = tok.string
            if above:
                out[pending] = " ".join(above)
            above = []
        elif tok.type == tokenize.NEWLINE:
            pass
        elif tok.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT) and tok.start[1] == 4:
            above = []
    return out


def add_arguments(parser, cls, skip: tuple[str, ...] = (), defaults: dict | None = None) -> None:
    """One ``--flag`` per field of the dataclass ``cls`` (underscores as dashes), its default and
    choices the dataclass's, its help the field's comment; booleans as ``--x`` / ``--no-x``.
    Parsed values are strings: build the section with :func:`from_strings` (:func:`section_from_args`)."""
    import argparse

    hints = _hints(cls)
    notes = field_comments(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp = hints[f.name]
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        base = [a for a in (tp, *typing.get_args(tp)) if a is not type(None)][0]
        note = notes.get(f.name, "").replace("%", "%%")
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                dest=f.name, help=f"{note} (default: {default})".strip())
            continue
        kw: dict[str, Any] = {"dest": f.name, "default": None if default is None else str(to_plain(default)),
                              "help": f"{note} (default: {to_plain(default)})".strip()}
        if isinstance(base, type) and issubclass(base, Enum):
            kw["choices"] = [c.value for c in base]
        parser.add_argument(flag, **kw)


def section_from_args(cls, args, section: str = ""):
    """The dataclass ``cls`` from an argparse namespace filled by :func:`add_arguments`."""
    names = [f.name for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)]
    return from_strings(cls, {n: getattr(args, n) for n in names}, section)
