"""``downsample``: fewer tokens per frame instead of fewer frames; the spatial twin of
``uniform``, the other sanity baseline of the benchmark studies.

Every frame is kept and made smaller until the whole video fits the budget:

- ``mode: resize`` (default): the pipeline samples the frames again (``fit_input``) at the largest
  ``max_long_side`` (a multiple of the family's 28 px) whose tokens fit beside the text
  (``fit_long_side``) and the model encodes those smaller frames; on a family whose tokens do
  not follow the frame size (LLaVA-OneVision encodes every frame at 384 px) nothing is resized
  and the tokens are pooled instead;
- whatever still exceeds the budget (``mode: pool``: all of it) is **pooled** before prefill:
  each step's token grid is averaged over ``a x a`` windows, the smallest a whose tokens fit;
  a window's mean is fed at the position of its top-left token (``plan.input_updates``), the
  window's other tokens are not fed. Nothing is compressed in the language model. Where not
  even one token per frame fits (with the text a family interleaves per frame, Qwen3-VL's
  timestamps), evenly spaced frames keep one token each: then it is ``uniform`` at one token
  per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .allocation import fit_grid
from .base import ChunkSpan, InputFit, Method, Refit, VideoPlan

MODES = ("resize", "pool")


def fit_long_side(height: int, width: int, max_long_side: int, factor: int, steps: int, step_text: int,
                  room: int) -> int:
    """The largest long side ``<= max_long_side`` (the sampling rule's ``target_size``, a multiple
    of ``factor``) at which ``steps`` grid steps, each ``step_text`` interleaved text tokens plus
    its ``(h / factor) (w / factor)`` grid tokens, fit in ``room`` tokens; ``factor`` if none does."""
    from ..video import target_size

    side = max_long_side - max_long_side % factor
    while side > factor:
        h, w = target_size(height, width, side, factor)
        if steps * ((h // factor) * (w // factor) + step_text) <= room:
            return side
        side -= factor
    return factor


def pool_window(rows: int, cols: int, steps: int, budget: int) -> int:
    """The smallest window side a with ``steps * ceil(rows / a) * ceil(cols / a) <= budget``."""
    for a in range(1, max(rows, cols) + 1):
        if steps * math.ceil(rows / a) * math.ceil(cols / a) <= budget:
            return a
    return max(rows, cols)


def pooled_tokens(plan: VideoPlan, a: int, block: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average each step's token grid over ``a x a`` windows: (kept grid mask ``[T, P]`` at the
    windows' top-left tokens, their span offsets ``[m]`` ascending, the window means
    ``[m, hidden]``, in the same order), ``block`` steps at a time."""
    rows, cols = plan.token_grid
    idx = plan.grid_index()  # [T, P]
    T = idx.shape[0]
    keep = torch.zeros(T, rows, cols, dtype=torch.bool)
    keep[:, ::a, ::a] = True
    R, C = math.ceil(rows / a), math.ceil(cols / a)
    feats = plan.features
    ones = torch.zeros(R * a, C * a, device=feats.device)
    ones[:rows, :cols] = 1
    count = ones.reshape(R, a, C, a).sum(dim=(1, 3))[..., None]  # [R, C, 1] tokens per window
    means = []
    for b in range(0, T, block):
        grid = feats[idx[b : b + block].to(feats.device)].float().reshape(-1, rows, cols, feats.shape[-1])
        padded = torch.zeros(grid.shape[0], R * a, C * a, grid.shape[-1], device=feats.device)
        padded[:, :rows, :cols] = grid
        sums = padded.reshape(grid.shape[0], R, a, C, a, -1).sum(dim=(2, 4))  # [b, R, C, hidden]
        means.append((sums / count).reshape(-1, grid.shape[-1]))
    keep = keep.reshape(T, -1)
    return keep, idx[keep], torch.cat(means).to(feats.dtype)


@dataclass
class Downsample(Method):
    """mode: resize (the frames, where the family allows; pool the rest) or pool."""

    name = "downsample"
    uses_guide = False
    question_aware = False
    observes = False
    mode: str = "resize"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid choices: {', '.join(MODES)}")

    def fit_input(self, fit: InputFit) -> Refit | None:
        """mode resize: every frame kept, each smaller: the largest size whose tokens fit."""
        if self.mode != "resize" or not fit.tokens_follow_resolution or not fit.original_size:
            return None
        side = fit_long_side(*fit.original_size, fit.max_long_side, fit.size_factor, fit.num_steps,
                             fit.max_step_tokens - fit.tokens_per_step, fit.max_context - fit.budget_text)
        return Refit(max_long_side=side) if side < max(fit.frame_size) else None

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.window = 1
        if plan.keep_ratio >= 1:
            return
        if plan.token_grid is None:
            raise ValueError("downsample needs the token grid of a step (VideoInputs.token_grid)")
        rows, cols = plan.token_grid
        T = plan.grid_index().shape[0]

        def pooled(G: int) -> torch.Tensor:
            keep = torch.zeros(T, rows, cols, dtype=torch.bool)
            a = pool_window(rows, cols, T, G)
            if G >= T:
                keep[:, ::a, ::a] = True
            else:  # not one token per frame fits: evenly spaced frames, one token each
                keep[torch.linspace(0, T - 1, max(1, G)).round().long().unique(), 0, 0] = True
            return keep.reshape(T, -1)

        plan.input_keep, G = fit_grid(plan, pooled)
        self.window = pool_window(rows, cols, T, G)
        _, index, means = pooled_tokens(plan, self.window)
        fed = plan.input_keep[index]
        plan.input_updates = (index[fed], means[fed.to(means.device)])  # (ascending: steps and windows in order)

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
