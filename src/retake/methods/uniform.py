"""``uniform``: the "baseline model" rows of the papers' tables. No compression; the video is
sampled with fewer frames (uniformly over its timeline, by the usual sampling rule) so that
its uncompressed tokens plus the text fit ``max_context``: :meth:`UniformFrames.fit_input`
asks the pipeline for ``max_frames_for_context`` frames before they are decoded."""

from __future__ import annotations

from dataclasses import dataclass

from .base import ChunkSpan, InputFit, Method, Refit


def max_frames_for_context(max_context: int, num_text: int, tokens_per_step: int, frames_per_step: int) -> int:
    """Most frames whose tokens fit beside the text: whole grid steps only."""
    steps = (max_context - num_text) // tokens_per_step
    if steps < 1:
        raise ValueError(
            f"max_context={max_context} cannot hold one grid step ({tokens_per_step} tokens) beside {num_text} text tokens"
        )
    return steps * frames_per_step


@dataclass
class UniformFrames(Method):
    name = "uniform"
    uses_guide = False
    question_aware = False
    observes = False

    def fit_input(self, fit: InputFit) -> Refit | None:
        # a step's cost includes the text some families interleave per step (Qwen3-VL's timestamps)
        frames = max_frames_for_context(fit.max_context, fit.budget_text, fit.max_step_tokens, fit.frames_per_step)
        return Refit(max_frames=frames) if frames < fit.num_frames else None

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
