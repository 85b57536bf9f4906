"""FastVID: cut the video where the scene changes, keep each frame's salient tokens, merge the
rest of each segment into a few contextual tokens on its anchor frames.

Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models",
NeurIPS 2025, arXiv 2503.11187 (https://arxiv.org/abs/2503.11187). Follows the authors' code
(LunarShen/FastVID): by default their LLaVA-OneVision "core code" (``variant: onevision``),
optionally their Qwen2.5-VL port (``variant: qwen2_5_vl``); docs/methods.md lists the files.

Before prefill, on the video's LLM-space grid tokens ``x[t, p]`` (t a grid step: a "frame", T
frames of P tokens) and a budget of G grid tokens:

1. **DySeg**: frame features ``f_t`` = the frame's mean token; the video is cut after the
   ``c - 1`` lowest adjacent similarities ``cos(f_t, f_{t+1})`` and after every one below
   ``tau``, giving segments of consecutive frames;
2. ``R = floor(G / T)`` tokens per frame (their ``int(P * retention_ratio)``), of which
   ``C = int(d R)`` contextual and ``S = R - C`` salient;
3. **salient**: a frame's top-S tokens by the attention of a query at its mean token,
   ``softmax_p(<f_t, x[t, p]> / sqrt(D))``, fed as they are;
4. **contextual**: the anchor frames of a segment of L frames are every ``dtm_p``-th frame
   counted back from its last (the last is always one), A of them; each takes ``C L // A``
   anchor tokens, its top ones among its non-salient tokens by a DPC-kNN score
   (:func:`density_scores`). Every non-salient token of the segment joins, **in each anchor
   frame**, that frame's anchor token of highest cosine similarity (the anchors themselves
   included: each joins itself); an anchor becomes ``a x_a + (1 - a) mean(joined)``,
   ``a = max(1 / (count + 1), dtm_alpha)`` (:func:`merge`), fed at its own position
   (``plan.input_updates``). Where an anchor frame's count is exactly C (a segment of one frame;
   any at ``dtm_p`` 1, odd-length ones at ``dtm_p`` 2 with C = 1) only its own frame's tokens join
   it, as in their code.

``variant: qwen2_5_vl`` counts per segment instead: ``max(int(d R L), 1)`` contextual tokens
shared evenly by the anchor frames (the last one takes the remainder first), at most ``P // 2``
each; the rest of the segment's ``R L`` are salient, shared evenly by its frames. A frame whose
similarity to the next one in its segment is ``>= dyseg_ignore`` (a near duplicate) gets no
token (its tokens are still merged); the anchor frames are then counted among the others. An
anchor's own frame's anchors do not join it (the other frames' anchors do). Their script runs
it with ``dyseg_tau`` 0.84.

Below one token per frame (``G < T``, where the authors' code keeps nothing) the G tokens are
all contextual: shared by the segments by length, within a segment by its anchor frames.
Nothing is compressed in the language model.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .allocation import capped_counts, fit_grid
from .base import ChunkSpan, Method, VideoPlan

VARIANTS = ("onevision", "qwen2_5_vl")


def adjacent_similarity(frame_features: torch.Tensor) -> torch.Tensor:
    """``cos(f_t, f_{t+1})`` of frames ``[T, D]``: ``[T - 1]``."""
    return F.cosine_similarity(frame_features[:-1].float(), frame_features[1:].float(), dim=-1)


def dyseg(frame_features: torch.Tensor, c: int, tau: float) -> list[int]:
    """Segment lengths of the frames ``[T, D]``: cuts after the ``c - 1`` lowest transition
    similarities and after every one below ``tau`` (FastVID's DySeg)."""
    T = frame_features.shape[0]
    if T == 1:
        return [1]
    sim = adjacent_similarity(frame_features)  # [T - 1]
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
    i = torch.arange(n, device=x.device)
    denser = (density[:, None, :] > density[:, :, None]) | (
        (density[:, None, :] == density[:, :, None]) & (i[None, None, :] < i[None, :, None]))  # [T, i, j]: j denser than i
    far = dist.reshape(T, -1).max(-1).values[:, None, None]
    delta = torch.where(denser, dist, far.expand_as(dist)).min(-1).values
    return delta * density


def merge(anchors: torch.Tensor, pool: torch.Tensor, alpha: float) -> torch.Tensor:
    """Each token of ``pool [m, D]`` joins the anchor of ``anchors [A, D]`` of highest cosine
    similarity (the first on ties); anchor a becomes ``w x_a + (1 - w) mean(joined)``,
    ``w = max(1 / (count + 1), alpha)`` (itself when none joined): ``[A, D]``. Cosines choose, the
    features themselves are averaged."""
    if pool.shape[0] == 0:
        return anchors.clone()
    join = (F.normalize(pool, dim=-1) @ F.normalize(anchors, dim=-1).T).argmax(-1)  # [m]
    one_hot = F.one_hot(join, num_classes=anchors.shape[0]).to(pool.dtype)  # [m, A]
    count = one_hot.sum(0)[:, None]  # [A, 1]
    mean = (one_hot.T @ pool) / count.clamp(min=1)
    w = (1 / (count + 1)).clamp(min=alpha)
    return w * anchors + (1 - w) * mean


def anchor_offsets(length: int, p: int) -> list[int]:
    """A segment's anchor frames (offsets in it, ascending): every ``p``-th counted back from
    its last frame."""
    return [i for i in range(length) if (length - 1 - i) % p == 0]


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal integers, the first ones one larger."""
    return [total // parts + (i < total % parts) for i in range(parts)]


@dataclass
class FastVID(Method):
    """dyseg_c, dyseg_tau: DySeg's minimum segment count and similarity threshold. d: the
    contextual share of a frame's kept tokens (``C = int(d R)``). dtm_p: anchor frame step,
    counted back from a segment's last frame. dtm_alpha: the anchor's minimum weight in a merged
    token. k: DPC-kNN neighbours. variant: ``onevision`` (the authors' LLaVA-OneVision code) or
    ``qwen2_5_vl`` (their Qwen2.5-VL port). dyseg_ignore: the port's near-duplicate threshold."""

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
    variant: str = "onevision"
    dyseg_ignore: float = 0.95

    def __post_init__(self):
        if self.dyseg_c < 1:
            raise ValueError(f"dyseg_c must be >= 1, got {self.dyseg_c}")
        for name in ("dyseg_tau", "dyseg_ignore"):
            if not -1 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a cosine similarity in [-1, 1], got {getattr(self, name)}")
        if not 0 <= self.d <= 1:
            raise ValueError(f"d must be in [0, 1], got {self.d}")
        if self.dtm_p < 1 or self.k < 1:
            raise ValueError(f"dtm_p and k must be >= 1, got {self.dtm_p}, {self.k}")
        if not 0 <= self.dtm_alpha <= 1:
            raise ValueError(f"dtm_alpha must be in [0, 1], got {self.dtm_alpha}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid choices: {', '.join(VARIANTS)}")

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        if plan.keep_ratio >= 1:
            return
        idx = plan.grid_index()  # [T, P]
        x = plan.features[idx.to(plan.features.device)].float()  # [T, P, D]
        frames = x.mean(dim=1)
        self.segments = dyseg(frames, self.dyseg_c, self.dyseg_tau)
        self.similarity = adjacent_similarity(frames).cpu() if len(frames) > 1 else torch.zeros(0)
        attention = frame_attention(x).cpu()
        T = idx.shape[0]
        tried: dict[int, tuple] = {}  # by R = G // T (what the result depends on), by -G under one per frame

        def prune(G: int) -> torch.Tensor:
            key = G // T if G >= T else -G
            if key not in tried:
                tried[key] = self.prune(x, attention, G)
            return tried[key][0]

        plan.input_keep, G = fit_grid(plan, prune)  # (fit_grid's answer is one of the G it tried)
        _, self.salient, anchors, merged = tried[G // T if G >= T else -G]
        if anchors:
            index = torch.tensor([int(idx[t, p]) for t, p in anchors])
            order = torch.argsort(index)
            plan.input_updates = (index[order], torch.stack(merged)[order].to(plan.features.dtype))

    def counts(self, T: int, P: int, G: int) -> tuple[list[int], list[int], int]:
        """Per frame (salient, contextual) token counts for G grid tokens, and the contextual
        count at which an anchor frame merges its own frame only (-1: never)."""
        R = min(P, G // T)
        salient, context = [0] * T, [0] * T
        starts = [0, *itertools.accumulate(self.segments)][:-1]
        if R == 0:  # under one token per frame: all contextual, by segment length
            anchors = [anchor_offsets(L, self.dtm_p) for L in self.segments]
            totals = capped_counts(torch.tensor(self.segments, dtype=torch.float64),
                                   torch.tensor([len(a) * P for a in anchors]), G)
            for start, offs, total in zip(starts, anchors, totals.tolist()):
                for i, n in zip(reversed(offs), split_evenly(total, len(offs))):
                    context[start + i] = n
            return salient, context, -1
        if self.variant == "onevision":
            C = int(R * self.d)
            for start, L in zip(starts, self.segments):
                offs = anchor_offsets(L, self.dtm_p)
                for i in offs:
                    context[start + i] = C * L // len(offs)
            return [R - C] * T, context, C
        sim = self.similarity.tolist()
        for start, L in zip(starts, self.segments):  # qwen2_5_vl: per segment
            c_total = max(int(R * L * self.d), 1)
            s_total = R * L - c_total
            if L == 1:
                salient[start], context[start] = max(0, s_total), c_total
                continue
            kept = [start + i for i in range(L - 1) if sim[start + i] < self.dyseg_ignore] + [start + L - 1]
            per_anchor = split_evenly(c_total, -(-len(kept) // self.dtm_p))
            c_kept = [min(per_anchor[i // self.dtm_p], P // 2) if i % self.dtm_p == 0 else 0 for i in range(len(kept))][::-1]
            for t, s, c in zip(kept, split_evenly(s_total, len(kept)), c_kept):
                salient[t], context[t] = min(s, P - c), c
        return salient, context, -1

    def prune(self, x: torch.Tensor, attention: torch.Tensor, G: int):
        """FastVID on frames ``x [T, P, D]`` with salient scores ``attention [T, P]`` for at most
        G grid tokens: (kept bool ``[T, P]``, salient bool ``[T, P]``, anchor (frame, position)
        list, their merged embeddings)."""
        T, P = x.shape[:2]
        n_salient, n_context, own_frame = self.counts(T, P, G)
        order = torch.sort(attention, dim=-1, descending=True, stable=True).indices  # [T, P]
        salient = torch.zeros(T, P, dtype=torch.bool)
        for t, s in enumerate(n_salient):
            salient[t, order[t, :s]] = True
        keep = salient.clone()
        cand = [torch.nonzero(~salient[t]).flatten() for t in range(T)]  # non-salient positions
        score = self.anchor_scores(x, cand, [t for t in range(T) if min(n_context[t], len(cand[t])) > 0])
        anchors, merged = [], []
        start = 0
        for L in self.segments:
            frames = range(start, start + L)
            for t in frames:
                if t not in score:
                    continue
                a = cand[t][torch.topk(score[t], min(n_context[t], len(cand[t]))).indices]  # the frame's anchors
                if self.variant == "qwen2_5_vl":  # the segment's non-salient tokens but these anchors
                    pool = [(u, cand[u][~torch.isin(cand[u], a)] if u == t else cand[u]) for u in frames]
                elif n_context[t] == own_frame:  # their single-frame path
                    pool = [(t, cand[t])]
                else:
                    pool = [(u, cand[u]) for u in frames]
                tokens = torch.cat([x[u, c.to(x.device)] for u, c in pool])
                for p, m in zip(a.tolist(), merge(x[t, a.to(x.device)], tokens, self.dtm_alpha)):
                    keep[t, p] = True
                    anchors.append((t, p))
                    merged.append(m)
            start += L
        return keep, salient, anchors, merged

    def anchor_scores(self, x: torch.Tensor, cand: list[torch.Tensor], frames: list[int], block: int = 64):
        """:func:`density_scores` of the candidates ``x[t, cand[t]]`` of each of ``frames``:
        ``{t: [n_t]}`` on CPU, frames of equal candidate count batched, ``block`` at a time."""
        out = {}
        by_count: dict[int, list[int]] = {}
        for t in frames:
            by_count.setdefault(len(cand[t]), []).append(t)
        for ts in by_count.values():
            for a in range(0, len(ts), block):
                part = ts[a : a + block]
                pos = torch.stack([cand[t] for t in part]).to(x.device)  # [b, n]
                feats = torch.gather(x[part], 1, pos[..., None].expand(-1, -1, x.shape[-1]))  # [b, n, D]
                out.update(zip(part, density_scores(feats, self.k).cpu()))
        return out

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
