"""Budget allocation shared by methods: over chunks (time) and over layers."""

from __future__ import annotations

import torch

from .base import VideoPlan, budget_tokens


def project_ratios(raw: torch.Tensor, sizes: torch.Tensor, total: float, lo: float, hi: float = 1.0, iters: int = 100) -> torch.Tensor:
    """Euclidean projection of ``raw`` onto ``{r : lo <= r <= hi, sum(r * sizes) = total}``.

    ``r = clip(raw - mu, lo, hi)`` with mu found by bisection (the weighted sum is
    non-increasing in mu). raw, sizes: ``[C]``. If ``total`` is outside what the box allows,
    the nearest feasible end is returned (all ``lo`` or all ``hi``).
    """
    raw = raw.double()
    sizes = sizes.double()
    if total <= lo * float(sizes.sum()):
        return torch.full_like(raw, lo)
    if total >= hi * float(sizes.sum()):
        return torch.full_like(raw, hi)

    def weighted(mu: float) -> float:
        return float((torch.clamp(raw - mu, lo, hi) * sizes).sum())

    a, b = float(raw.min()) - hi, float(raw.max()) - lo  # weighted(a) = hi*sum, weighted(b) = lo*sum
    for _ in range(iters):
        mid = (a + b) / 2
        if weighted(mid) > total:
            a = mid
        else:
            b = mid
    return torch.clamp(raw - (a + b) / 2, lo, hi)


def adjacent_distances(x: torch.Tensor) -> torch.Tensor:
    """``1 - cos(x[t], x[t-1])`` for t >= 1 along dim 0, cosine over the last dim:
    ``[T, ..., D] -> [T - 1, ...]``."""
    return 1 - torch.nn.functional.cosine_similarity(x[1:].float(), x[:-1].float(), dim=-1)


def frame_distances(step_features: torch.Tensor) -> torch.Tensor:
    """``d_t = 1 - cos(f_t, f_{t-1})`` for t >= 1 and ``d_0 = d_1``. ``[S, D] -> [S]``."""
    if step_features.shape[0] == 1:
        return torch.ones(1)
    d = adjacent_distances(step_features)
    return torch.cat([d[:1], d]).clamp_min(0)


def temporal_ratios(plan: VideoPlan, r_min: float) -> torch.Tensor:
    """AdaReTaKe §4.3: chunk keep ratios proportional to the chunk's mean adjacent-step
    distance, summing to the global budget, projected onto ``[r_min, 1]``. ``[C]``."""
    chunks = plan.chunks
    r = plan.keep_ratio
    if r >= 1:
        return torch.ones(len(chunks), dtype=torch.float64)
    d = frame_distances(plan.step_features())
    D = torch.stack([d[c.step_start : c.step_end].mean() for c in chunks]).double()
    n = torch.tensor([plan.fed(c) for c in chunks], dtype=torch.float64)
    total = r * float(n.sum())
    if float((D * n).sum()) <= 0:  # a static video: nothing to prefer
        return torch.full((len(chunks),), r, dtype=torch.float64)
    raw = D * total / float((D * n).sum())
    return project_ratios(raw, n, total, r_min, 1.0)


def round_half_up(x: torch.Tensor | float) -> torch.Tensor:
    return torch.floor(torch.as_tensor(x, dtype=torch.float64) + 0.5).long()


def layer_counts_adaptive(scores: torch.Tensor, ratio: float, w_min: float) -> torch.Tensor:
    """AdaReTaKe §4.4: tokens per layer for one chunk. scores ``[L, n]`` -> counts ``[L]``.

    B = round(ratio * n * L); n_l = how many of the global top-B scores fall in layer l;
    w_l = n_l + w_min; r_l = L * ratio * w_l / sum(w); k_l = clamp(round(r_l * n), 1, n).
    """
    L, n = scores.shape
    B = int(round_half_up(ratio * n * L))
    top = scores.reshape(-1).topk(min(B, L * n)).indices
    n_l = torch.bincount(top // n, minlength=L).double()
    w = n_l + w_min
    r_l = L * ratio * w / w.sum()
    return round_half_up(r_l * n).clamp(1, n)


def layer_counts_even(num_layers: int, ratio: float, n: int) -> torch.Tensor:
    return torch.full((num_layers,), budget_tokens(ratio, n), dtype=torch.long)
