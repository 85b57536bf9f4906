"""Small hand-made VideoPlans for the methods' definition tests."""

from __future__ import annotations

import torch

from retake.methods.base import ChunkSpan, VideoPlan


def plan_of(steps: int, per_step: int, r: float = 0.5, hidden: int = 4, text_per_step: int = 0, layers: int = 2,
            steps_per_chunk: int = 2, features: torch.Tensor | None = None, seed: int = 0,
            token_grid: tuple[int, int] | None = None) -> VideoPlan:
    """``steps`` grid steps of ``per_step`` grid tokens, each step led by ``text_per_step``
    interleaved text tokens (Qwen3-VL's timestamps), random features unless given."""
    off = [s * (per_step + text_per_step) for s in range(steps + 1)]
    n = off[-1]
    mask = None
    if text_per_step:
        mask = torch.ones(n, dtype=torch.bool)
        for s in range(steps):
            mask[off[s] : off[s] + text_per_step] = False
    if features is None:
        features = torch.randn(n, hidden, generator=torch.Generator().manual_seed(seed))
    chunks = [ChunkSpan(i, a, min(steps, a + steps_per_chunk), off[a], off[min(steps, a + steps_per_chunk)])
              for i, a in enumerate(range(0, steps, steps_per_chunk))]
    return VideoPlan(num_layers=layers, chunks=chunks, keep_ratio=r, max_context=0, num_video_tokens=n,
                     num_text_tokens=0, tokens_per_step=per_step, step_token_offsets=off, features=features,
                     visual_mask=mask, token_grid=token_grid)
