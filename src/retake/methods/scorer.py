"""The base of methods that rank tokens (kvpress's ``ScorerPress`` idea, in our protocol).

A scoring method writes one thing, its score of the chunk's tokens in a layer
(:meth:`Scorer.score`: ``[n]``, or ``[H_kv, n]`` per KV head), and optionally how many tokens
each layer keeps (:meth:`Scorer.layer_counts`) or each head (:meth:`Scorer.keep`). The base
owns the rest:

- the no-op: when nothing needs compressing (``compresses(plan)`` is False, by default
  ``r >= 1``) the method runs exactly as ``none`` (no guide, no scoring, every token kept);
- the budget: every layer keeps ``round(r * n)`` tokens unless the method says otherwise;
- the top-k, per KV head or shared (:class:`HeadScorer`'s ``head_selection``);
- reuse: an instance may run any number of videos, one after another (nothing of a run
  survives its ``begin``; the class attributes ``uses_guide`` / ``observes`` stay the
  declaration the engine reads before ``begin``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import ChunkSpan, LayerView, Method, VideoPlan, budget_tokens, topk_sorted

HEAD_SELECTIONS = ("per_head", "shared")


def group_mean(scores: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """``[H, n]`` per query head -> ``[H_kv, n]``: the mean over each KV head's query heads
    (query head h reads KV head ``h // (H / H_kv)``, as kvpress and the models group them)."""
    H, n = scores.shape
    return scores.reshape(num_kv_heads, H // num_kv_heads, n).mean(1)


@dataclass
class Scorer(Method):
    """A method that keeps, per layer, the top-scoring tokens of each chunk (module doc)."""

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.scores: dict[int, torch.Tensor] = {}
        self.active = self.compresses(plan)
        # idle: run exactly as `none` (no guide, no scoring); the class keeps the declaration
        self.uses_guide = self.declared("uses_guide") and self.active
        self.observes = self.declared("observes") and self.active

    def compresses(self, plan: VideoPlan) -> bool:
        """Whether this video needs compressing at all (default: the budget bites, r < 1)."""
        return plan.keep_ratio < 1

    def score(self, view: LayerView) -> torch.Tensor | None:
        """The layer's score of the chunk's fed tokens: ``[n]``, or ``[H_kv, n]`` per KV head
        (None: this layer scores nothing, e.g. FastV's layers other than its K-th)."""
        raise NotImplementedError

    def observe(self, view: LayerView) -> None:
        s = self.score(view)
        if s is not None:
            self.scores[view.layer] = s.cpu()

    def layer_counts(self, scores: list[torch.Tensor], chunk: ChunkSpan) -> list[int]:
        """Tokens each layer keeps of this chunk (default ``round(r * n)`` everywhere)."""
        n = scores[0].shape[-1]
        return [budget_tokens(self.plan.keep_ratio, n)] * len(scores)

    def keep(self, layer: int, score: torch.Tensor, k: int):
        """What ``layer`` keeps given its score and count: the sorted top-``k`` (per row)."""
        return topk_sorted(score, k)

    def select(self, chunk: ChunkSpan):
        if not self.active:
            self.scores.clear()
            return [None] * self.plan.num_layers
        return self.keeps(chunk)

    def keeps(self, chunk: ChunkSpan) -> list:
        """Every layer's selection for this chunk, from the scores its layers wrote (default:
        each layer's top ``layer_counts``)."""
        scores = [self.scores.pop(layer) for layer in range(self.plan.num_layers)]
        counts = self.layer_counts(scores, chunk)
        return [self.keep(layer, scores[layer], int(counts[layer])) for layer in range(len(scores))]


@dataclass
class HeadScorer(Scorer):
    """A scorer whose score is per KV head ``[H_kv, n]``. head_selection: ``"per_head"`` (each
    KV head keeps its own top-k, as the method's reference does) or ``"shared"`` (one set per
    layer, from the score's mean over heads)."""

    head_selection: str = "per_head"

    def __post_init__(self):
        super().__post_init__()
        if self.head_selection not in HEAD_SELECTIONS:
            raise ValueError(f"head_selection must be one of {', '.join(HEAD_SELECTIONS)}, got {self.head_selection!r}")

    def keep(self, layer: int, score: torch.Tensor, k: int):
        if score.dim() == 2 and self.head_selection == "shared":
            score = score.mean(0)
        return topk_sorted(score, k)
