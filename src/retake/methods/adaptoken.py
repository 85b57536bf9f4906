"""AdaptToken: the model's own certainty, group by group, decides where the token budget goes.

Qi et al., "AdaptToken: Entropy-based Adaptive Token Selection for MLLM Long Video
Understanding", arXiv 2603.28696 (https://arxiv.org/abs/2603.28696).

Two passes (``Method.scoring_pass``), like FlexSelect's, with a full-depth scoring pass:

1. scoring, per group of ``group_frames`` consecutive frames (whole grid steps):
   ``[group ; guide]`` runs over the prefix alone through every layer;
   - tokens are ranked by the guide's attention at layer ``l_ref`` (FlexSelect's score,
     ``flexselect.reference_scores``: max, or mean, over heads and guide queries);
   - the group's *response entropy* is the entropy of the model's next-token distribution at
     the guide's end (the first answer token, the whole vocabulary, nats):
     ``H_g = -sum_v p_v log p_v``;
   - ``lite``: groups are scored in temporal order and scoring stops after the first group with
     ``H_g <= stop_entropy`` (the model is sure): the groups after it are never fed;
2. the budget ``round(r * N_v)`` is shared over the scored groups in proportion to
   ``w_g = exp(-H_g / temperature)`` (a more certain group is more relevant to the question),
   capped at each group's size; each group keeps its top-``k_g`` tokens; the answer pass feeds
   them alone.

The paper's text we could read (abstract, project page) does not give the grouping, the
entropy's support, the weight function or the threshold; those above are our choices
(docs/methods.md). Its location-aware removal of redundant tokens is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import ChunkSpan, LayerView, Method, ScoringGroup, VideoPlan, step_groups
from .flexselect import AGGREGATES, default_reference_layer, reference_scores, select_in_groups


def response_entropy(logits: torch.Tensor) -> float:
    """Entropy (nats) of ``softmax(logits)`` over the whole vocabulary."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return float(-(logp.exp() * logp).sum())


@dataclass
class AdaptToken(Method):
    """group_frames: frames per group. reference_layer: the ranking layer (-1: floor(0.72 L)).
    aggregate: max or mean over heads and guide queries. temperature: of the weights
    exp(-H / temperature). lite: stop scoring at the first group with H <= stop_entropy."""

    name = "adaptoken"
    scoring_pass = True
    scoring_logits = True
    group_frames: int = 64
    reference_layer: int = -1
    aggregate: str = "max"
    temperature: float = 1.0
    lite: bool = False
    stop_entropy: float = 0.3

    def __post_init__(self):
        if self.group_frames < 1:
            raise ValueError(f"group_frames must be >= 1, got {self.group_frames}")
        if self.reference_layer < -1:
            raise ValueError(f"reference_layer must be >= 0, or -1 for floor(0.72 L), got {self.reference_layer}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; valid choices: {', '.join(AGGREGATES)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.stop_entropy < 0:
            raise ValueError(f"stop_entropy must be >= 0 (nats), got {self.stop_entropy}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        L = plan.num_layers
        self.layer = default_reference_layer(L) if self.reference_layer == -1 else self.reference_layer
        if self.layer >= L:
            raise ValueError(f"reference_layer must be in [0, {L - 1}] for a {L}-layer model, got {self.layer}")
        self.scoring_pass = self.uses_guide = self.observes = plan.keep_ratio < 1
        self.scores: dict[int, torch.Tensor] = {}
        self.entropy: dict[int, float] = {}  # per scored group, in scoring order
        self.groups = step_groups(plan, max(1, self.group_frames // plan.frames_per_step))

    def scoring_groups(self, plan: VideoPlan) -> list[ScoringGroup]:
        return self.groups

    def observe(self, view: LayerView) -> None:
        if view.group is not None and view.layer == self.layer:
            self.scores[view.group.index] = reference_scores(view, self.aggregate)

    def score_group(self, group: ScoringGroup, logits: torch.Tensor | None) -> bool:
        self.entropy[group.index] = response_entropy(logits)
        return not (self.lite and self.entropy[group.index] <= self.stop_entropy)

    def group_weights(self) -> torch.Tensor:
        """``exp(-H_g / temperature)`` of the scored groups, in their order (max-shifted)."""
        H = torch.tensor(list(self.entropy.values()), dtype=torch.float64)
        return torch.exp(-(H - H.min()) / self.temperature)

    def end_scoring(self) -> None:
        scored = [g for g in self.groups if g.index in self.entropy]
        self.plan.input_keep = select_in_groups(self.plan, scored, self.scores, self.group_weights())
        self.uses_guide = self.observes = False

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
