"""FastVID: cut the video where the scene changes, keep each frame's salient tokens, merge the
rest into a few contextual tokens per segment.

Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models",
arXiv 2503.11187 (https://arxiv.org/abs/2503.11187).

Before prefill, on the video's LLM-space grid tokens ``v[t, p]`` (t a grid step: a "frame"):

1. **DySeg**: frame features ``f_t`` = the step's mean token; transition similarities
   ``cos(f_t, f_{t+1})``; the video is cut after the ``c - 1`` lowest and after every one
   below ``tau`` (``dyseg_c`` 8, ``dyseg_tau`` 0.9), giving segments of consecutive frames;
2. per frame ``R = B / T`` tokens are kept (B the grid budget), ``S = int(d R)`` salient
   and ``R - S`` contextual (``d`` 0.4), the video's ``T (R - S)`` contextual tokens shared by the
   segments by length (largest remainder: a budget under one token per frame is still spent);
3. **salient** (attention token selection): the frame's top-S tokens by the attention of a
   query at the frame's mean token, ``softmax_p(<f_t, v[t, p]> / sqrt(D))``, fed as they are;
4. **contextual** (density-based token merging, on the frames' other tokens): a DPC-kNN density
   score per token of a frame, ``rho = exp(-mean of the k smallest squared distances / D)``
   (``k`` 4, distances ``||x - y|| / sqrt(D)``) times the distance to the nearest denser token;
   anchor frames every ``dtm_p`` (4) frames of a segment share the segment's contextual tokens
   (the first ones the remainder) and keep their top tokens by that score (anchor tokens); every other
   token of the segment joins the anchor token of highest cosine similarity; an anchor token
   becomes ``alpha x_a + (1 - alpha) mean(joined)``, ``alpha = max(1 / (count + 1), dtm_alpha)``
   (``dtm_alpha`` 0.6), fed at the anchor token's position (``plan.input_updates``).

Nothing is compressed in the language model. Adaptations, and where they differ from the
authors' code, are listed in docs/methods.md (the salient score's query, the density's
nearest neighbours, the merged tokens' scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .allocation import capped_counts, fit_grid
from .base import ChunkSpan, Method, VideoPlan


def dyseg(frame_features: torch.Tensor, c: int, tau: float) -> list[int]:
    """Segment lengths of the frames ``[T, D]``: cuts after the ``c - 1`` lowest transition
    similarities and after every one below ``tau`` (FastVID's DySeg)."""
    T = frame_features.shape[0]
    if T == 1:
        return [1]
    sim = F.cosine_similarity(frame_features[:-1].float(), frame_features[1:].float(), dim=-1)  # [T - 1]
    cuts = set(torch.topk(sim, k=min(max(0, c - 1), T - 1), largest=False).indices.tolist())
    cuts |= set(torch.nonzero(sim < tau).flatten().tolist())
    bounds = [-1] + sorted(cuts) + [T - 1]
    return [b - a for a, b in zip(bounds, bounds[1:]) if b > a]


def frame_attention(tokens: torch.Tensor) -> torch.Tensor:
    """``softmax_p(<mean_p x[t, p], x[t, p]> / sqrt(D))`` of frames ``x [T, P, D]``: ``[T, P]``."""
    q = tokens.float().mean(dim=1, keepdim=True)  # [T, 1, D]
    return torch.softmax((q * tokens.float()).sum(-1) / math.sqrt(tokens.shape[-1]), dim=-1)


def density_scores(x: torch.Tensor, k: int = 4) -> torch.Tensor:
    """DPC-kNN score of each token of each frame ``x [T, n, D]``: ``[T, n]``. Distances
    ``||x_i - x_j|| / sqrt(D)``; density ``exp(-mean of the k smallest squared distances)`` (the
    token itself included, at distance 0); delta = the distance to the nearest token of higher
    density (ties: the lower index counts as denser), the largest distance of the frame for the
    densest; score = density x delta."""
    T, n, D = x.shape
    dist = torch.cdist(x.float(), x.float()) / math.sqrt(D)  # [T, n, n]
    near = torch.topk(dist, k=min(k, n), dim=-1, largest=False).values
    density = torch.exp(-(near**2).mean(-1))  # [T, n]
    i = torch.arange(n)
    denser = (density[:, None, :] > density[:, :, None]) | (
        (density[:, None, :] == density[:, :, None]) & (i[None, None, :] < i[None, :, None]))  # [T, i, j]: j denser than i
    far = dist.reshape(T, -1).max(-1).values[:, None, None]
    delta = torch.where(denser, dist, far.expand_as(dist)).min(-1).values
    return delta * density


@dataclass
class FastVID(Method):
    """dyseg_c, dyseg_tau: DySeg's minimum segment count and similarity threshold. d: the
    salient share of a frame's kept tokens. dtm_p: anchor frame step. dtm_alpha: the anchor's
    minimum weight in a merged token. k: DPC-kNN neighbours."""

    name = "fastvid"
    uses_guide = False
    question_aware = False
    observes = False
    dyseg_c: int = 8
    dyseg_tau: float = 0.9
    d: float = 0.4
    dtm_p: int = 4
    dtm_alpha: float = 0.6
    k: int = 4

    def __post_init__(self):
        if self.dyseg_c < 1:
            raise ValueError(f"dyseg_c must be >= 1, got {self.dyseg_c}")
        if not -1 <= self.dyseg_tau <= 1:
            raise ValueError(f"dyseg_tau must be a cosine similarity in [-1, 1], got {self.dyseg_tau}")
        if not 0 <= self.d <= 1:
            raise ValueError(f"d must be in [0, 1], got {self.d}")
        if self.dtm_p < 1 or self.k < 1:
            raise ValueError(f"dtm_p and k must be >= 1, got {self.dtm_p}, {self.k}")
        if not 0 <= self.dtm_alpha <= 1:
            raise ValueError(f"dtm_alpha must be in [0, 1], got {self.dtm_alpha}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        if plan.keep_ratio >= 1:
            return
        idx = plan.grid_index()  # [T, P]
        T, P = idx.shape
        x = plan.features[idx.to(plan.features.device)].float()  # [T, P, D]
        self.segments = dyseg(x.mean(dim=1), self.dyseg_c, self.dyseg_tau)
        attention = frame_attention(x)
        tried: dict[int, tuple] = {}

        def prune(G: int) -> torch.Tensor:
            retained = min(float(P), G / T)  # per frame; below 1 the segments' anchors share it
            salient = int(self.d * retained)
            keep = torch.zeros(T, P, dtype=torch.bool)
            if salient:
                keep.scatter_(1, torch.topk(attention, k=salient, dim=-1).indices.cpu(), True)
            salient_mask = keep.clone()
            anchors, merged = self._merge(x, ~keep, retained - salient, keep)
            tried[G] = (salient_mask, anchors, merged)
            return keep

        plan.input_keep, G = fit_grid(plan, prune)  # (fit_grid's answer is one of the G it tried)
        self.salient, anchors, merged = tried[G]
        if anchors:
            index = torch.tensor([int(idx[t, p]) for t, p in anchors])
            order = torch.argsort(index)
            plan.input_updates = (index[order], torch.stack(merged)[order].to(plan.features.dtype))

    def _merge(self, x: torch.Tensor, rest: torch.Tensor, contextual: float, keep: torch.Tensor):
        """Density-based token merging per segment (``contextual`` tokens per frame: the video's
        ``round(T contextual)`` shared by the segments in proportion to their lengths, by largest
        remainder, then by a segment's anchor frames, the first ones taking the remainder); marks
        the anchor tokens in ``keep`` and returns their (frame, position) and merged embeddings."""
        T, P, D = x.shape
        anchors, merged = [], []
        if contextual <= 0 or not rest.any():
            return anchors, merged
        n_rest = int(rest[0].sum())
        cand = torch.nonzero(rest).reshape(T, n_rest, 2)[..., 1]  # [T, n]: positions of each frame's candidates
        feats = torch.gather(x, 1, cand.to(x.device)[..., None].expand(-1, -1, D))  # [T, n, D]
        score = density_scores(feats, self.k).cpu()
        lengths = torch.tensor(self.segments)
        n_anchors = (lengths + self.dtm_p - 1) // self.dtm_p
        totals = capped_counts(lengths.double(), n_anchors * n_rest, int(math.floor(T * contextual + 0.5)))
        start = 0
        for length, total in zip(self.segments, totals.tolist()):
            frames = list(range(start, start + length))
            anchor_frames = frames[:: self.dtm_p]
            share = [min(n_rest, total // len(anchor_frames) + (i < total % len(anchor_frames)))
                     for i in range(len(anchor_frames))]
            if sum(share) > 0:
                tokens = feats[start : start + length].reshape(-1, D)  # the segment's candidates
                a_pos = [(t, int(cand[t, j])) for t, k in zip(anchor_frames, share) if k
                         for j in torch.topk(score[t], k).indices.tolist()]
                a_feat = torch.stack([x[t, p] for t, p in a_pos])  # [A, D]
                join = (F.normalize(tokens, dim=-1) @ F.normalize(a_feat, dim=-1).T).argmax(-1)  # [m]
                one_hot = F.one_hot(join, num_classes=len(a_pos)).to(tokens.dtype)  # [m, A]
                count = one_hot.sum(0)[:, None]
                mean = (one_hot.T @ tokens) / count.clamp(min=1)
                alpha = (1 / (count + 1)).clamp(min=self.dtm_alpha)
                for (t, p), m in zip(a_pos, alpha * a_feat + (1 - alpha) * mean):
                    keep[t, p] = True
                    anchors.append((t, p))
                    merged.append(m)
            start += length
        return anchors, merged

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
