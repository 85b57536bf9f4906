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
- averaged over the query heads of each KV head (kvpress; the SnapKV authors' GQA issue 22),
  ``[H_kv, n]``;
- every KV head of every layer keeps its own top ``round(r * n)`` tokens (``head_selection=
  "per_head"``, as the authors' code and kvpress), or the layer keeps one set, the top of the
  mean over heads (``"shared"``).

:func:`window_attention` (also FastV's and PyramidDrop's score, with w = 1) and
:func:`snapkv_scores` (also PyramidKV's) are shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import LayerView
from .scorer import HeadScorer, group_mean

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
    x = scores.reshape(-1, 1, scores.shape[-1]).to(torch.promote_types(scores.dtype, torch.float32))
    pool = F.avg_pool1d if pooling == "avgpool" else F.max_pool1d
    return pool(x, kernel_size, stride=1, padding=kernel_size // 2).reshape(scores.shape)


def snapkv_scores(view: LayerView, window: int, kernel_size: int, pooling: str) -> torch.Tensor:
    """SnapKV's score of the chunk's tokens in this layer, pooled per query head then averaged
    over each KV head's query heads: ``[H_kv, n]``."""
    return group_mean(pool_scores(window_attention(view, window), kernel_size, pooling), view.key.shape[0])


@dataclass
class SnapKV(HeadScorer):
    """window: observation window, the guide's last ``window`` tokens (>= 1; SnapKV: 32).
    kernel_size: odd pooling width (>= 1; SnapKV: 5). pooling: "avgpool" (SnapKV) or "maxpool".
    head_selection: "per_head" (SnapKV) or "shared"."""

    name = "snapkv"
    window: int = 32
    kernel_size: int = 5
    pooling: str = "avgpool"

    def __post_init__(self):
        super().__post_init__()
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 1 (keeps the token count), got {self.kernel_size}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")

    def score(self, view: LayerView) -> torch.Tensor:
        return snapkv_scores(view, self.window, self.kernel_size, self.pooling)
