"""InfiniPot-V: question-unknown KV compression under a hard memory cap, for streaming video.

Kim et al., "InfiniPot-V: Memory-Constrained KV Cache Compression for Streaming Video
Understanding", NeurIPS 2025, arXiv 2506.15745 (https://arxiv.org/abs/2506.15745); the authors'
``process_kv_cache(method="infinipot-v")`` (github.com/aiha-lab/InfiniPot-V, kvcache_utils.py).

The video is prefilled chunk by chunk without the question. A layer keeps every video entry
until it holds more than the cap ``B`` (default: the budget, ``max_context`` minus the text);
then, after the chunk that crosses it, the layer's video entries (those held and the chunk's)
are cut back to ``B`` at once:

- *query* entries: those of the newest ``q = max(1, int(query_ratio * T / P))`` grid steps
  (``T`` entries held, ``P`` grid tokens per step), always kept;
- Temporal-axis Redundancy (TaR): each other entry e at grid position p scores
  ``-mean_s cos(k_e, k_{s,p})`` over the query steps s that hold position p (post-RoPE keys, as
  the cache holds them; mean over KV heads); the ``tar_budget - |query|`` best join the query
  entries, ``tar_budget = B - round((1 - tar_ratio) * B)`` (Python's round, as the authors');
- Value Norm (VaN): every entry scores ``||v_e||`` (mean over KV heads); the kept set is the
  TaR set plus the best ``B - |TaR set|`` of the rest by VaN (the authors give the TaR set the
  VaN score ``max + 1``: the same set). Should the TaR set alone exceed ``B``, its ``B`` best by
  VaN are kept.

Every KV head selects its own entries from its own scores (``head_selection="per_head"``, as the
authors' per-head indices), or the layer keeps one set from head-mean scores (``"shared"``);
grid positions are tracked per entry, where the authors reshape the
compressed cache into pseudo-frames of ``P`` tokens (after the first compression a pseudo-frame
no longer holds one token per grid position). Tokens outside the grid (Qwen3-VL's timestamps,
LLaVA's newline) have no grid position: they are never chosen by TaR, only by VaN.
Layer-adaptive pooling (the authors' option, off by default) is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import ChunkSpan, LayerKeep, LayerView, Method, VideoPlan
from .scorer import HEAD_SELECTIONS


def tar_scores(keys: torch.Tensor, positions: torch.Tensor, query: torch.Tensor, num_positions: int) -> torch.Tensor:
    """TaR: ``keys [H, T, d]``, grid ``positions [T]`` (-1: none), ``query`` bool ``[T]`` ->
    ``[T]``: ``-mean_s cos(k_e, k_{s,p_e})`` over the query entries at e's position, mean over
    heads; ``-inf`` where e is a query entry or no query entry holds its position."""
    kn = keys.float() / (keys.float().norm(dim=-1, keepdim=True) + 1e-9)
    H, T, d = kn.shape
    qm = query & (positions >= 0)
    mean = torch.zeros(H, num_positions, d, device=kn.device)
    count = torch.zeros(num_positions, device=kn.device)
    mean.index_add_(1, positions[qm], kn[:, qm])
    count.index_add_(0, positions[qm], torch.ones(int(qm.sum()), device=kn.device))
    mean = mean / count.clamp(min=1)[None, :, None]
    p = positions.clamp(min=0)
    score = -(kn * mean[:, p]).sum(-1).mean(0)
    score[(positions < 0) | (count[p] == 0) | query] = float("-inf")
    return score


def infinipot_select(keys: torch.Tensor, values: torch.Tensor, steps: torch.Tensor, positions: torch.Tensor,
                     num_positions: int, cap: int, tar_ratio: float, query_ratio: float) -> torch.Tensor:
    """The ``cap`` entries InfiniPot-V keeps of ``T > cap`` video entries (module doc): sorted
    indices. keys/values ``[H, T, d]``; steps / positions ``[T]``: each entry's grid step and grid
    position (-1: not a grid token)."""
    T, dev = keys.shape[1], keys.device
    steps, positions = steps.to(dev), positions.to(dev)
    forced = torch.zeros(T, dtype=torch.bool, device=dev)
    if tar_ratio > 0:
        tar_budget = cap - round((1 - tar_ratio) * cap)
        q_steps = max(1, int(query_ratio * T / num_positions))
        query = steps > int(steps.max()) - q_steps
        forced |= query
        extra = max(0, tar_budget - int(query.sum()))
        tar = tar_scores(keys, positions, query, num_positions)
        extra = min(extra, int(torch.isfinite(tar).sum()))
        if extra:
            forced[tar.topk(extra).indices] = True
    van = values.float().norm(dim=-1).mean(0)
    if int(forced.sum()) >= cap:
        pick = torch.where(forced, van, torch.full_like(van, float("-inf"))).topk(cap).indices
    else:
        rest = cap - int(forced.sum())
        pick = torch.cat([forced.nonzero().squeeze(1),
                          torch.where(forced, torch.full_like(van, float("-inf")), van).topk(rest).indices])
    return pick.sort().values


@dataclass
class InfiniPotV(Method):
    """tar_ratio: the TaR share of the cap (0: value norm alone). query_ratio: the newest steps'
    share that serves as TaR's query (always kept). cap: video entries per layer (None: the
    budget, ``max_context`` minus the text). head_selection: "per_head" (the authors') or "shared"."""

    name = "infinipot_v"
    uses_guide = False
    question_aware = False
    tar_ratio: float = 0.5
    query_ratio: float = 0.25
    cap: int | None = None
    head_selection: str = "per_head"

    def __post_init__(self):
        if self.head_selection not in HEAD_SELECTIONS:
            raise ValueError(f"head_selection must be one of {', '.join(HEAD_SELECTIONS)}, got {self.head_selection!r}")
        if not 0 <= self.tar_ratio <= 1:
            raise ValueError(f"tar_ratio must be in [0, 1], got {self.tar_ratio}")
        if not 0 < self.query_ratio <= 1:
            raise ValueError(f"query_ratio must be in (0, 1], got {self.query_ratio}")
        if self.cap is not None and self.cap < 1:
            raise ValueError(f"cap must be >= 1 or None (the budget), got {self.cap}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.limit = self.cap if self.cap is not None else max(1, plan.max_context - plan.num_text_tokens)
        n = plan.num_video_tokens
        off = torch.tensor(plan.step_token_offsets)
        self.step_of = torch.searchsorted(off, torch.arange(n), right=True) - 1
        self.pos_of = torch.full((n,), -1, dtype=torch.long)
        grid = plan.grid_index()
        self.pos_of[grid.reshape(-1)] = torch.arange(grid.shape[1]).repeat(grid.shape[0])
        # per layer, the span offsets of the video entries held: one tensor per KV head (per_head)
        # or one for the layer (shared)
        self.held: list[list[torch.Tensor] | None] = [None] * plan.num_layers
        self.keeps: dict[int, LayerKeep | None] = {}

    def _fed(self, chunk: ChunkSpan) -> torch.Tensor:
        idx = torch.arange(chunk.token_start, chunk.token_end)
        if self.plan.input_keep is not None:
            idx = idx[self.plan.input_keep[chunk.token_start : chunk.token_end]]
        return idx

    def _select(self, keys, values, offsets):
        return infinipot_select(keys, values, self.step_of[offsets], self.pos_of[offsets], self.plan.tokens_per_step,
                                self.limit, self.tar_ratio, self.query_ratio).cpu()

    def observe(self, view: LayerView) -> None:
        layer, fed = view.layer, self._fed(view.chunk)
        rows = 1 if self.head_selection == "shared" else view.key.shape[0]
        held = self.held[layer] or [torch.zeros(0, dtype=torch.long)] * rows
        offsets = [torch.cat([h, fed]) for h in held]
        if max(o.numel() for o in offsets) <= self.limit:
            self.keeps[layer], self.held[layer] = None, offsets
            return
        if self.head_selection == "shared":
            idx = self._select(view.video_keys, view.video_values, offsets[0])
            self.keeps[layer], self.held[layer] = LayerKeep(idx, scope="video"), [offsets[0][idx]]
            return
        picks = [self._select(view.head_video_keys(h)[None], view.head_video_values(h)[None], o)
                 for h, o in enumerate(offsets)]
        self.keeps[layer] = LayerKeep.per_heads(picks, scope="video")
        self.held[layer] = [o[i] for o, i in zip(offsets, picks)]

    def select(self, chunk: ChunkSpan):
        return [self.keeps.pop(layer) for layer in range(self.plan.num_layers)]
