"""ReTaKe: DPSelect (low-level temporal redundancy) + PivotKV (high-level knowledge redundancy).

Wang et al., "ReTaKe: Reducing Temporal and Knowledge Redundancy for Long Video
Understanding", arXiv 2412.20504.

DPSelect, on the visual tokens of the whole video ``v[t, p]`` (grid step t, token position p
in the frame grid): ``d[t, p] = 1 - cos(v[t, p], v[t-1, p])``, ``d[0, p] = 1``; t is a *peak*
of p if ``d[t, p]`` is the maximum of ``d[t-1..t+1, p]`` (first index wins ties). Peaks mark
pivot tokens. With keyframe ratio rho < 1, each position keeps its top ``ceil(rho * T)`` steps
by d, peaks first; the others are never fed to the model (kept tokens keep their positions).

PivotKV, per chunk and layer: the chunk's own queries (no guide) attend over the chunk's keys,
both un-rotated (positions removed), no causal mask; ``s_j = (1/H) sum_h sum_i A[h, i, j]``
(mean 1 over j); pivots get ``s_j += pivot_bonus``; every layer keeps the top ``round(r * n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..rope import unapply_rope
from .allocation import adjacent_distances
from .base import ChunkSpan, LayerView, VideoPlan, budget_tokens, topk_sorted
from .scorer import Scorer


def token_distances(tokens: torch.Tensor) -> torch.Tensor:
    """``[T, P, D]`` visual tokens -> ``d [T, P]``, ``d[0] = 1``."""
    d = torch.ones(tokens.shape[:2])
    if tokens.shape[0] > 1:
        d[1:] = adjacent_distances(tokens)
    return d


def peaks(d: torch.Tensor) -> torch.Tensor:
    """Window-3 temporal maxima of ``d [T, P]`` (first index wins ties): bool ``[T, P]``."""
    ninf = torch.full_like(d[:1], -math.inf)
    prev = torch.cat([ninf, d[:-1]])
    nxt = torch.cat([d[1:], ninf])
    return (d > prev) & (d >= nxt)


def keyframe_mask(d: torch.Tensor, peak: torch.Tensor, rho: float) -> torch.Tensor:
    """Per position keep the top ``ceil(rho * T)`` steps by d, peaks first: bool ``[T, P]``.

    The order is lexicographic, (peak, d) descending, the earlier step first among equals: two
    stable sorts, so no score is shifted in floating point (adding an offset to d, as a
    "peaks first" score would, rounds near-equal distances of a near-static video together)."""
    T = d.shape[0]
    if rho >= 1:
        return torch.ones_like(peak)
    k = max(1, math.ceil(rho * T))
    by_d = torch.sort(d, dim=0, descending=True, stable=True).indices
    by_peak = torch.sort(peak.gather(0, by_d).to(torch.uint8), dim=0, descending=True, stable=True).indices
    idx = by_d.gather(0, by_peak)[:k]
    return torch.zeros_like(peak).scatter_(0, idx, True)


@dataclass
class ReTaKe(Scorer):
    """keyframe_ratio: rho in (0, 1] (1.0 drops nothing, as the authors run it).
    pivot_bonus: added to the PivotKV score of DPSelect pivot tokens (the paper adds the mask).
    query_block: chunk queries per block when accumulating the chunk self-attention."""

    name = "retake"
    uses_guide = False
    question_aware = False
    keyframe_ratio: float = 1.0
    pivot_bonus: float = 1.0
    query_block: int = 128

    def __post_init__(self):
        if not 0 < self.keyframe_ratio <= 1:
            raise ValueError(f"keyframe_ratio must be in (0, 1], got {self.keyframe_ratio}")
        if self.pivot_bonus < 0:
            raise ValueError(f"pivot_bonus must be >= 0, got {self.pivot_bonus}")
        if self.query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {self.query_block}")

    def begin(self, plan: VideoPlan) -> None:
        idx = plan.grid_index()  # [T, P] span offsets of each step's grid tokens
        flat = idx.reshape(-1)
        d = plan.token_distances()  # = token_distances(features[idx]), a block of steps at a time
        self.pivot = peaks(d)  # [T, P]
        pivot = torch.zeros(plan.num_video_tokens, dtype=torch.bool)
        pivot[flat] = self.pivot.reshape(-1).cpu()
        keep = torch.ones(plan.num_video_tokens, dtype=torch.bool)  # tokens outside the grid (text) are fed
        if self.keyframe_ratio < 1:
            keep[flat] = keyframe_mask(d, self.pivot, self.keyframe_ratio).reshape(-1).cpu()
            plan.input_keep = keep
        self.pivot_tokens, self.fed_tokens = pivot, keep
        # the video budget r * N_v over the tokens actually fed
        self.ratio = min(1.0, plan.keep_ratio * plan.num_video_tokens / max(1, int(keep.sum())))
        super().begin(plan)

    def compresses(self, plan: VideoPlan) -> bool:
        return self.ratio < 1

    def score(self, view: LayerView) -> torch.Tensor:
        n = view.num_chunk
        cos, sin = view.rope()
        q = unapply_rope(view.chunk_queries.float(), cos[:n].float(), sin[:n].float())
        k = unapply_rope(view.chunk_keys.float(), cos[:n].float(), sin[:n].float())
        return view.received_attention(q, k, block=self.query_block).mean(0)

    def keeps(self, chunk: ChunkSpan):
        fed = self.fed_tokens[chunk.token_start : chunk.token_end]
        bonus = self.pivot_bonus * self.pivot_tokens[chunk.token_start : chunk.token_end][fed].float()
        k = budget_tokens(self.ratio, int(fed.sum()))
        return [topk_sorted(self.scores.pop(l) + bonus, k) for l in range(self.plan.num_layers)]
