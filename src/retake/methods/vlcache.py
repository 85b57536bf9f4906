"""VL-Cache: sparsity-aware layer budgets and modality-aware token scores.

Tu et al., "VL-Cache: Sparsity and Modality-Aware KV Cache Compression for Vision-Language
Model Inference Acceleration", arXiv 2410.23317 (https://arxiv.org/abs/2410.23317).

Per chunk and layer l, from the guide's real attention ``A [H, g, k]`` (guide queries over the
layer's whole cache, the chunk and the causal part of the guide; the paper's post-vision
attention):
- sparsity ``gamma_l`` = fraction of the visible entries of A below ``threshold`` (1 %) of
  their row maximum, averaged over heads;
- layer ratios ``r_l = clip(s * (1 - gamma_l), min_layer_ratio, 1)``, the scale s chosen so
  that ``mean_l r_l = r`` (the chunk keeps ``r * n * L`` tokens over its layers); layer l keeps
  ``k_l = clamp(round(r_l * n), 1, n)`` tokens;
- token score ``s[l, j] = (1/H) sum_h sum_{i in guide} A[h, i, cache + j]`` (column sums over
  the chunk's keys); layer l keeps its top-``k_l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .allocation import input_attention_blocks, proportional_ratios, round_half_up
from .base import ChunkSpan, LayerView, VideoPlan
from .scorer import Scorer


@dataclass
class VLCache(Scorer):
    """threshold: an attention entry is sparse below ``threshold`` x its row maximum, in (0, 1).
    min_layer_ratio: lower clip of a layer's keep ratio, in (0, 1].
    query_block: guide queries per block when computing the guide's attention (>= 1)."""

    name = "vlcache"
    threshold: float = 0.01
    min_layer_ratio: float = 0.01
    query_block: int = 128

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0 < self.min_layer_ratio <= 1:
            raise ValueError(f"min_layer_ratio must be in (0, 1], got {self.min_layer_ratio}")
        if self.query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {self.query_block}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.sparsity: dict[int, float] = {}

    def score(self, view: LayerView) -> torch.Tensor:
        n, g, c = view.num_chunk, view.num_guide, view.cache_len
        if g == 0:
            raise RuntimeError("vlcache needs the guide (uses_guide=True) but none was given")
        nq, nk = n + g, view.key.shape[1]
        dense = torch.zeros(view.query.shape[0], device=view.query.device)
        score = torch.zeros(view.query.shape[0], n, device=view.query.device)
        for _, att in input_attention_blocks(view, n, nq, self.query_block):  # att [H, b, k]
            # masked entries are exactly 0, below any positive threshold: only visible ones count
            dense += (att >= self.threshold * att.amax(-1, keepdim=True)).sum((1, 2))
            score += att[:, :, c : c + n].sum(1)
        visible = sum(nk - nq + i + 1 for i in range(n, nq))  # entries guide query i may see
        self.sparsity[view.layer] = float(1 - dense.mean() / visible)
        return score.mean(0)

    def layer_ratios(self, sparsity: torch.Tensor) -> torch.Tensor:
        """``[L]`` sparsities -> ``[L]`` keep ratios ∝ (1 - sparsity), clipped, mean r."""
        return proportional_ratios(1 - sparsity, self.plan.keep_ratio, self.min_layer_ratio, 1.0)

    def layer_counts(self, scores, chunk: ChunkSpan) -> torch.Tensor:
        L = len(scores)
        self.last_sparsity = torch.tensor([self.sparsity.pop(l) for l in range(L)], dtype=torch.float64)
        self.last_ratios = self.layer_ratios(self.last_sparsity)
        n = scores[0].shape[0]
        return round_half_up(self.last_ratios * n).clamp(1, n)
