"""EVS: Efficient Video Sampling, as vLLM ships it (``--video-pruning-rate``, vLLM PR 22980):
drop the tokens that repeat the previous frame's token at the same position.

Bagrov et al., "Efficient Video Sampling: Pruning Temporally Redundant Tokens for Faster VLM
Inference", arXiv 2510.14624 (https://arxiv.org/abs/2510.14624); vLLM's
``vllm/multimodal/evs.py`` (``compute_retention_mask``).

Before prefill, on the video's LLM-space grid tokens ``v[t, p]`` (grid step t, position p):
``d[t, p] = 1 - cos(v[t, p], v[t-1, p])``, and the first step's tokens rank above every other
(vLLM sets their d to 255: the first frame is always kept). The ``round(r * N_v)`` grid tokens
with the largest d over the whole video are fed (a stable sort: among equal d, the earlier
token), at their own positions; nothing is compressed in the language model. (Where the family
interleaves text with the frames, a step's text is fed with its first kept token and counts in
the budget: ``allocation.fit_grid``.)

vLLM keeps at least the whole first frame even when the pruning rate asks for less; here the
budget wins (a budget below one step's tokens keeps part of the first step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .allocation import fit_grid
from .base import ChunkSpan, Method, VideoPlan

FIRST_STEP = 255.0  # vLLM's rank for the first frame's tokens (any d is <= 2)


def evs_mask(d: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``[T, P]``: the ``k`` largest of ``d [T, P]`` (``d[0]`` replaced by 255), ties to the
    earlier token (vLLM's stable descending argsort of the flattened grid)."""
    d = d.clone().float()
    d[0] = FIRST_STEP
    order = torch.argsort(d.reshape(-1), descending=True, stable=True)
    keep = torch.zeros(d.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    return keep.reshape(d.shape)


@dataclass
class EVS(Method):
    name = "evs"
    uses_guide = False
    question_aware = False
    observes = False

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        if plan.keep_ratio >= 1:
            return
        self.distances = plan.token_distances()  # [T, P], d[0] = 1
        plan.input_keep, self.grid_tokens = fit_grid(plan, lambda G: evs_mask(self.distances, G))

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
