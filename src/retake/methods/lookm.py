"""LOOK-M: accumulated-attention eviction with pivot merging of the evicted KV pairs.

Wan et al., "LOOK-M: Look-Once Optimization in KV Cache for Efficient Multimodal Long-Context
Inference", EMNLP Findings 2024, arXiv 2406.18139 (https://arxiv.org/abs/2406.18139).

Per chunk and layer (n chunk tokens, g guide tokens, ``K`` = the layer's cache length including
the input):

- score (H2O style): the attention each chunk token receives from every input query (chunk and
  guide), with the layer's real softmax over its whole cache plus the causal part of the input:
  ``s_j = (1/H) sum_h sum_i A[h, i, cache + j]``, ``A`` ``[H, n + g, K]`` (held in blocks of
  queries, never whole);
- keep the top ``k = round(r * n)`` tokens (the same k in every layer);
- pivot merge, per KV head: each evicted entry e goes to the kept entry c whose key is the most
  cosine-similar (post-RoPE keys, as cached); a kept entry with matches ``E_c`` becomes
  ``(x_c + mean_{e in E_c} x_e) / 2`` for keys and values alike, i.e. the mean of the pairwise
  averages ``(x_c + x_e) / 2``; one match gives the plain average of the two.

The merged ``[H_kv, k, d]`` keys/values are built in ``observe`` (where the chunk's KV is at
hand), held until ``select`` returns them as a :class:`LayerKeep`, and dropped there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import ChunkSpan, LayerKeep, LayerView, budget_tokens, topk_sorted
from .scorer import Scorer


def pivot_merge(keys: torch.Tensor, values: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the entries not in ``keep`` into their most key-similar kept entry, per head.

    keys, values: ``[H_kv, n, d]``; keep: sorted indices ``[k]`` -> merged keys, values
    ``[H_kv, k, d]`` (fp32). Kept entry c with matches ``E_c`` becomes
    ``(x_c + mean_{e in E_c} x_e) / 2``; without matches it is unchanged.
    """
    keys, values, keep = keys.float(), values.float(), keep.to(keys.device)
    evict = torch.ones(keys.shape[1], dtype=torch.bool, device=keys.device)
    evict[keep] = False
    kept_k, kept_v = keys[:, keep], values[:, keep]
    if not bool(evict.any()):
        return kept_k, kept_v
    ek, ev = keys[:, evict], values[:, evict]
    cos = F.normalize(ek, dim=-1) @ F.normalize(kept_k, dim=-1).transpose(-1, -2)  # [H_kv, e, k]
    target = cos.argmax(-1)  # [H_kv, e]: the pivot of every evicted entry, per head
    count = torch.zeros(kept_k.shape[:2], device=keys.device).scatter_add_(1, target, torch.ones(target.shape, device=keys.device))
    matched = count[..., None] > 0
    denom = count.clamp_min(1)[..., None]
    mean_k = torch.zeros_like(kept_k).scatter_add_(1, target[..., None].expand_as(ek), ek) / denom
    mean_v = torch.zeros_like(kept_v).scatter_add_(1, target[..., None].expand_as(ev), ev) / denom
    return torch.where(matched, (kept_k + mean_k) / 2, kept_k), torch.where(matched, (kept_v + mean_v) / 2, kept_v)


@dataclass
class LookM(Scorer):
    """query_block: input queries per block when accumulating the received attention (>= 1);
    a block holds ``[H, query_block, K]`` fp32 (K = the whole cache: ~235 MB at 28 heads, 16K)."""

    name = "lookm"
    query_block: int = 128

    def __post_init__(self):
        if self.query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {self.query_block}")

    def observe(self, view: LayerView) -> None:
        n, c = view.num_chunk, view.cache_len
        # [H, K] received attention over the whole cache + causal input -> chunk columns, head mean
        score = view.received_attention(view.query, view.key, causal=True, block=self.query_block)[:, c : c + n].mean(0)
        keep = topk_sorted(score, budget_tokens(self.plan.keep_ratio, n)).to(view.key.device)
        keys, values = pivot_merge(view.chunk_keys, view.chunk_values, keep)  # merged while the chunk's KV is at hand
        self.scores[view.layer] = LayerKeep(keep.cpu(), keys=keys, values=values)

    def keeps(self, chunk: ChunkSpan):
        return [self.scores.pop(l) for l in range(self.plan.num_layers)]
