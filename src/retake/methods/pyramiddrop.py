"""PyramidDrop: rank and drop visual tokens at the start of each stage, fewer every stage.

Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual
Redundancy Reduction", arXiv 2410.17247 (https://arxiv.org/abs/2410.17247).

The L layers form ``stages`` equal stages starting at ``floor(s * L / stages)`` (4 stages:
0, L/4, L/2, 3L/4). Per chunk (n chunk tokens):

- stage s's score is the guide's last token's real attention (softmax over the whole cache
  plus the input, post-RoPE q/k) to the chunk in the stage's first layer, head mean, ``[n]``;
- stage s keeps ``c_s`` tokens, ``c_s = lam**s * c_0`` with ``c_0`` scaled so that the mean
  over layers is ``r * n`` (:func:`retake.methods.allocation.pyramiddrop_counts`);
- stage s keeps the top ``c_s`` of its score among stage s - 1's tokens (stage 0: among all),
  so the sets are nested; every layer of a stage keeps the stage's set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .allocation import pyramiddrop_counts, stage_starts
from .base import ChunkSpan, LayerView, VideoPlan, topk_sorted
from .scorer import Scorer
from .snapkv import window_attention


@dataclass
class PyramidDrop(Scorer):
    """stages: number of equal layer stages (>= 1, at most the layer count; PyramidDrop: 4).
    lam: each stage keeps ``lam`` of the previous stage's tokens (in (0, 1]; PyramidDrop: 0.5)."""

    name = "pyramiddrop"
    stages: int = 4
    lam: float = 0.5

    def __post_init__(self):
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if not 0 < self.lam <= 1:
            raise ValueError(f"lam must be in (0, 1], got {self.lam}")

    def begin(self, plan: VideoPlan) -> None:
        self.starts = stage_starts(plan.num_layers, self.stages)  # ValueError if stages > L
        super().begin(plan)

    def score(self, view: LayerView) -> torch.Tensor | None:
        if view.layer not in self.starts:
            return None
        return window_attention(view, 1).mean(0)  # [H, n] -> [n]

    def keeps(self, chunk: ChunkSpan):
        L = self.plan.num_layers
        n = self.scores[0].shape[0]
        counts = pyramiddrop_counts(L, self.stages, self.lam, self.plan.keep_ratio, n)
        ends = self.starts[1:] + [L]
        eligible = torch.ones(n, dtype=torch.bool)
        out = []
        for s, (a, b) in enumerate(zip(self.starts, ends)):
            score = self.scores.pop(a).masked_fill(~eligible, float("-inf"))
            keep = topk_sorted(score, int(counts[s]))  # counts are non-increasing: never a -inf
            eligible = torch.zeros(n, dtype=torch.bool)
            eligible[keep] = True
            out += [keep] * (b - a)
        return out
