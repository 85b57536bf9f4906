"""Ada-KV (on SnapKV scores): head-wise adaptive budgets, adapted to one index per layer.

Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for
Efficient LLM Inference", arXiv 2407.11550 (https://arxiv.org/abs/2407.11550), on SnapKV
(Li et al., arXiv 2404.14469).

Per chunk and layer:
- SnapKV score per KV head: the last ``window`` guide queries' real attention (softmax over
  the layer's whole cache plus the causal part of the input) to the chunk's tokens, averaged
  over those queries and over the query heads of the KV group, then 1-D pooled along the
  chunk (``kernel_size``, stride 1, same length): ``s [H_kv, n]``;
- Ada-KV allocation of the layer budget ``B = round(r * n)``: the flattened top-``H_kv * B``
  over (head, token) scores gives each head ``c_h`` entries; with the safeguard
  ``B_h = round((1 - floor_alpha) * c_h + floor(floor_alpha * B))``;
- one index per layer (the cache is not ragged per head): each head votes for its top-``B_h``
  tokens; the layer keeps the ``B`` tokens with the most votes, ties broken by the highest
  score over heads (``key = 2 * votes + max_h s``; s <= 1, so votes always rank first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .allocation import round_half_up
from .base import ChunkSpan, LayerView, Method, VideoPlan, budget_tokens, topk_sorted
from .snapkv import POOLINGS, pool_scores, window_attention

def head_budgets(scores: torch.Tensor, budget: int, floor_alpha: float) -> torch.Tensor:
    """Ada-KV: ``[H_kv, n]`` scores, per-head budget ``B`` -> per-head counts ``[H_kv]``: ``c_h`` =
    entries of head h in the flattened top-``H_kv * B``; ``B_h = round((1 - a) c_h + floor(a B))``."""
    h, n = scores.shape
    top = scores.reshape(-1).topk(min(h * budget, h * n)).indices // n
    c = torch.bincount(top, minlength=h).double()
    return round_half_up((1 - floor_alpha) * c + int(floor_alpha * budget)).clamp(0, n)


def shared_keep_key(scores: torch.Tensor, budget: int, floor_alpha: float) -> torch.Tensor:
    """One ranking ``[n]`` for all heads: ``2 * votes + max_h scores`` where votes counts the
    heads whose top-``B_h`` holds the token (scores in [0, 1])."""
    votes = torch.zeros(scores.shape[1], dtype=scores.dtype)
    for s, b in zip(scores, head_budgets(scores, budget, floor_alpha).tolist()):
        votes[s.topk(b).indices] += 1
    return 2 * votes + scores.amax(0)


@dataclass
class AdaKV(Method):
    """window: observation window, the last ``window`` guide tokens (>= 1; SnapKV/Ada-KV: 32).
    kernel_size: odd pooling width (>= 1). pooling: "avgpool" or "maxpool".
    floor_alpha: Ada-KV's safeguard share of every head's uniform budget, in [0, 1]."""

    name = "adakv"
    window: int = 32
    kernel_size: int = 5
    pooling: str = "avgpool"
    floor_alpha: float = 0.2

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 1, got {self.kernel_size}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not 0 <= self.floor_alpha <= 1:
            raise ValueError(f"floor_alpha must be in [0, 1], got {self.floor_alpha}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.scores: dict[int, torch.Tensor] = {}
        # nothing to compress: run exactly as `none` (no guide, no scoring)
        self.uses_guide = self.observes = plan.keep_ratio < 1

    def observe(self, view: LayerView) -> None:
        n, w = view.num_chunk, min(self.window, view.num_guide)
        H, H_kv = view.query.shape[0], view.key.shape[0]
        acc = window_attention(view, self.window)  # [H, n], summed over the window's queries
        per_kv = (acc / w).reshape(H_kv, H // H_kv, n).mean(1)  # query heads of a KV group are consecutive
        self.scores[view.layer] = pool_scores(per_kv, self.kernel_size, self.pooling).cpu()

    def select(self, chunk: ChunkSpan):
        L = self.plan.num_layers
        if self.plan.keep_ratio >= 1:
            return [None] * L
        out = []
        for l in range(L):
            s = self.scores.pop(l)  # [H_kv, n]
            b = budget_tokens(self.plan.keep_ratio, s.shape[1])
            out.append(topk_sorted(shared_keep_key(s, b, self.floor_alpha), b))
        return out
