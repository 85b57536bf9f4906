"""SnapKV: the end of the prompt votes for the KV entries to keep.

Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation", NeurIPS 2024,
arXiv 2404.14469 (https://arxiv.org/abs/2404.14469).

Per chunk and layer (n chunk tokens, g guide tokens, ``K`` = the layer's cache length
including the input, ``w = min(window, g)``):

- the observation window is the guide's last w tokens; their real attention (softmax over the
  whole cache plus the causal input, post-RoPE q/k) to the chunk's tokens is summed over the
  window: ``a[h, j] = sum_{i in window} A[h, i, cache + j]``, ``[H, n]``;
- pooled along the token axis, per head: 1-D ``avgpool`` (or ``maxpool``) of ``kernel_size``,
  stride 1, ``kernel_size // 2`` zero padding (avgpool divides by the kernel size at the edges
  too, as the authors' ``F.avg_pool1d``);
- averaged over the query heads (one kept set per layer, shared by its KV heads), ``[n]``;
- every layer keeps its top ``round(r * n)`` tokens.

:func:`window_attention` (also FastV's and PyramidDrop's score, with w = 1) and
:func:`snapkv_scores` (also PyramidKV's) are shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import ChunkSpan, LayerView, Method, VideoPlan, budget_tokens, topk_sorted

POOLINGS = ("avgpool", "maxpool")


def window_attention(view: LayerView, window: int) -> torch.Tensor:
    """Attention each chunk token receives from the input's last ``window`` queries (the end of
    the guide; fewer if the guide is shorter), summed over them, per head: ``[H, n]`` fp32.
    The softmax runs over the layer's whole cache plus the causal part of the input, as in the
    model's own attention; only ``[H, w, K]`` is held."""
    if view.num_guide == 0:
        raise RuntimeError("this method needs the guide (uses_guide=True) but none was given")
    w = min(window, view.num_guide)
    c, n = view.cache_len, view.num_chunk
    return view.received_attention(view.query[:, -w:], view.key, causal=True, block=w)[:, c : c + n]


def pool_scores(scores: torch.Tensor, kernel_size: int, pooling: str) -> torch.Tensor:
    """SnapKV's pooling along the last (token) axis: ``[..., n] -> [..., n]``, stride 1,
    ``kernel_size // 2`` padding (zeros counted by avgpool; ignored by maxpool)."""
    x = scores.reshape(-1, 1, scores.shape[-1]).float()
    pool = F.avg_pool1d if pooling == "avgpool" else F.max_pool1d
    return pool(x, kernel_size, stride=1, padding=kernel_size // 2).reshape(scores.shape)


def snapkv_scores(view: LayerView, window: int, kernel_size: int, pooling: str) -> torch.Tensor:
    """SnapKV's score of the chunk's tokens in this layer, pooled per head then averaged over
    the query heads: ``[n]``."""
    return pool_scores(window_attention(view, window), kernel_size, pooling).mean(0)


@dataclass
class SnapKV(Method):
    """window: observation window, the guide's last ``window`` tokens (>= 1; SnapKV: 32).
    kernel_size: odd pooling width (>= 1; SnapKV: 5). pooling: "avgpool" (SnapKV) or "maxpool"."""

    name = "snapkv"
    window: int = 32
    kernel_size: int = 5
    pooling: str = "avgpool"

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 1 (keeps the token count), got {self.kernel_size}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.scores: dict[int, torch.Tensor] = {}
        # nothing to compress: run exactly as `none` (no guide, no scoring)
        self.uses_guide = self.observes = plan.keep_ratio < 1

    def observe(self, view: LayerView) -> None:
        self.scores[view.layer] = snapkv_scores(view, self.window, self.kernel_size, self.pooling).cpu()

    def layer_counts(self, n: int) -> torch.Tensor:
        """Kept tokens per layer for a chunk of n fed tokens, ``[L]``: the same in every layer."""
        return torch.full((self.plan.num_layers,), budget_tokens(self.plan.keep_ratio, n), dtype=torch.long)

    def select(self, chunk: ChunkSpan):
        L = self.plan.num_layers
        if self.plan.keep_ratio >= 1:
            return [None] * L
        scores = [self.scores.pop(l) for l in range(L)]
        k = self.layer_counts(scores[0].shape[0])
        return [topk_sorted(scores[l], int(k[l])) for l in range(L)]
