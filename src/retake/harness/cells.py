"""What a cell is: its config checked against the schema, its name, its folder, its identity.

A cell = one model x method x dataset x budget x frames (plus every setting that changes an
answer). :func:`resolve_config` checks a config against ``retake.harness.schema`` (defaults
filled in, types, choices and ranges checked, naming the key); :func:`typed` gives the same
config as the schema's dataclasses (``cfg.engine`` an ``EngineConfig``, ``cfg.sampling`` a
``SamplingConfig``), which is what the lmms-eval model and the engine take. The folder::

    <results_root>/<model>__<method>[-<m>]__<dataset>__<max_context>__<max_frames>[__reforge][__unknown][__<protocol>][__s<s>][__limit<N>]

``m``: 8 hex digits of sha1 over the method parameters that differ from the method's
defaults (sorted JSON); ``s``: the same over the sampling / engine / model settings that
differ from their schema defaults (:data:`SETTING_KEYS`); ``limit<N>``: a run on the first N
samples only; ``<protocol>``: the protocol the config was set from, when not ``authors``
(``lmms_eval``). Settings not in the name (model dtype and RoPE scaling) are checked against the
folder's ``config.yaml``: a mismatch fails instead of mixing runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECTIONS = ("model", "method", "dataset", "sampling", "engine", "run")
# settings outside the name's explicit fields; a value other than its default (retake.harness.schema)
# adds the __s<hash> part
SETTING_KEYS = ("sampling.fps", "sampling.max_long_side", "sampling.backend", "sampling.resize",
                "sampling.strict_frames", "engine.chunk_frames", "engine.max_new_tokens", "engine.max_guide_tokens",
                "engine.question_tokens", "engine.repetition_penalty", "model.system_prompt", "model.position_rule", "model.prompt_layout", "sampling.frame_rule",
                "sampling.min_pixels", "sampling.max_pixels")


def setting_defaults() -> dict:
    """:data:`SETTING_KEYS` with their schema defaults."""
    from .schema import default

    return {key: default(key) for key in SETTING_KEYS}


# -- config -------------------------------------------------------------------------------

def _known_keys(raw: dict, schema) -> dict:
    """``raw`` without the keys ``schema`` (a dataclass) does not have, recursively through the
    dataclass-typed fields (an old cell's config.yaml may hold keys since removed)."""
    hints = typing.get_type_hints(schema)
    out = {}
    for k, v in raw.items():
        if k not in hints:
            continue
        sub = hints[k]
        out[k] = _known_keys(v, sub) if dataclasses.is_dataclass(sub) and isinstance(v, dict) else v
    return out


# run.<key> -> engine.<key>: settings of the engine that an earlier schema kept under run (still
# accepted where users type them, with a warning; an older cell's config.yaml has them there)
MOVED = {"run.question_mode": "engine.question_mode", "run.offload_features": "engine.offload_features"}


_warned: set[str] = set()


def _move_aliases(raw: dict, warn: bool) -> dict:
    for old, new in MOVED.items():
        section, name = old.split(".")
        value = (raw.get(section) or {}).pop(name, None)
        if value is None:
            continue
        to_section, to_name = new.split(".")
        raw.setdefault(to_section, {})[to_name] = value
        if warn and old not in _warned:
            from .. import log

            _warned.add(old)
            log.warning(f"{old}={value}: the setting is {new} now ({old} still works)")
    return raw


def resolve_config(cfg: Mapping | DictConfig, strict: bool = True) -> DictConfig:
    """The cell config checked against the schema (``retake.harness.schema``): defaults filled
    in, interpolations resolved, types, choices and ranges checked; a missing required key, an
    unknown key, a wrong type or value raises ValueError naming the key. Choices come back as
    their strings. ``strict=False`` drops unknown keys instead (reading an older cell's file)."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    from .schema import RetakeConfig

    raw = OmegaConf.to_container(OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg, resolve=True)
    raw.pop("hydra", None)
    raw = _move_aliases(raw, warn=strict)
    if not strict:
        raw = _known_keys(raw, RetakeConfig)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RetakeConfig), raw)
        OmegaConf.to_object(merged)  # the sections' range checks (__post_init__); fails on a missing key
    except MissingMandatoryValue as e:
        raise ValueError(f"cell config lacks {e.full_key}; sections: {', '.join(SECTIONS)}") from None
    except OmegaConfBaseException as e:
        raise ValueError(f"cell config: {e.full_key}: {e.msg}") from None
    return OmegaConf.create(OmegaConf.to_container(merged, resolve=True, enum_to_str=True))


def method_params(name: str, params: Mapping) -> tuple[dict, dict]:
    """(every parameter of the method with its value, the ones that differ from the defaults)."""
    from ..methods import get_method

    method = get_method(name, **dict(params))
    full, changed = {}, {}
    for f in dataclasses.fields(method):
        if not f.init:
            continue
        value = getattr(method, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        full[f.name] = value
        if value != default:
            changed[f.name] = value
    return full, changed


def short_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:8]


def changed_settings(cfg: DictConfig) -> dict:
    """The sampling / engine settings that differ from their defaults (:data:`SETTING_KEYS`)."""
    out = {}
    for key, default in setting_defaults().items():
        value = OmegaConf.select(cfg, key)
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        if value != default:
            out[key] = value
    return out


def cell_name(cfg: DictConfig) -> str:
    """The cell directory's name (module doc): derived from the config only."""
    _, changed = method_params(cfg.method.name, cfg.method.params)
    method = cfg.method.name + (f"-{short_hash(changed)}" if changed else "")
    parts = [cfg.model.name, method, cfg.dataset.name, str(cfg.engine.max_context), str(cfg.sampling.max_frames)]
    if cfg.engine.reforge_positions:
        parts.append("reforge")
    if cfg.engine.question_mode == "unknown":
        parts.append("unknown")
    if cfg.protocol != DEFAULT_PROTOCOL:
        parts.append(str(cfg.protocol))
    settings = changed_settings(cfg)
    if settings:
        parts.append(f"s{short_hash(settings)}")
    if cfg.run.limit is not None:
        parts.append(f"limit{int(cfg.run.limit)}")
    return "__".join(parts)


def cell_dir(cfg: Mapping | DictConfig) -> str:
    cfg = resolve_config(cfg)
    return os.path.join(cfg.run.results_root, cell_name(cfg))


DEFAULT_PROTOCOL = "authors"
ANSWER_NEUTRAL = ("fast_paths", "vision_batch_steps", "offload_features")


def typed(cfg: Mapping | DictConfig):
    """The cell config as the schema's dataclasses (a :class:`~retake.harness.schema.RetakeConfig`:
    ``.sampling`` a ``SamplingConfig``, ``.engine`` an ``EngineConfig``, ``.model`` a ``ModelConfig``)."""
    from .schema import RetakeConfig

    cfg = resolve_config(cfg)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RetakeConfig), cfg))


def identity(cfg: DictConfig) -> dict:
    """What makes two runs the same cell: everything that changes answers (not paths, the
    device, the attention kernel of the vision tower, or run options other than limit)."""
    full, _ = method_params(cfg.method.name, cfg.method.params)
    return {
        "model": {k: cfg.model.get(k) for k in ("name", "dtype", "rope_scaling_factor")},
        "method": {"name": cfg.method.name, "params": full},
        "dataset": cfg.dataset.name,
        "sampling": OmegaConf.to_container(cfg.sampling),
        # the engine's settings that change an answer (fast paths, vision batches and feature
        # offloading do not: tests/test_engine.py, tests/test_pipeline.py)
        "engine": {k: v for k, v in OmegaConf.to_container(cfg.engine).items() if k not in ANSWER_NEUTRAL},
        "limit": cfg.run.limit,
        "protocol": cfg.protocol,
    }


def check_same_cell(cfg: DictConfig, directory: str) -> None:
    """Fail if ``directory`` holds a run of another configuration under the same name."""
    path = os.path.join(directory, "config.yaml")
    if not os.path.exists(path):
        return
    try:
        stored = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - garbage, not UTF-8, not YAML: say which file
        raise ValueError(f"{path}: unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]}); delete it, "
                         "or set run.overwrite=true to start the cell afresh") from None
    old, new = identity(resolve_config(stored, strict=False)), identity(cfg)
    if old != new:
        diff = [k for k in new if old.get(k) != new[k]]
        raise ValueError(
            f"{directory} holds a run with different {', '.join(diff)} ({old} vs {new}); "
            "give the model config another name, or set run.overwrite=true to replace it"
        )


