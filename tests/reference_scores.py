"""Independent recomputations of each score-based method's token scores, from the q/k/v the
engine showed the method (captured by ``conftest.Recorder``), written from the method's
definition in docs/methods.md and not from its code.

``REFERENCE_SCORES[name](views, rec, chunk) -> list`` gives, per layer, a score ``[n]`` over
the chunk's tokens (``-inf`` marks tokens the method may not keep in that layer, e.g. outside
PyramidDrop's previous stage) or None (that layer's selection is not a top-k of a score).
``views`` maps layer -> ``Captured`` for chunk ``chunk``; ``rec`` is the Recorder (its
``inner`` is the method, its ``plan`` the video plan). The shared all-methods test checks that
every layer's kept tokens are exactly the top-|kept| of that score.
"""

from __future__ import annotations

import torch

from retake.rope import unapply_rope

REFERENCE_SCORES: dict = {}


def reference(name):
    def register(fn):
        REFERENCE_SCORES[name] = fn
        return fn

    return register


def guide_queries(v):
    return v.query[:, v.n :]


def chunk_queries(v):
    return v.query[:, : v.n]


@reference("adaretake")
def adaretake_scores(views, rec, chunk):
    # (1/H) sum_h sum_{i in guide} softmax_j(q_i k_j), softmax over the chunk's keys
    return [views[l].attention(guide_queries(views[l]), views[l].chunk_keys).sum(1).mean(0) for l in sorted(views)]


@reference("retake")
def retake_scores(views, rec, chunk):
    m, span = rec.inner, rec.plan.chunks[chunk]
    fed = m.fed_tokens[span.token_start : span.token_end]
    pivot = m.pivot_tokens[span.token_start : span.token_end][fed].double()
    out = []
    for l in sorted(views):
        v = views[l]
        cos, sin = v.cos[: v.n].double(), v.sin[: v.n].double()
        q = unapply_rope(chunk_queries(v).double(), cos, sin)
        k = unapply_rope(v.chunk_keys.double(), cos, sin)
        out.append(v.attention(q, k).sum(1).mean(0) + m.pivot_bonus * pivot)
    return out


# -- fastv, pyramiddrop, snapkv, pyramidkv ---------------------------------------------------

# -- vlcache, fitprune, h2o, adakv -----------------------------------------------------------

# -- lookm, sparsevlm ------------------------------------------------------------------------
