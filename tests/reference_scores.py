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

def last_queries_to_chunk(v, w):
    """Real attention of the input's last ``w`` queries (softmax over the layer's whole cache
    plus the causal input; query i of the w sees key j iff ``j <= K - w + i``), float64, on the
    chunk's columns: ``[H, w, n]``."""
    K = v.key.shape[1]
    q = v.query[:, -w:].double()
    k = v.key.double().repeat_interleave(q.shape[0] // v.key.shape[0], 0)
    visible = (torch.arange(K)[None, :] <= K - w + torch.arange(w)[:, None])[None] & v.held(q.shape[0])[:, None, :]
    att = torch.softmax((q @ k.transpose(-1, -2) * v.scaling).masked_fill(~visible, float("-inf")), -1)
    return att[:, :, v.cache_len : v.cache_len + v.n]


def last_token_score(v):
    # FastV / PyramidDrop: the guide's last token's attention to the chunk, head mean
    return last_queries_to_chunk(v, 1)[:, 0].mean(0)


@reference("fastv")
def fastv_scores(views, rec, chunk):
    # the K-th layer's (0-based K - 1) score ranks the tokens of every layer
    return [last_token_score(views[rec.inner.k - 1])] * len(views)


@reference("pyramiddrop")
def pyramiddrop_scores(views, rec, chunk):
    # stage s = layers [s L / S, (s+1) L / S); its score from its first layer; tokens outside the
    # previous stage's set (recomputed here: the top-|kept| of that stage's score) are -inf
    L, S = len(views), rec.inner.stages
    out, eligible = [], torch.ones(views[0].n, dtype=torch.bool)
    for s in range(S):
        a, b = s * L // S, (s + 1) * L // S
        score = last_token_score(views[a]).masked_fill(~eligible, float("-inf"))
        out += [score] * (b - a)
        eligible = torch.zeros_like(eligible)
        eligible[score.topk(int(rec.selected[chunk][a].numel())).indices] = True
    return out


@reference("snapkv")
@reference("pyramidkv")
def snapkv_scores(views, rec, chunk):
    # window = the guide's last min(window, g) queries, summed; pooled per head over the chunk's
    # tokens (zero padding, stride 1; avg divides by the kernel size); head mean
    m, out = rec.inner, []
    for l in sorted(views):
        v = views[l]
        a = last_queries_to_chunk(v, min(m.window, v.g)).sum(1)  # [H, n]
        p = m.kernel_size // 2
        fill = torch.full((a.shape[0], p), 0.0 if m.pooling == "avgpool" else float("-inf"), dtype=a.dtype)
        windows = torch.cat([fill, a, fill], 1).unfold(1, m.kernel_size, 1)  # [H, n, kernel]
        pooled = windows.mean(-1) if m.pooling == "avgpool" else windows.amax(-1)
        out.append(per_kv_head(pooled, v, m))
    return out


def per_kv_head(s, v, m):
    """``[H, n]`` per query head -> ``[H_kv, n]``, the mean over each KV head's query heads
    (query head h reads KV head h // (H / H_kv)); one row ``[n]``, the mean over all, when the
    method keeps one set per layer."""
    Hkv = v.key.shape[0]
    g = s.reshape(Hkv, s.shape[0] // Hkv, -1).mean(1)
    return g.mean(0) if m.head_selection == "shared" else g


# -- vlcache, fitprune, h2o, adakv -----------------------------------------------------------

def causal_rows(v, lo, hi):
    """The layer's real attention for input rows [lo, hi): softmax over the whole cache with the
    bottom-right causal mask, float64 ``[H, hi - lo, k]``."""
    nq, nk = v.n + v.g, v.key.shape[1]
    k = v.key.double().repeat_interleave(v.query.shape[0] // v.key.shape[0], 0)
    logits = v.query[:, lo:hi].double() @ k.transpose(-1, -2) * v.scaling
    visible = (torch.arange(nk)[None, :] <= nk - nq + torch.arange(lo, hi)[:, None])[None] & v.held(k.shape[0])[:, None, :]
    return torch.softmax(logits.masked_fill(~visible, float("-inf")), -1)


def chunk_cols(v, att):
    return att[..., v.cache_len : v.cache_len + v.n]


def kept_count(rec, n):
    return min(n, max(1, int(rec.plan.keep_ratio * n + 0.5)))


@reference("vlcache")
def vlcache_scores(views, rec, chunk):
    # column sums of the guide's real attention over the chunk's keys, mean over heads
    return [chunk_cols(v, causal_rows(v, v.n, v.n + v.g)).sum(1).mean(0) for v in (views[l] for l in sorted(views))]


@reference("fitprune")
def fitprune_scores(views, rec, chunk):
    # cross (guide rows) x self (chunk rows), each the sum over rows of the head-max attention
    out = []
    for l in sorted(views):
        v = views[l]
        cross = chunk_cols(v, causal_rows(v, v.n, v.n + v.g)).amax(0).sum(0)
        self_mass = chunk_cols(v, causal_rows(v, 0, v.n)).amax(0).sum(0)
        out.append(cross * self_mass)
    return out


@reference("h2o")
def h2o_scores(views, rec, chunk):
    # attention received from every input row, mean over heads; the recent window ranks first
    out = []
    for l in sorted(views):
        v = views[l]
        s = chunk_cols(v, causal_rows(v, 0, v.n + v.g)).sum(1)  # [H, n]
        if rec.inner.normalize:  # divided by the input queries that see the token
            s = s / torch.arange(v.n + v.g, v.g, -1, dtype=s.dtype)
        s = per_kv_head(s, v, rec.inner)
        recent = int(rec.inner.recent_share * kept_count(rec, v.n))
        if recent:
            s[..., v.n - recent :] = float("inf")
        out.append(s)
    return out


@reference("adakv")
def adakv_scores(views, rec, chunk):
    # SnapKV per KV head (window rows, mean over rows and the group's heads, pooled), then
    # Ada-KV head budgets; key = 2 * (heads voting for the token) + max over heads
    m, out = rec.inner, []
    for l in sorted(views):
        v = views[l]
        w = min(m.window, v.g)
        H, Hkv = v.query.shape[0], v.key.shape[0]
        s = chunk_cols(v, causal_rows(v, v.n + v.g - w, v.n + v.g)).mean(1).reshape(Hkv, H // Hkv, v.n).mean(1)
        pad = m.kernel_size // 2
        if m.pooling == "avgpool":  # zero padding counted, as torch's avg_pool1d
            padded = torch.nn.functional.pad(s, (pad, pad))
            s = torch.stack([padded[:, j : j + m.kernel_size].sum(1) / m.kernel_size for j in range(v.n)], 1)
        else:
            padded = torch.nn.functional.pad(s, (pad, pad), value=float("-inf"))
            s = torch.stack([padded[:, j : j + m.kernel_size].amax(1) for j in range(v.n)], 1)
        if m.head_selection == "per_head":  # each head its own top (its count: tests/test_adakv.py)
            out.append(s)
            continue
        b = kept_count(rec, v.n)
        flat = torch.argsort(s.reshape(-1), descending=True)[: Hkv * b] // v.n
        votes = torch.zeros(v.n, dtype=torch.float64)
        for h in range(Hkv):
            c = int((flat == h).sum())
            bh = min(v.n, round((1 - m.floor_alpha) * c + int(m.floor_alpha * b)))  # halves to even
            votes[torch.argsort(s[h], descending=True)[:bh]] += 1
        out.append(2 * votes + s.amax(0))
    return out

@reference("knorm")
def knorm_scores(views, rec, chunk):
    # minus the L2 norm of each chunk key, per KV head (or the mean over heads, shared)
    out = []
    for l in sorted(views):
        v = views[l]
        s = -v.chunk_keys.double().norm(dim=-1)  # [H_kv, n]
        out.append(s.mean(0) if rec.inner.head_selection == "shared" else s)
    return out


# -- lookm, sparsevlm ------------------------------------------------------------------------

def input_attention_over_cache(v, q):
    """The layer's real attention of the input's last ``q.shape[1]`` queries, float64:
    softmax over the whole cache plus the causal input (query i of nq sees key j iff
    ``j <= K - nq + i``), KV heads expanded: ``[H, nq, K]``."""
    K, nq = v.key.shape[1], q.shape[1]
    k = v.key.double().repeat_interleave(q.shape[0] // v.key.shape[0], 0)
    logits = q.double() @ k.transpose(-1, -2) * v.scaling
    visible = (torch.arange(K)[None, :] <= K - nq + torch.arange(nq)[:, None])[None] & v.held(k.shape[0])[:, None, :]
    return torch.softmax(logits.masked_fill(~visible, float("-inf")), -1)


@reference("lookm")
def lookm_scores(views, rec, chunk):
    # H2O: attention each chunk token receives from every input query (chunk + guide), head mean
    out = []
    for l in sorted(views):
        v = views[l]
        a = input_attention_over_cache(v, v.query)[:, :, v.cache_len : v.cache_len + v.n]
        out.append(a.sum(1).mean(0))
    return out


def sparsevlm_raters(v):
    """Head-mean guide -> chunk attention ``[g, n]`` and the raters: guide tokens whose mean
    attention to the chunk exceeds the guide's mean (all of them if none does)."""
    a = input_attention_over_cache(v, guide_queries(v))[:, :, v.cache_len : v.cache_len + v.n].mean(0)
    rel = a.mean(1)
    raters = rel > rel.mean()
    return a, raters if raters.any() else torch.ones_like(raters)


@reference("sparsevlm")
def sparsevlm_scores(views, rec, chunk):
    out = []
    for l in sorted(views):
        a, raters = sparsevlm_raters(views[l])
        out.append(a[raters].sum(0))
    return out


# -- question-unknown, streaming: scores over the layer's video entries (LayerKeep scope "video")

def video_entry_grid(plan, offsets):
    """(grid step, grid position or -1) of each span offset, from ``plan.step_token_offsets`` and
    ``plan.grid_index()``."""
    grid = plan.grid_index()
    at = {int(o): p for row in grid.tolist() for p, o in enumerate(row)}
    off = plan.step_token_offsets
    steps = [max(s for s in range(len(off) - 1) if off[s] <= o) for o in offsets]
    return torch.tensor(steps), torch.tensor([at.get(int(o), -1) for o in offsets])


@reference("infinipot_v")
def infinipot_v_scores(views, rec, chunk):
    # per KV head (or, shared, over the head mean): score = ||v|| + 1e6 for the query entries
    # (the newest max(1, int(query_ratio T / P)) steps) and the tar_budget - |query| best by
    # TaR, where TaR(e) = -mean_{query j at e's grid position} cos(k_e, k_j); nothing
    # compressed while the layer holds <= cap entries. Each head's video entries are tracked
    # from the method's own earlier selections (rec.selected).
    m, plan = rec.inner, rec.plan
    span = plan.chunks[chunk]
    cap = m.cap if m.cap is not None else plan.max_context - plan.num_text_tokens
    held = rec.__dict__.setdefault("ref_held", {})
    shared = m.head_selection == "shared"
    out = []
    for l in sorted(views):
        v = views[l]
        rows = 1 if shared else v.key.shape[0]
        offs = [o + list(range(span.token_start, span.token_end)) for o in held.get(l, [[]] * rows)]
        keep = rec.selected[chunk][l]
        if len(offs[0]) <= cap:
            assert keep is None, "compressed below the cap"
            held[l] = offs
            out.append(None)
            continue
        scores = []
        for h in range(rows):
            T, P = len(offs[h]), plan.tokens_per_step
            steps, pos = video_entry_grid(plan, offs[h])
            query = steps > int(steps.max()) - max(1, int(m.query_ratio * T / P))
            k = (v.video_keys if shared else v.video_keys[h : h + 1]).double()
            kn = k / k.norm(dim=-1, keepdim=True)
            cos = kn @ kn.transpose(-1, -2)  # [heads, T, T]
            partner = query[None, :] & (pos[None, :] == pos[:, None]) & (pos[:, None] >= 0)  # [e, j]
            n_p = partner.sum(1)
            tar = -((cos * partner).sum(-1) / n_p.clamp(min=1)).mean(0)
            tar[(n_p == 0) | query] = float("-inf")
            forced = query.clone()
            extra = min(max(0, cap - round((1 - m.tar_ratio) * cap) - int(query.sum())), int(torch.isfinite(tar).sum()))
            if extra and m.tar_ratio > 0:
                forced[tar.topk(extra).indices] = True
            vals = v.video_values if shared else v.video_values[h : h + 1]
            scores.append(vals.double().norm(dim=-1).mean(0) + 1e6 * forced)
        out.append(scores[0] if shared else torch.stack(scores))
        held[l] = [[offs[h][i] for i in keep.head_index(h, rows).tolist()] for h in range(rows)]
    return out


@reference("streammem")
def streammem_scores(views, rec, chunk):
    # the proxy queries' attention over the layer's video entries (softmax over those), mean
    # over heads and proxy tokens; its top entries are kept next to the chunk's frame prototypes
    out = []
    for l in sorted(views):
        v = views[l]
        keep = rec.selected[chunk][l]
        out.append(None if keep is None else v.attention(guide_queries(v), v.video_keys).mean((0, 1)))
    return out


# -- pre-LLM and two-pass selectors: scores over the video's tokens --------------------------
#
# ``REFERENCE_INPUT_SCORES[name](rec) -> list of (span offsets [n], score [n])`` groups: in each
# group, the tokens the method fed (``rec.input_keep``) must be exactly the top-|fed| by score.
# Written from docs/methods.md, not from the methods' code.

REFERENCE_INPUT_SCORES: dict = {}


def input_reference(name):
    def register(fn):
        REFERENCE_INPUT_SCORES[name] = fn
        return fn

    return register


def grid_tokens(plan):
    return plan.grid_index()  # [T, P] span offsets


@input_reference("evs")
def evs_scores(rec):
    # 1 - cos with the same position one step earlier over the whole video; the first step first
    idx = grid_tokens(rec.plan)
    v = rec.plan.features[idx].double()
    d = torch.full(idx.shape, float("inf"), dtype=torch.float64)
    d[1:] = 1 - torch.nn.functional.cosine_similarity(v[1:], v[:-1], dim=-1)
    return [(idx.reshape(-1), d.reshape(-1))]


@input_reference("vidcom2")
def vidcom2_reference(rec):
    # per frame: the tokens least like the video centre and their frame centre (multi-scale
    # Gaussian on the lowest-variance half of the channels, L2-normalised), lowest first
    idx = grid_tokens(rec.plan)
    x = rec.plan.features[idx].double()  # [T, P, D]
    T, P, D = x.shape
    var = x.reshape(-1, D).var(0, unbiased=False)
    x = x[..., var.argsort()[: D // 2]]
    x = x / x.norm(dim=-1, keepdim=True)

    def g(c):
        dist = ((x - c) ** 2).sum(-1)
        return sum(torch.exp(-dist / (2 * 2.0**k)) for k in range(-3, 2))

    score = -(g(x.mean((0, 1), keepdim=True)) + g(x.mean(1, keepdim=True)))
    return [(idx[t], score[t]) for t in range(T)]


def guide_max_attention(v):
    # max over heads and guide queries of the guide's real attention (causal over the guide) to
    # the group's tokens
    K = v.key.shape[1]
    rows = torch.arange(v.n, v.n + v.g)
    k = v.key.double().repeat_interleave(v.query.shape[0] // v.key.shape[0], 0)
    logits = v.query[:, rows].double() @ k.transpose(-1, -2) * v.scaling
    visible = torch.arange(K)[None, :] <= K - (v.n + v.g) + rows[:, None]
    att = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1)
    cols = att[:, :, v.cache_len : v.cache_len + v.n]
    return cols.amax(dim=(0, 1)) if rec_aggregate(v) == "max" else cols.mean(dim=(0, 1))


def rec_aggregate(v):
    return _AGGREGATE[0]


_AGGREGATE = ["max"]


@input_reference("flexselect")
@input_reference("adaptoken")
def reference_layer_scores(rec):
    # each scoring group ranked by its own reference-layer attention
    m = rec.inner
    _AGGREGATE[0] = m.aggregate
    out = []
    for g, views in rec.scoring_views.items():
        group = rec.groups[g]
        grid = torch.zeros(rec.plan.num_video_tokens, dtype=torch.bool)
        grid[grid_tokens(rec.plan).reshape(-1)] = True
        member = grid[group.tokens]
        out.append((group.tokens[member], guide_max_attention(views[m.layer])[member]))
    return out


@input_reference("fastvid")
def fastvid_scores(rec):
    # per frame, two selections: the salient tokens are the top of the frame attention (a query
    # at the frame's mean token) among the frame's tokens but its anchors; the anchors (contextual
    # tokens) are the top DPC-kNN scores among the frame's non-salient tokens
    idx = grid_tokens(rec.plan)
    x = rec.plan.features[idx].double()  # [T, P, D]
    D = x.shape[-1]
    att = torch.softmax((x.mean(1, keepdim=True) * x).sum(-1) / D**0.5, -1)  # [T, P]
    out = []
    for t in range(idx.shape[0]):
        salient = rec.inner.salient[t]
        anchors = rec.input_keep[idx[t]] & ~salient
        out.append((idx[t][~anchors], att[t][~anchors]))
        rest = x[t][~salient]
        dist = torch.cdist(rest, rest) / D**0.5
        rho = torch.exp(-(dist.sort(dim=1).values[:, : rec.inner.k] ** 2).mean(1))
        n = rest.shape[0]
        earlier = torch.arange(n)[None, :] < torch.arange(n)[:, None]
        denser = (rho[None, :] > rho[:, None]) | ((rho[None, :] == rho[:, None]) & earlier)  # [i, j]: j denser than i
        delta = torch.where(denser, dist, torch.full_like(dist, float("inf"))).min(1).values
        delta = torch.where(torch.isinf(delta), dist.max(), delta)
        out.append((idx[t][~salient], rho * delta))
    return out
