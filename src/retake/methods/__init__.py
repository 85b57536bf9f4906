"""Compression methods, by the name used everywhere (config, results, tables)."""

from __future__ import annotations

import dataclasses

from .adakv import AdaKV
from .adaptoken import AdaptToken
from .adaretake import AdaReTaKe
from .base import ChunkSpan, LayerKeep, LayerView, Method, ScoringGroup, VideoPlan, budget_tokens, topk_sorted
from .downsample import Downsample
from .evs import EVS
from .fastv import FastV
from .fastvid import FastVID
from .fitprune import FitPrune
from .flexselect import FlexSelect
from .h2o import H2O
from .infinipot_v import InfiniPotV
from .knorm import Knorm
from .lookm import LookM
from .none import NoCompression
from .pyramiddrop import PyramidDrop
from .pyramidkv import PyramidKV
from .random import RandomTokens
from .retake import ReTaKe
from .snapkv import SnapKV
from .streammem import StreamMem
from .sparsevlm import SparseVLM
from .uniform import UniformFrames
from .vidcom2 import VidCom2
from .vlcache import VLCache

METHODS: dict[str, type[Method]] = {
    NoCompression.name: NoCompression,
    AdaReTaKe.name: AdaReTaKe,
    ReTaKe.name: ReTaKe,
    UniformFrames.name: UniformFrames,
    # -- fastv, pyramiddrop, snapkv, pyramidkv
    FastV.name: FastV,
    PyramidDrop.name: PyramidDrop,
    SnapKV.name: SnapKV,
    PyramidKV.name: PyramidKV,
    # -- vlcache, fitprune, h2o, adakv
    VLCache.name: VLCache,
    FitPrune.name: FitPrune,
    H2O.name: H2O,
    AdaKV.name: AdaKV,
    Knorm.name: Knorm,
    # -- lookm, sparsevlm
    LookM.name: LookM,
    SparseVLM.name: SparseVLM,
    # -- the 2025-2026 comparison: query-aware selection (two passes), pre-LLM pruners, sanity baselines
    FlexSelect.name: FlexSelect,
    AdaptToken.name: AdaptToken,
    VidCom2.name: VidCom2,
    EVS.name: EVS,
    FastVID.name: FastVID,
    RandomTokens.name: RandomTokens,
    Downsample.name: Downsample,
    # -- question-unknown, streaming: compress once under a memory cap, answer every question
    InfiniPotV.name: InfiniPotV,
    StreamMem.name: StreamMem,
}

# Method families, the plots' panels (``retake.harness.plots``): where each method acts, as its
# paper defines it. ``baseline`` (the uncompressed model and the sanity baselines) is drawn in
# every panel; the ``streaming`` panel also holds every method's question-unknown runs.
FAMILIES: dict[str, str] = {
    "baseline": "baselines: uncompressed, fewer frames, random tokens",
    "kv": "in-LLM KV cache compression",
    "hidden": "hidden-state token pruning (here: per-chunk KV selection)",
    "pre_llm": "pre-LLM token pruning / merging",
    "two_pass": "query-aware two-pass selection",
    "streaming": "question unknown: streaming under a memory cap",
}
FAMILY: dict[str, str] = {
    "none": "baseline", "uniform": "baseline", "random": "baseline",
    "adaretake": "kv", "retake": "kv", "snapkv": "kv", "pyramidkv": "kv", "h2o": "kv", "adakv": "kv", "knorm": "kv",
    "vlcache": "kv", "lookm": "kv",
    "fastv": "hidden", "pyramiddrop": "hidden", "fitprune": "hidden", "sparsevlm": "hidden",
    "evs": "pre_llm", "vidcom2": "pre_llm", "fastvid": "pre_llm", "downsample": "pre_llm",
    "flexselect": "two_pass", "adaptoken": "two_pass",
    "infinipot_v": "streaming", "streammem": "streaming",
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


__all__ = ["FAMILIES", "FAMILY", "METHODS", "ChunkSpan", "LayerKeep", "LayerView", "Method", "ScoringGroup", "VideoPlan",
           "budget_tokens", "get_method", "topk_sorted"]
