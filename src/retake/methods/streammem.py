"""StreamMem: a fixed-size, question-unknown KV memory, compressed after every clip.

Yang et al., "StreamMem: Query-Agnostic KV Cache Memory for Streaming Video Understanding",
arXiv 2508.15717 (ICLR 2026 submission, openreview wARprQ4toq). No code is public; the paper
describes, and we implement:

- *input frame filtering* (before the language model): a grid step whose mean visual token
  has cosine similarity above ``filter_threshold`` with the last step kept is never fed (the
  first step is always kept; a dropped step's interleaved text goes with it);
- *proxy query*: the chat template's tokens after the video, without a question (for Qwen:
  ``<|vision_end|><|im_end|>\\n<|im_start|>assistant\\n``), run after every chunk as the guide
  (``proxy_guide``: also when the question is known);
- *saliency*: per layer, the proxy queries' attention over the layer's video entries (those
  held and the chunk's), softmax over those entries, mean over heads and proxy tokens: ``s``;
- *memory*: while a layer holds at most ``M`` video entries (default the budget, ``max_context``
  minus the text) nothing is dropped; after a chunk that exceeds it, the layer keeps the
  chunk's frame prototypes and the ``M - F`` most salient of its video entries (held, earlier
  prototypes included, and the chunk's);
- *frame-wise KV merging*: each grid step f of the chunk gives one prototype entry, the
  saliency-weighted mean of its tokens' keys and values (``w_j = s_j / sum_{j in f} s_j``).
  With ``F >= M`` only the ``M`` prototypes of the most salient frames (summed ``s``) are kept.

Where the paper is silent we chose (``docs/methods.md``): the filter's feature (the language
model's input embeddings, mean over the step's grid tokens) and threshold; the softmax over
the video entries only; prototypes as the saliency-weighted mean (post-RoPE keys, like LOOK-M's
merges); prototypes competing with tokens for the memory in later chunks; no prototypes while
the memory is not full. YaRN position extension is not applied: kept entries keep their
original positions, which stay inside the model's trained range at the budgets compared here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import ChunkSpan, LayerKeep, LayerView, Method, VideoPlan, topk_sorted


def filter_steps(step_features: torch.Tensor, threshold: float) -> torch.Tensor:
    """Input frame filtering: bool ``[T]``, False for a step whose feature has cosine similarity
    above ``threshold`` with the last kept step's (step 0 is kept)."""
    keep = torch.ones(step_features.shape[0], dtype=torch.bool)
    if threshold >= 1 or step_features.shape[0] < 2:
        return keep
    f = F.normalize(step_features.float(), dim=-1)
    last = f[0]
    for t in range(1, f.shape[0]):
        if float(f[t] @ last) > threshold:
            keep[t] = False
        else:
            last = f[t]
    return keep


def frame_prototypes(keys: torch.Tensor, values: torch.Tensor, saliency: torch.Tensor, frames: torch.Tensor):
    """One entry per frame: the saliency-weighted mean of its keys and values. keys/values
    ``[H, n, d]`` (the chunk's), saliency ``[n]``, frames ``[n]`` (the frame of each token,
    ascending) -> ``(keys [H, F, d], values [H, F, d], frame saliency [F])``."""
    ids, inverse = torch.unique_consecutive(frames, return_inverse=True)
    n_f = ids.numel()
    s = saliency.float()
    total = torch.zeros(n_f, device=s.device).index_add_(0, inverse, s)
    w = s / total[inverse].clamp(min=torch.finfo(torch.float32).tiny)
    k = torch.zeros(keys.shape[0], n_f, keys.shape[-1], device=keys.device).index_add_(1, inverse, keys.float() * w[None, :, None])
    v = torch.zeros(values.shape[0], n_f, values.shape[-1], device=values.device).index_add_(1, inverse, values.float() * w[None, :, None])
    return k, v, total


@dataclass
class StreamMem(Method):
    """filter_threshold: input frame filtering (a step more similar than this to the last kept
    step is dropped; 1.0 keeps every step). prototypes: add a merged entry per frame. memory:
    video entries per layer (None: the budget, ``max_context`` minus the text)."""

    name = "streammem"
    question_aware = False
    proxy_guide = True
    filter_threshold: float = 0.95
    prototypes: bool = True
    memory: int | None = None

    def __post_init__(self):
        if not 0 < self.filter_threshold <= 1:
            raise ValueError(f"filter_threshold must be in (0, 1], got {self.filter_threshold}")
        if self.memory is not None and self.memory < 1:
            raise ValueError(f"memory must be >= 1 or None (the budget), got {self.memory}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.limit = self.memory if self.memory is not None else max(1, plan.max_context - plan.num_text_tokens)
        n = plan.num_video_tokens
        off = torch.tensor(plan.step_token_offsets)
        self.step_of = torch.searchsorted(off, torch.arange(n), right=True) - 1
        self.kept_steps = filter_steps(plan.step_features(), self.filter_threshold)
        if not bool(self.kept_steps.all()):
            plan.input_keep = self.kept_steps[self.step_of]
        self.keeps: dict[int, LayerKeep | None] = {}
        # the memory never fills: run exactly as `none` (no proxy guide, no scoring)
        fed = n if plan.input_keep is None else int(plan.input_keep.sum())
        self.uses_guide = self.observes = fed > self.limit

    def observe(self, view: LayerView) -> None:
        layer, n, m = view.layer, view.num_chunk, view.num_video_held
        if m + n <= self.limit:
            self.keeps[layer] = None
            return
        keys, values = view.video_keys, view.video_values
        s = view.attention(view.guide_queries, keys).mean(dim=(0, 1))  # [m + n]
        if not self.prototypes:
            self.keeps[layer] = LayerKeep(topk_sorted(s, self.limit).cpu(), scope="video")
            return
        c = view.chunk
        fed = torch.arange(c.token_start, c.token_end)
        if self.plan.input_keep is not None:
            fed = fed[self.plan.input_keep[c.token_start : c.token_end]]
        pk, pv, ps = frame_prototypes(keys[:, m:], values[:, m:], s[m:], self.step_of[fed].to(s.device))
        f = pk.shape[1]
        if f >= self.limit:
            top = topk_sorted(ps, self.limit)
            idx, pk, pv = torch.zeros(0, dtype=torch.long), pk[:, top], pv[:, top]
        else:
            idx = topk_sorted(s, self.limit - f).cpu()
        self.keeps[layer] = LayerKeep(idx, extra_keys=pk, extra_values=pv, scope="video")

    def select(self, chunk: ChunkSpan):
        return [self.keeps.pop(layer, None) for layer in range(self.plan.num_layers)]
