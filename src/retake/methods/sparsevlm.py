"""SparseVLM: text raters score the visual tokens; part of the pruned tokens is recycled.

Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model
Inference", arXiv 2410.04417 (https://arxiv.org/abs/2410.04417).

Per chunk and layer (n chunk tokens, g guide tokens, ``K`` = the layer's cache length including
the input), with ``A`` ``[H, g, K]`` the guide queries' real attention (softmax over the whole
cache plus the causal part of the input) and ``a = (1/H) sum_h A[h, :, chunk]`` ``[g, n]``:

- raters: guide tokens i whose mean attention to the chunk ``rel_i = mean_j a[i, j]`` exceeds
  the mean of ``rel`` over the guide (all guide tokens when none does, e.g. g = 1);
- score ``s_j = sum_{i in raters} a[i, j]``;
- budget ``B = round(r * n)`` entries = ``kept + clusters``: p tokens are pruned, the top
  ``m = ceil(recycle_ratio * p)`` of them by score are recycled into
  ``c = min(m, ceil(p / cluster_size))`` clusters (the spec's count; ``cluster_count=
  "recycled"``: ``ceil(m / cluster_size)``, as the authors' code), and p is the smallest count
  with ``(n - p) + c = B`` (at least one token is kept);
- clusters: density-peak k-NN clustering (DPC-kNN, as the authors' code) of the recycled
  tokens' keys (all KV heads concatenated, ``[m, H_kv * d]``), ties broken by index instead of
  random noise; each cluster's entry is the mean key and the mean value of its members,
  appended after the kept tokens (:class:`LayerKeep` extras).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .allocation import input_attention_blocks
from .base import ChunkSpan, LayerKeep, LayerView, VideoPlan, budget_tokens
from .scorer import Scorer


CLUSTER_COUNTS = ("pruned", "recycled")


def recycled_counts(n: int, budget: int, recycle_ratio: float, cluster_size: int,
                    cluster_count: str = "pruned") -> tuple[int, int, int]:
    """``(kept, recycled, clusters)`` for a chunk of ``n`` tokens and ``budget`` entries:
    the fewest pruned tokens p with ``(n - p) + c(p) == budget``, where ``m(p) =
    ceil(recycle_ratio * p)`` and ``c(p) = min(m, ceil(p / cluster_size))`` (``cluster_count=
    "pruned"``, the spec) or ``ceil(m / cluster_size)`` (``"recycled"``, the authors' code);
    if even ``n - 1`` pruned tokens give too many clusters, one token is kept and the clusters
    are cut to ``budget - 1``."""
    if cluster_count not in CLUSTER_COUNTS:
        raise ValueError(f"unknown cluster_count {cluster_count!r}; valid choices: {', '.join(CLUSTER_COUNTS)}")

    def counts(p: int) -> tuple[int, int]:
        m = math.ceil(recycle_ratio * p - 1e-9)  # guard 0.3 * 10 = 3.0000000000000004
        if cluster_count == "recycled":
            return m, math.ceil(m / cluster_size)
        return m, min(m, math.ceil(p / cluster_size))  # no more clusters than recycled tokens

    budget = max(1, min(n, budget))
    for p in range(n):  # (n - p) + c(p) is non-increasing in p, by steps of 0 or 1
        m, c = counts(p)
        if n - p + c <= budget:
            return n - p, m, c
    m, c = counts(n - 1)
    return 1, m, min(c, budget - 1)


def dpc_knn(x: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Density-peak clustering with k-NN density (k = ``num_clusters`` neighbours, self
    included, as in SparseVLM's code): ``x [m, C]`` -> cluster of every point ``[m]`` in
    ``[0, num_clusters)``; cluster i is centred on the i-th centre by decreasing
    ``density * distance-to-denser``. Deterministic: ties go to the lower index."""
    m, C = x.shape
    c = max(1, min(num_clusters, m))
    x = x.float()
    dist = torch.cdist(x, x) / math.sqrt(C)  # [m, m]
    density = torch.exp(-(dist.topk(c, dim=-1, largest=False).values ** 2).mean(-1))  # [m]
    i = torch.arange(m, device=x.device)
    # j is denser than i: higher density, or equal density and a lower index
    denser = (density[None, :] > density[:, None]) | ((density[None, :] == density[:, None]) & (i[None, :] < i[:, None]))
    delta = torch.where(denser, dist, dist.max()).min(-1).values
    centres = torch.sort(delta * density, descending=True, stable=True).indices[:c]
    assign = dist[:, centres].argmin(-1)
    assign[centres] = torch.arange(c, device=x.device)  # a centre belongs to its own cluster
    return assign


def cluster_means(keys: torch.Tensor, values: torch.Tensor, assign: torch.Tensor, num_clusters: int):
    """Mean key and value per cluster: ``[H_kv, m, d]``, assign ``[m]`` -> ``[H_kv, c, d]`` each."""
    count = torch.bincount(assign, minlength=num_clusters).to(keys.dtype)[None, :, None]
    k = torch.zeros(keys.shape[0], num_clusters, keys.shape[2], dtype=keys.dtype, device=keys.device)
    v = torch.zeros_like(k)
    return k.index_add_(1, assign, keys) / count, v.index_add_(1, assign, values) / count


def guide_chunk_attention(view: LayerView, block: int) -> torch.Tensor:
    """Head-mean real attention of the guide queries to the chunk tokens, ``[g, n]``: softmax over
    the layer's whole cache plus the causal input, computed for ``block`` guide queries at a time."""
    n, c = view.num_chunk, view.cache_len
    blocks = input_attention_blocks(view, n, n + view.num_guide, block)
    return torch.cat([att[:, :, c : c + n].mean(0) for _, att in blocks])


def raters(attn: torch.Tensor) -> torch.Tensor:
    """Guide tokens whose mean attention to the chunk exceeds the guide's mean: ``[g, n]`` ->
    bool ``[g]`` (all True when none exceeds it)."""
    rel = attn.mean(-1)
    above = rel > rel.mean()
    return above if bool(above.any()) else torch.ones_like(above)


@dataclass
class SparseVLM(Scorer):
    """recycle_ratio: share of the pruned tokens (the best-scored) that are recycled, in [0, 1].
    cluster_size: pruned tokens per cluster, >= 1: clusters = ceil(pruned / cluster_size) (at most
    the recycled count), as the spec says.
    cluster_count: "pruned" (that rule) or "recycled" (clusters = ceil(recycled / cluster_size),
    the authors' code).
    query_block: guide queries per block when computing their attention, >= 1."""

    name = "sparsevlm"
    recycle_ratio: float = 0.3
    cluster_size: int = 10
    cluster_count: str = "pruned"
    query_block: int = 128

    def __post_init__(self):
        if not 0 <= self.recycle_ratio <= 1:
            raise ValueError(f"recycle_ratio must be in [0, 1], got {self.recycle_ratio}")
        if self.cluster_size < 1:
            raise ValueError(f"cluster_size must be >= 1, got {self.cluster_size}")
        if self.cluster_count not in CLUSTER_COUNTS:
            raise ValueError(f"cluster_count must be one of {', '.join(CLUSTER_COUNTS)}, got {self.cluster_count!r}")
        if self.query_block < 1:
            raise ValueError(f"query_block must be >= 1, got {self.query_block}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        self.raters: dict[int, torch.Tensor] = {}  # layer -> bool [g] of the latest chunk, for inspection

    def observe(self, view: LayerView) -> None:
        if view.num_guide == 0:
            raise RuntimeError("sparsevlm needs the guide (the question) but none was given")
        n = view.num_chunk
        attn = guide_chunk_attention(view, self.query_block)  # [g, n]
        rated = raters(attn)
        score = attn[rated].sum(0)
        self.raters[view.layer] = rated.cpu()
        kept, m, c = recycled_counts(n, budget_tokens(self.plan.keep_ratio, n), self.recycle_ratio, self.cluster_size,
                                  self.cluster_count)
        order = torch.sort(score, descending=True, stable=True).indices
        keep = order[:kept].sort().values
        if c == 0:
            self.scores[view.layer] = LayerKeep(keep.cpu())
            return
        recycled = order[kept : kept + m]
        keys, values = view.chunk_keys[:, recycled].float(), view.chunk_values[:, recycled].float()
        assign = dpc_knn(keys.transpose(0, 1).reshape(m, -1), c)
        extra_k, extra_v = cluster_means(keys, values, assign, c)
        self.scores[view.layer] = LayerKeep(keep.cpu(), extra_keys=extra_k, extra_values=extra_v)

    def keeps(self, chunk: ChunkSpan):
        return [self.scores.pop(l) for l in range(self.plan.num_layers)]
