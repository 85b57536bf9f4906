"""Knorm: keep the keys of smallest L2 norm.

Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression",
EMNLP 2024, arXiv 2406.11430 (https://arxiv.org/abs/2406.11430); kvpress's ``KnormPress``
(kvpress/presses/knorm_press.py), a common text-LLM baseline.

Per chunk and layer, every KV head scores each chunk token ``-||k||`` (its post-RoPE key as the
cache holds it, fp32), ``[H_kv, n]``, and keeps its own top ``round(r * n)`` (or the layer one
set from the mean over heads, ``head_selection="shared"``). It reads neither the question nor
any attention, so it needs no guide and compresses a video once for all its questions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerView
from .scorer import HeadScorer


@dataclass
class Knorm(HeadScorer):
    """head_selection: "per_head" (kvpress) or "shared"."""

    name = "knorm"
    uses_guide = False
    question_aware = False

    def score(self, view: LayerView) -> torch.Tensor:
        return -torch.linalg.vector_norm(view.chunk_keys, dim=-1, dtype=torch.promote_types(view.key.dtype, torch.float32))
