"""PyramidKV: SnapKV's score with pyramid-shaped layer budgets.

Cai et al., "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
Funneling", arXiv 2406.02069 (https://arxiv.org/abs/2406.02069).

Per chunk and layer the score is SnapKV's (:func:`retake.methods.snapkv.snapkv_scores`: the
guide's last ``window`` queries' attention to the chunk, pooled, mean over each KV head's
query heads, ``[H_kv, n]``). Every KV head of layer l keeps its own top ``k_l`` tokens (or the
layer one set, ``head_selection="shared"``), ``k_l`` linear from the bottom layer to the top with mean
``T = r * n`` (:func:`retake.methods.allocation.pyramidkv_counts`): top ``T / beta``, bottom
``2T - T / beta``; if the bottom would exceed n, it keeps n and the top ``2T - n``; integers
in ``[1, n]`` summing to ``round(T * L)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .allocation import pyramidkv_counts
from .snapkv import SnapKV


@dataclass
class PyramidKV(SnapKV):
    """window, kernel_size, pooling: as SnapKV (PyramidKV: 32, 5, avgpool).
    beta: bottom / top steepness (>= 1; PyramidKV: 20): the top layer keeps ``T / beta``;
    1 gives SnapKV's flat budgets."""

    name = "pyramidkv"
    beta: float = 20.0

    def __post_init__(self):
        super().__post_init__()
        if not self.beta >= 1:
            raise ValueError(f"beta must be >= 1, got {self.beta}")

    def layer_counts(self, scores, chunk) -> torch.Tensor:
        return pyramidkv_counts(self.plan.num_layers, self.plan.keep_ratio, scores[0].shape[-1], self.beta)
