"""VidCom2: Video Compression Commander. A frame's uniqueness sets its budget, then each frame
keeps its most distinct tokens.

Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large
Language Models", EMNLP 2025, arXiv 2505.14454 (https://arxiv.org/abs/2505.14454); in vLLM as
``--video-retention-ratio``.

Before prefill, on the video's LLM-space grid tokens (``[T, P, D]``: grid steps, tokens per
step), as the authors' ``vidcom2_compression``:

- keep the half of the channels with the lowest variance over all tokens
  (``select_low_var_channels``) and L2-normalise each token on them: ``x [T, P, D']``;
- similarity to the video centre ``c = mean_{t, p} x`` and to the frame centre
  ``c_t = mean_p x[t]``, multi-scale Gaussian: ``g(x, c) = sum_{a in 2^-3..2^1}
  exp(-||x - c||^2 / (2a))``; ``v[t, p] = g(x[t, p], c)``, ``f[t, p] = g(x[t, p], c_t)``;
- frame budgets: ``u_t = -mean_p v[t, p]`` (a frame far from the video is unique),
  ``q = softmax(u / 0.01)``, ``s_t = min(1, r (1 + q_t - mean(q)))``, ``k_t = max(1,
  round(s_t P))`` (the retention ratio is the budget's r over the grid tokens);
- each frame keeps its ``k_t`` tokens with the lowest ``v + f`` (the least like the video and
  their frame); fed at their own positions, nothing compressed in the language model.

A frame's budget above P is clipped (``s_t <= 1``) as the authors do, so the total can fall
short of ``r * P * T``; it never exceeds it by more than the rounding of each frame. Where the
budget holds less than one token per frame, the authors' per-frame rounding would keep nothing
(every ``s_t P`` rounds to 0) and their minimum of one per frame would exceed the budget: the
frames' shares ``s_t P`` are then rounded by largest remainder to the budget
(``allocation.capped_counts``), so the most unique frames keep a token and the rest none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .allocation import capped_counts, fit_grid
from .base import ChunkSpan, Method, VideoPlan

ALPHAS = tuple(2.0**k for k in range(-3, 2))


def low_variance_channels(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """``x [N, D]`` restricted to the ``int(D * ratio)`` channels of lowest variance over N."""
    var = x.var(dim=0, unbiased=False)
    return x[:, torch.topk(var, k=max(1, int(x.shape[-1] * ratio)), largest=False).indices]


def gaussian_similarity(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """``sum_a exp(-||x - centre||^2 / (2a))`` over the last axis, a in 2^-3 .. 2^1."""
    dist = ((x - centre) ** 2).sum(-1)
    return sum(torch.exp(-dist / (2 * a)) for a in ALPHAS)


def vidcom2_scores(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens [T, P, D]`` -> (video similarity ``v [T, P]``, frame similarity ``f [T, P]``)."""
    T, P, D = tokens.shape
    x = low_variance_channels(tokens.reshape(T * P, D).float()).reshape(T, P, -1)
    return similarities(F.normalize(x, dim=-1))


def similarities(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised tokens ``x [T, P, D']`` -> (``v``, ``f``) ``[T, P]``."""
    return gaussian_similarity(x, x.mean(dim=(0, 1), keepdim=True)), gaussian_similarity(x, x.mean(dim=1, keepdim=True))


def selected_channels(features: torch.Tensor, idx: torch.Tensor, ratio: float = 0.5, block: int = 64) -> torch.Tensor:
    """The ``int(D * ratio)`` lowest-variance channels of the grid tokens ``features[idx]``
    (``idx [T, P]``), the variance accumulated ``block`` steps at a time (no fp32 copy of the
    whole video)."""
    D = features.shape[-1]
    s1 = torch.zeros(D, dtype=torch.float64, device=features.device)
    s2 = torch.zeros_like(s1)
    for a in range(0, idx.shape[0], block):
        x = features[idx[a : a + block].reshape(-1)].double()
        s1 += x.sum(0)
        s2 += (x * x).sum(0)
    n = idx.numel()
    var = s2 / n - (s1 / n) ** 2
    return torch.topk(var, k=max(1, int(D * ratio)), largest=False).indices


def frame_budgets(v: torch.Tensor, ratio: float, temperature: float = 0.01, min_tokens: int = 1,
                  rounded: bool = True) -> torch.Tensor:
    """``k_t``: ``max(min_tokens, round(min(1, ratio (1 + q_t - mean q)) P))``,
    ``q = softmax(-mean_p v / temperature)`` (``rounded=False``: the unrounded ``s_t P``)."""
    u = -v.mean(dim=-1)
    q = torch.softmax((u - u.max()) / temperature, dim=0)
    scale = (ratio * (1 + q - q.mean())).clamp(max=1.0)
    if not rounded:
        return scale * v.shape[1]
    return torch.floor(scale * v.shape[1] + 0.5).long().clamp(min=min_tokens)


@dataclass
class VidCom2(Method):
    """temperature: of the frame-uniqueness softmax (the authors' 0.01)."""

    name = "vidcom2"
    uses_guide = False
    question_aware = False
    observes = False
    temperature: float = 0.01

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        if plan.keep_ratio >= 1:
            return
        idx = plan.grid_index().to(plan.features.device)  # [T, P]
        ch = selected_channels(plan.features, idx)
        x = F.normalize(plan.features[:, ch][idx].float(), dim=-1)  # [T, P, D/2]
        v, f = (t.cpu() for t in similarities(x))
        self.scores = v + f
        self.v = v
        plan.input_keep, self.grid_tokens = fit_grid(plan, lambda G: self.keep(G / idx.numel()))
        self.budgets = frame_budgets(v, self.grid_tokens / idx.numel(), self.temperature)

    def keep(self, ratio: float) -> torch.Tensor:
        """The kept grid tokens ``[T, P]`` at retention ratio ``ratio``."""
        T, P = self.scores.shape
        keep = torch.zeros(T, P, dtype=torch.bool)
        if ratio * P >= 1:  # the authors' rule: round per frame, at least one token each
            counts = frame_budgets(self.v, ratio, self.temperature)
        else:  # under one token per frame: the frames' shares, rounded so the budget is spent
            share = frame_budgets(self.v, ratio, self.temperature, min_tokens=0, rounded=False)
            counts = capped_counts(share, torch.full((T,), P), int(round(ratio * P * T)))
        for t, k in enumerate(counts.tolist()):
            keep[t, torch.topk(self.scores[t], k=min(k, P), largest=False).indices] = True
        return keep

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
