"""H2O: heavy hitters (accumulated attention) plus a recent window.

Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
Models", arXiv 2306.14048 (https://arxiv.org/abs/2306.14048); the authors' code
(FMInference/H2O) accumulates each key's attention per head and keeps per head.

Per chunk and layer, the attention each chunk token receives from every query of the input
(chunk and guide), as the model computes it (softmax over the layer's whole cache plus the
causal part of the input), summed over those queries (H2O's accumulated score), per query head,
then averaged over each KV head's query heads: ``s [H_kv, n]``. ``normalize=True`` divides
token j's sum by the number of input queries that see it (``n + g - j``: kvpress's
ObservedAttentionPress). Every KV head keeps ``k = round(r * n)`` tokens: the chunk's last
``floor(recent_share * k)`` tokens (the recent window) and its own top-scoring rest (the heavy
hitters); ``head_selection="shared"`` keeps one set per layer from the mean over heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import LayerView, topk_sorted
from .scorer import HeadScorer, group_mean


def with_recent(scores: torch.Tensor, k: int, recent_share: float) -> torch.Tensor:
    """Scores ``[..., n]`` with the last ``floor(recent_share * k)`` tokens raised to +inf, so
    that the top-k is the recent window plus the heavy hitters."""
    w = min(scores.shape[-1], math.floor(recent_share * k))
    out = scores.clone()
    if w > 0:
        out[..., -w:] = math.inf
    return out


@dataclass
class H2O(HeadScorer):
    """recent_share: share of each layer's kept tokens given to the chunk's last tokens, in
    [0, 1] (H2O's default splits the budget half heavy, half recent).
    normalize: divide a token's accumulated attention by the number of queries that see it
    (kvpress's ObservedAttention; H2O sums).
    query_block: input queries per block when accumulating the attention (>= 1).
    head_selection: "per_head" (H2O) or "shared"."""

    name = "h2o"
    recent_share: float = 0.5
    normalize: bool = False
    query_block: int = 128

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.recent_share <= 1:
            raise ValueError(f"recent_share must be in [0, 1], got {self.recent_share}")
        if self.query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {self.query_block}")

    def score(self, view: LayerView) -> torch.Tensor:
        c, n = view.cache_len, view.num_chunk
        received = view.received_attention(view.query, view.key, causal=True, block=self.query_block)  # [H, K]
        s = received[:, c : c + n]
        if self.normalize:  # input query i (of n + g) sees chunk token j iff i >= j
            s = s / torch.arange(n + view.num_guide, view.num_guide, -1, device=s.device, dtype=s.dtype)
        return group_mean(s, view.key.shape[0])

    def keep(self, layer: int, score: torch.Tensor, k: int):
        if self.head_selection == "shared":
            score = score.mean(0)
        return topk_sorted(with_recent(score, k, self.recent_share), k)
