"""Compression methods, by the name used everywhere (config, results, tables)."""

from __future__ import annotations

import dataclasses

from .adaretake import AdaReTaKe
from .base import ChunkSpan, LayerKeep, LayerView, Method, VideoPlan, budget_tokens, topk_sorted
from .none import NoCompression
from .retake import ReTaKe
from .uniform import UniformFrames

METHODS: dict[str, type[Method]] = {
    NoCompression.name: NoCompression,
    AdaReTaKe.name: AdaReTaKe,
    ReTaKe.name: ReTaKe,
    UniformFrames.name: UniformFrames,
    # -- fastv, pyramiddrop, snapkv, pyramidkv
    # -- vlcache, fitprune, h2o, adakv
    # -- lookm, sparsevlm
}


def get_method(name: str, **params) -> Method:
    """Build a method by name; unknown names and parameters fail with the valid choices."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid choices: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(params) - fields)
    if bad:
        raise ValueError(
            f"method {name!r} has no parameter(s) {', '.join(bad)}; valid: {', '.join(sorted(fields)) or '(none)'}"
        )
    return cls(**params)


__all__ = ["METHODS", "ChunkSpan", "LayerKeep", "LayerView", "Method", "VideoPlan", "budget_tokens", "get_method", "topk_sorted"]
