"""FastV: prune the visual tokens the last prompt token ignores, after layer K.

Chen et al., "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration
for Large Vision-Language Models", ECCV 2024, arXiv 2403.06764
(https://arxiv.org/abs/2403.06764).

Per chunk (n chunk tokens, ``K`` = the layer's cache length including the input): in layer
``k - 1`` (0-based; the K-th layer, whose attention map FastV ranks with before pruning the
input of layer K) the guide's last token's real attention (softmax over the whole cache plus
the input, post-RoPE q/k) to the chunk, averaged over heads: ``s_j = (1/H) sum_h A[h, -1,
cache + j]``, ``[n]``. The top ``round(r * n)`` tokens are kept in **every** layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import ChunkSpan, LayerView, VideoPlan, budget_tokens, topk_sorted
from .scorer import Scorer
from .snapkv import window_attention


@dataclass
class FastV(Scorer):
    """k: FastV's K (>= 1, at most the model's layer count; FastV: 2): the score is the
    attention map of the K-th layer (0-based index k - 1)."""

    name = "fastv"
    k: int = 2

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1 (FastV's K: the layer whose attention ranks the tokens), got {self.k}")

    def begin(self, plan: VideoPlan) -> None:
        if self.k > plan.num_layers:
            raise ValueError(f"k must be in [1, {plan.num_layers}] for a {plan.num_layers}-layer model, got {self.k}")
        super().begin(plan)

    def score(self, view: LayerView) -> torch.Tensor | None:
        if view.layer != self.k - 1:
            return None
        return window_attention(view, 1).mean(0)  # [H, n] -> [n]

    def keeps(self, chunk: ChunkSpan):
        score = self.scores.pop(self.k - 1)
        keep = topk_sorted(score, budget_tokens(self.plan.keep_ratio, score.shape[0]))
        return [keep] * self.plan.num_layers
