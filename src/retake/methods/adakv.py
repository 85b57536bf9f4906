"""Ada-KV (on SnapKV scores): head-wise adaptive budgets.

Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for
Efficient LLM Inference", arXiv 2407.11550 (https://arxiv.org/abs/2407.11550), on SnapKV
(Li et al., arXiv 2404.14469); the authors' ``AdaptiveSnapKVCluster`` (FFY0/AdaKV,
adaptive_snapkv/monkeypatch/snapkv_utils.py).

Per chunk and layer:
- SnapKV score per KV head: the last ``window`` guide queries' real attention (softmax over
  the layer's whole cache plus the causal part of the input) to the chunk's tokens, averaged
  over those queries and over the query heads of the KV group (the authors' ``gqa_func=
  "mean"``), then 1-D pooled along the chunk (``kernel_size``, stride 1, same length):
  ``s [H_kv, n]``;
- the layer's budget is ``B = round(r * n)`` entries per head on average, ``H_kv * B`` in all;
- ``safeguard="authors"``: the flattened top-``H_kv * B`` over (head, token) gives head h
  ``c_h`` entries; head h keeps its own top ``B_h = round((1 - floor_alpha) * c_h +
  floor(floor_alpha * B))`` tokens (``torch.round``: halves to even, as the authors');
  ``safeguard="kvpress"``: every head keeps its top ``floor(floor_alpha * B)`` (at least 1 when
  floor_alpha > 0), the rest of the ``H_kv * B`` entries go to the best scores over all heads
  (kvpress's AdaKVPress). Both rules agree at floor_alpha = 0;
- ``head_selection="shared"`` (one set per layer): each head votes for its top-``B_h`` tokens;
  the layer keeps the ``B`` tokens with the most votes, ties broken by the highest score over
  heads (``key = 2 * votes + max_h s``; s <= 1, so votes always rank first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerKeep, LayerView, topk_sorted
from .scorer import HeadScorer, group_mean
from .snapkv import POOLINGS, pool_scores, window_attention

SAFEGUARDS = ("authors", "kvpress")


def head_budgets(scores: torch.Tensor, budget: int, floor_alpha: float) -> torch.Tensor:
    """The authors' allocation: ``[H_kv, n]`` scores, per-head budget ``B`` -> per-head counts
    ``[H_kv]``: ``c_h`` = entries of head h in the flattened top-``H_kv * B``;
    ``B_h = round((1 - a) c_h + floor(a B))`` (halves to even), at most n."""
    h, n = scores.shape
    top = scores.reshape(-1).topk(min(h * budget, h * n)).indices // n
    c = torch.bincount(top, minlength=h).double()
    return torch.round((1 - floor_alpha) * c + int(floor_alpha * budget)).long().clamp(0, n)


def kvpress_keep(scores: torch.Tensor, budget: int, floor_alpha: float) -> torch.Tensor:
    """kvpress's AdaKVPress rule: bool ``[H_kv, n]`` of the kept entries: each head's top
    ``n_safe = floor(a B)`` (at least 1 if a > 0 and B > 0), then the best of the rest over all
    heads up to ``H_kv * B`` in all."""
    h, n = scores.shape
    n_safe = int(budget * floor_alpha)
    if floor_alpha > 0 and budget > 0:
        n_safe = max(1, n_safe)
    s = scores.clone().double()
    if n_safe:
        s.scatter_(-1, s.topk(min(n_safe, n), dim=-1).indices, float("inf"))
    keep = torch.zeros(h * n, dtype=torch.bool)
    keep[s.reshape(-1).topk(min(h * budget, h * n)).indices] = True
    return keep.view(h, n)


def shared_keep_key(scores: torch.Tensor, budget: int, floor_alpha: float) -> torch.Tensor:
    """One ranking ``[n]`` for all heads: ``2 * votes + max_h scores`` where votes counts the
    heads whose top-``B_h`` holds the token (scores in [0, 1])."""
    votes = torch.zeros(scores.shape[1], dtype=scores.dtype)
    for s, b in zip(scores, head_budgets(scores, budget, floor_alpha).tolist()):
        votes[s.topk(b).indices] += 1
    return 2 * votes + scores.amax(0)


@dataclass
class AdaKV(HeadScorer):
    """window: observation window, the last ``window`` guide tokens (>= 1; SnapKV/Ada-KV: 32).
    kernel_size: odd pooling width (>= 1). pooling: "avgpool" or "maxpool".
    floor_alpha: Ada-KV's safeguard share of every head's uniform budget, in [0, 1].
    safeguard: "authors" (FFY0/AdaKV) or "kvpress" (AdaKVPress). head_selection: "per_head"
    (Ada-KV) or "shared"."""

    name = "adakv"
    window: int = 32
    kernel_size: int = 5
    pooling: str = "avgpool"
    floor_alpha: float = 0.2
    safeguard: str = "authors"

    def __post_init__(self):
        super().__post_init__()
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 1, got {self.kernel_size}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not 0 <= self.floor_alpha <= 1:
            raise ValueError(f"floor_alpha must be in [0, 1], got {self.floor_alpha}")
        if self.safeguard not in SAFEGUARDS:
            raise ValueError(f"safeguard must be one of {', '.join(SAFEGUARDS)}, got {self.safeguard!r}")

    def score(self, view: LayerView) -> torch.Tensor:
        w = min(self.window, view.num_guide)
        mean = group_mean(window_attention(view, self.window) / w, view.key.shape[0])  # [H_kv, n]
        return pool_scores(mean, self.kernel_size, self.pooling)

    def keep(self, layer: int, score: torch.Tensor, k: int):
        if self.head_selection == "shared":
            return topk_sorted(shared_keep_key(score, k, self.floor_alpha), k)
        if self.safeguard == "kvpress":
            mask = kvpress_keep(score, k, self.floor_alpha)
            return LayerKeep.per_heads([m.nonzero().squeeze(1) for m in mask])
        counts = head_budgets(score, k, self.floor_alpha).tolist()
        return LayerKeep.per_heads([topk_sorted(s, b) for s, b in zip(score, counts)])
