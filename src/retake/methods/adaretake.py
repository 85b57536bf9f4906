"""AdaReTaKe: temporal- and layer-adaptive budgets during chunked prefill.

Wang et al., "AdaReTaKe: Adaptive Redundancy Reduction to Perceive Longer for Video-language
Understanding", arXiv 2503.12559 (§4.3 temporal, §4.4 layer allocation).

Per chunk c and layer l the significance of chunk token j is
``s[l, j] = (1/H) sum_h sum_{i in guide} softmax_j(q_i . k_j / sqrt(d))``, the softmax over
the chunk's keys only. The chunk's ratio r_c comes from the temporal allocation (or is the
global r), its per-layer counts from the layer allocation (or are even), and each layer
keeps its top-k_l tokens by s[l, :], in original order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .allocation import layer_counts_adaptive, layer_counts_even, temporal_ratios
from .base import ChunkSpan, LayerView, VideoPlan, topk_sorted
from .scorer import Scorer

LAYER_ALLOCATIONS = ("adaptive", "even")


@dataclass
class AdaReTaKe(Scorer):
    """temporal_allocation: chunk ratios from frame redundancy (False: every chunk gets r).
    layer_allocation: "adaptive" (global top-B over layers) or "even".
    r_min: lower bound of a chunk's ratio. w_min: weight every layer gets (>= 0)."""

    name = "adaretake"
    temporal_allocation: bool = True
    layer_allocation: str = "adaptive"
    r_min: float = 1e-3
    w_min: float = 1.0

    def __post_init__(self):
        if self.layer_allocation not in LAYER_ALLOCATIONS:
            raise ValueError(f"layer_allocation must be one of {', '.join(LAYER_ALLOCATIONS)}, got {self.layer_allocation!r}")
        if not 0 < self.r_min <= 1:
            raise ValueError(f"r_min must be in (0, 1], got {self.r_min}")
        if self.w_min < 0:
            raise ValueError(f"w_min must be >= 0, got {self.w_min}")

    def compresses(self, plan: VideoPlan) -> bool:
        if self.temporal_allocation:
            self.chunk_ratios = temporal_ratios(plan, self.r_min)
        else:
            self.chunk_ratios = torch.full((len(plan.chunks),), plan.keep_ratio, dtype=torch.float64)
        return bool((self.chunk_ratios < 1).any())

    def score(self, view: LayerView) -> torch.Tensor:
        # [H, g, n] -> sum over guide queries, mean over heads -> [n]
        return view.guide_attention().sum(1).mean(0)

    def counts(self, scores: torch.Tensor, ratio: float) -> torch.Tensor:
        if self.layer_allocation == "even":
            return layer_counts_even(scores.shape[0], ratio, scores.shape[1])
        return layer_counts_adaptive(scores, ratio, self.w_min)

    def keeps(self, chunk: ChunkSpan):
        ratio = float(self.chunk_ratios[chunk.index])
        L = self.plan.num_layers
        if ratio >= 1:
            self.scores.clear()
            return [None] * L
        scores = torch.stack([self.scores.pop(l) for l in range(L)])  # [L, n]
        k = self.counts(scores, ratio)
        return [topk_sorted(scores[l], int(k[l])) for l in range(L)]
