"""FlexSelect, training-free mode: the question's attention at a reference layer picks the
video tokens, the model then answers over those alone.

Zhang et al., "FlexSelect: Flexible Token Selection for Efficient Long Video Understanding",
NeurIPS 2025, arXiv 2506.00993 (https://arxiv.org/abs/2506.00993).

Two passes (``Method.scoring_pass``):

1. scoring, per group of the video's grid steps: ``[group ; guide]`` runs over the prefix alone,
   layers ``0 .. l_ref`` only; at layer ``l_ref`` the guide's queries attend (post-RoPE, softmax
   over the prefix, the group and the causal guide, as the model computes it) and a group token
   j scores ``s_j = max_{h, i in guide} A[h, i, j]`` (``aggregate: max``, the authors'
   ``token_selection``) or the mean over heads and guide queries (``aggregate: mean``);
   groups (by default 64 grid steps each, the authors' ``max_frames_per_group`` on every family,
   whose "frame" is one grid step's tokens: 128 Qwen frames, 64 LLaVA ones; else
   ``group_frames`` frames) are **strided**: group g holds grid steps g, g + G, g + 2G, ..., so
   each spans the whole video;
   each group keeps its top ``k_g`` by s, ``k_g`` the budget ``round(r * N_v)`` shared by
   group size (FlexSelect: ``budget / G`` per group);
2. answering: the kept tokens alone are fed (``plan.input_keep``) at their own positions,
   nothing compressed in the language model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .allocation import capped_counts, fit_grid, input_attention_blocks
from .base import ChunkSpan, LayerView, Method, ScoringGroup, VideoPlan, step_groups, topk_sorted

AGGREGATES = ("max", "mean")
GROUP_STEPS = 64  # the authors' max_frames_per_group, in frames of tokens_per_frame = one grid step's tokens


def reference_scores(view: LayerView, aggregate: str, block: int = 64) -> torch.Tensor:
    """The guide's attention to the input's first ``num_chunk`` tokens (the group), in the
    layer's real attention (softmax over the cache plus the causal input), reduced over heads and
    guide queries by ``aggregate``: ``[n]`` fp32. Blocks of ``block`` guide queries."""
    if view.num_guide == 0:
        raise RuntimeError("this method needs the guide (the question) but none was given")
    c, n = view.cache_len, view.num_chunk
    out = None
    for _, att in input_attention_blocks(view, n, n + view.num_guide, block):
        a = att[:, :, c : c + n]  # [H, b, n]
        part = a.amax(dim=(0, 1)) if aggregate == "max" else a.sum(dim=(0, 1))
        out = part if out is None else (torch.maximum(out, part) if aggregate == "max" else out + part)
    if aggregate == "mean":
        out = out / (view.query.shape[0] * view.num_guide)
    return out.cpu()


def default_reference_layer(num_layers: int) -> int:
    """``floor(0.72 * L)``: 20 for 28-layer models, the layer the authors' Qwen2.5-VL-7B script
    uses (their LLaVA-Video-7B choice is 19)."""
    return min(num_layers - 1, int(math.floor(0.72 * num_layers)))


@dataclass
class FlexSelect(Method):
    """reference_layer: 0-based layer whose attention ranks the tokens (-1: floor(0.72 L)).
    aggregate: max (the authors' default) or mean over heads and guide queries.
    group_frames: frames per scoring group (-1: 64 grid steps, the authors' groups on every family:
    128 Qwen frames, 64 LLaVA frames).
    strided: groups of every G-th grid step (FlexSelect) instead of consecutive steps."""

    name = "flexselect"
    scoring_pass = True
    reference_layer: int = -1
    aggregate: str = "max"
    group_frames: int = -1
    strided: bool = True

    def __post_init__(self):
        if self.reference_layer < -1:
            raise ValueError(f"reference_layer must be >= 0, or -1 for floor(0.72 L), got {self.reference_layer}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; valid choices: {', '.join(AGGREGATES)}")
        if self.group_frames < 1 and self.group_frames != -1:
            raise ValueError(f"group_frames must be >= 1, or -1 for {GROUP_STEPS} grid steps, got {self.group_frames}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        L = plan.num_layers
        self.layer = default_reference_layer(L) if self.reference_layer == -1 else self.reference_layer
        if self.layer >= L:
            raise ValueError(f"reference_layer must be in [0, {L - 1}] for a {L}-layer model, got {self.layer}")
        # nothing to compress: one ordinary pass, exactly `none`
        self.scoring_pass = plan.keep_ratio < 1
        self.uses_guide = self.observes = plan.keep_ratio < 1
        self.scores: dict[int, torch.Tensor] = {}

    def scoring_groups(self, plan: VideoPlan) -> list[ScoringGroup]:
        return step_groups(plan, self.steps_per_group(plan), strided=self.strided)

    def steps_per_group(self, plan: VideoPlan) -> int:
        if self.group_frames == -1:
            return GROUP_STEPS
        return max(1, self.group_frames // plan.frames_per_step)

    def scoring_layers(self, num_layers: int) -> int:
        return self.layer + 1

    def observe(self, view: LayerView) -> None:
        if view.group is not None and view.layer == self.layer:
            self.scores[view.group.index] = reference_scores(view, self.aggregate)

    def end_scoring(self) -> None:
        self.keep = select_in_groups(self.plan, self.groups_scored(), self.scores)
        self.plan.input_keep = self.keep
        self.uses_guide = self.observes = False  # the answer pass only feeds the kept tokens

    def groups_scored(self) -> list[ScoringGroup]:
        return [g for g in self.scoring_groups(self.plan) if g.index in self.scores]

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers


def select_in_groups(plan: VideoPlan, groups: list[ScoringGroup], scores: dict[int, torch.Tensor],
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """``plan.input_keep`` keeping, in each group, its top-``k_g`` grid tokens by its scores;
    the budget is shared over the groups in proportion to ``weights`` (default: their grid-token
    counts), capped at each group's size (``allocation.capped_counts``; a step's interleaved text
    is fed with its kept tokens, ``allocation.fit_grid``). Tokens of groups not scored are
    dropped."""
    grid = plan.grid_index()  # [T, P]
    where = torch.full((plan.num_video_tokens,), -1, dtype=torch.long)
    where[grid.reshape(-1)] = torch.arange(grid.numel())  # span offset -> its place in the grid
    members = [where[g.tokens] >= 0 for g in groups]  # which of a group's tokens are grid tokens
    caps = torch.tensor([int(m.sum()) for m in members])

    def keep(G: int) -> torch.Tensor:
        out = torch.zeros(grid.numel(), dtype=torch.bool)
        for g, m, kg in zip(groups, members, capped_counts(caps.double() if weights is None else weights, caps, G).tolist()):
            out[where[g.tokens[m]][topk_sorted(scores[g.index][m], kg)]] = True
        return out.reshape(grid.shape)

    return fit_grid(plan, keep)[0]
