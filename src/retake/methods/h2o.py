"""H2O: heavy hitters (accumulated attention) plus a recent window.

Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
Models", arXiv 2306.14048 (https://arxiv.org/abs/2306.14048).

Per chunk and layer, the attention each chunk token receives from every query of the input
(chunk and guide), as the model computes it (softmax over the layer's whole cache plus the
causal part of the input): ``s[j] = (1/H) sum_h sum_i A[h, i, cache + j]``. Every layer keeps
``k = round(r * n)`` tokens: the chunk's last ``floor(recent_share * k)`` tokens (the recent
window) and the top-scoring rest (the heavy hitters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import ChunkSpan, LayerView, Method, VideoPlan, budget_tokens, topk_sorted


def with_recent(scores: torch.Tensor, k: int, recent_share: float) -> torch.Tensor:
    """Scores ``[n]`` with the last ``floor(recent_share * k)`` tokens raised to +inf, so that
    the top-k is the recent window plus the heavy hitters."""
    w = min(scores.shape[-1], math.floor(recent_share * k))
    out = scores.clone()
    if w > 0:
        out[..., -w:] = math.inf
    return out


@dataclass
class H2O(Method):
    """recent_share: share of each layer's kept tokens given to the chunk's last tokens, in
    [0, 1] (H2O's default splits the budget half heavy, half recent).
    query_block: input queries per block when accumulating the attention (>= 1)."""

    name = "h2o"
    recent_share: float = 0.5
    query_block: int = 128

    def __post_init__(self):
        if not 0 <= self.recent_share <= 1:
            raise ValueError(f"recent_share must be in [0, 1], got {self.recent_share}")
        if self.query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {self.query_block}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.scores: dict[int, torch.Tensor] = {}
        # nothing to compress: run exactly as `none` (no guide, no scoring)
        self.uses_guide = self.observes = plan.keep_ratio < 1

    def observe(self, view: LayerView) -> None:
        c, n = view.cache_len, view.num_chunk
        received = view.received_attention(view.query, view.key, causal=True, block=self.query_block)  # [H, k]
        self.scores[view.layer] = received[:, c : c + n].mean(0).cpu()

    def select(self, chunk: ChunkSpan):
        L = self.plan.num_layers
        if self.plan.keep_ratio >= 1:
            return [None] * L
        out = []
        for l in range(L):
            s = self.scores.pop(l)
            k = budget_tokens(self.plan.keep_ratio, s.shape[0])
            out.append(topk_sorted(with_recent(s, k, self.recent_share), k))
        return out
