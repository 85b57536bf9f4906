"""``random``: uniformly random video tokens, the sanity baseline the benchmark studies found
hard to beat (VTC-Bench, ACL 2026; UniPruneBench, arXiv 2511.02650).

Before prefill, each chunk keeps ``k_c`` of its grid tokens drawn uniformly without
replacement, ``k_c`` the budget ``round(r * N_v)`` shared over the chunks by their grid tokens;
fed at their own positions, nothing compressed in the language model. The draw comes from a
generator seeded with ``seed`` (a method parameter, so it is in every cell's ``method_params``):
the same video and settings give the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .allocation import capped_counts, fit_grid
from .base import ChunkSpan, Method, VideoPlan


@dataclass
class RandomTokens(Method):
    """seed: of the draw (the same seed, the same tokens)."""

    name = "random"
    uses_guide = False
    question_aware = False
    observes = False
    seed: int = 0

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        if plan.keep_ratio >= 1:
            return
        grid = plan.grid_index()  # [T, P]
        steps = [range(c.step_start, c.step_end) for c in plan.chunks]
        caps = torch.tensor([len(s) * grid.shape[1] for s in steps])

        def draw(G: int) -> torch.Tensor:  # the same seed, the same draw for every G tried
            gen = torch.Generator().manual_seed(int(self.seed))
            keep = torch.zeros(tuple(grid.shape), dtype=torch.bool)
            for s, k in zip(steps, capped_counts(caps.double(), caps, G).tolist()):
                part = keep[s.start : s.stop].view(-1)
                part[torch.randperm(part.numel(), generator=gen)[:k]] = True
            return keep

        plan.input_keep, _ = fit_grid(plan, draw)

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
