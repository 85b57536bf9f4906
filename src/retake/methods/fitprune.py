"""FitPrune: per-layer counts fitted to the budget from how much attention mass they keep.

Ye et al., "Fit and Prune: Fast and Training-free Visual Token Pruning for Multi-modal Large
Language Models", arXiv 2409.10197 (https://arxiv.org/abs/2409.10197).

Per chunk and layer l, from the layer's real attention ``A [H, n + g, k]`` (the input's queries
over the layer's whole cache plus the causal part of the input), maximum over heads:
- cross mass ``x[l, j] = sum_{i in guide} max_h A[h, i, cache + j]`` (guide -> chunk);
- self mass ``y[l, j] = sum_{i in chunk} max_h A[h, i, cache + j]`` (chunk -> chunk, causal);
- for a tolerance alpha, ``K_x(alpha)`` = the fewest chunk tokens, by descending x, whose x-mass
  is >= (1 - alpha) of the layer's total, likewise ``K_y(alpha)``; the layer keeps
  ``k_l(alpha) = |K_x u K_y|`` tokens (FitPrune prunes the tokens both criteria may drop);
- alpha by bisection: the smallest alpha with ``sum_l k_l(alpha) <= round(r * n * L)``
  (over the finitely many alphas where a count changes, so the budget is met exactly);
- layer l keeps its top-``k_l`` tokens by ``x * y`` (FitPrune's inference score).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .allocation import input_attention_blocks, round_half_up
from .base import ChunkSpan, LayerView, VideoPlan, topk_sorted
from .scorer import Scorer


def mass_ranks(mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mass ``[L, n]`` -> (rank of each token by descending mass ``[L, n]``, retained fraction
    of the top-(k+1) tokens ``[L, n]``, the last exactly 1)."""
    order = mass.double().argsort(dim=-1, descending=True, stable=True)
    frac = mass.double().gather(-1, order).cumsum(-1)
    frac = frac / frac[:, -1:].clamp_min(torch.finfo(torch.float64).tiny)
    frac[:, -1] = 1.0
    return order.argsort(-1), frac


def retained(ranks: torch.Tensor, frac: torch.Tensor, alpha: float) -> torch.Tensor:
    """Bool ``[L, n]``: the fewest top tokens whose mass is >= (1 - alpha) of the total."""
    t = torch.full((frac.shape[0], 1), 1 - alpha, dtype=torch.float64)
    k = torch.where(t > 0, torch.searchsorted(frac.contiguous(), t) + 1, 0)  # first k with frac[k-1] >= t
    return ranks < k


def fit_counts(cross: torch.Tensor, self_mass: torch.Tensor, total: int) -> tuple[torch.Tensor, float]:
    """Counts ``[L]`` and alpha: ``k_l(alpha) = |K_cross u K_self|`` with the smallest alpha such
    that ``sum_l k_l <= total`` (the fewest kept tokens per layer if none fits: one each).

    The counts only change where ``1 - alpha`` crosses a retained fraction, so alpha is found by
    bisection over those finitely many change points (exact, not to a tolerance); the alpha
    returned is the middle of its interval of equal counts, so it is robust to rounding."""
    rc, fc = mass_ranks(cross)
    rs, fs = mass_ranks(self_mass)
    events = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - fc).flatten(), (1 - fs).flatten()])
    events = torch.unique(events.clamp(0, 1))  # sorted; counts are constant on [e_i, e_{i+1})
    bounds = torch.cat([events, torch.ones(1, dtype=torch.float64)])
    mids = ((bounds[:-1] + bounds[1:]) / 2).tolist()

    def counts(alpha: float) -> torch.Tensor:
        return (retained(rc, fc, alpha) | retained(rs, fs, alpha)).sum(-1)

    lo, hi = -1, len(mids) - 1  # invariant: interval hi fits (or is the last), lo does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if int(counts(mids[mid]).sum()) <= total:
            hi = mid
        else:
            lo = mid
    return counts(mids[hi]).clamp_min(1), mids[hi]


@dataclass
class FitPrune(Scorer):
    """query_block: input queries per block when computing the attention (>= 1)."""

    name = "fitprune"
    query_block: int = 128

    def __post_init__(self):
        if self.query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {self.query_block}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.self_mass: dict[int, torch.Tensor] = {}

    def head_max_mass(self, view: LayerView, start: int, stop: int) -> torch.Tensor:
        """``sum_{i in [start, stop)} max_h A[h, i, chunk]``: ``[n]``."""
        c, n = view.cache_len, view.num_chunk
        out = torch.zeros(n, device=view.query.device)
        for _, att in input_attention_blocks(view, start, stop, self.query_block):
            out += att[:, :, c : c + n].amax(0).sum(0)
        return out

    def score(self, view: LayerView) -> torch.Tensor:
        """The cross mass (guide rows); the self mass (chunk rows) is kept beside it."""
        n, g = view.num_chunk, view.num_guide
        if g == 0:
            raise RuntimeError("fitprune needs the guide (uses_guide=True) but none was given")
        self.self_mass[view.layer] = self.head_max_mass(view, 0, n).cpu()
        return self.head_max_mass(view, n, n + g)

    def keeps(self, chunk: ChunkSpan):
        L = self.plan.num_layers
        cross = torch.stack([self.scores.pop(l) for l in range(L)])  # [L, n]
        self_mass = torch.stack([self.self_mass.pop(l) for l in range(L)])
        n = cross.shape[1]
        total = int(round_half_up(self.plan.keep_ratio * n * L))
        k, self.last_alpha = fit_counts(cross, self_mass, total)
        score = cross * self_mass
        return [topk_sorted(score[l], int(k[l])) for l in range(L)]
