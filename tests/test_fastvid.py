"""FastVID against the authors' code (LunarShen/FastVID): hand cases for what their code
computes (the contextual share d, anchor frames counted from a segment's end, a token merged
into its nearest anchor in every anchor frame, the Qwen2.5-VL port's counts and merge), and
agreement with a re-statement of their per-segment loops written here from reading their code;
then through the real engine (tests/test_all_methods.py)."""

from __future__ import annotations

import math

import pytest
import torch

from retake.methods import get_method
from retake.methods.allocation import input_budget
from retake.methods.fastvid import FastVID, density_scores, dyseg, frame_attention
from tests_helpers import plan_of

E = torch.eye(3)


def one_segment(**params) -> FastVID:
    return get_method("fastvid", dyseg_c=1, dyseg_tau=-1.0, **params)


# -- DySeg and the density score -----------------------------------------------------------

def test_dyseg_cuts_at_the_lowest_similarities_and_below_tau():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.0, 1.0], [0.7, 0.7], [0.7, 0.71]])
    # similarities: ~1, 0.01, 1, 0.707, ~1 -> c = 2 cuts after frame 1 (the lowest); tau 0.8 also after frame 3
    assert dyseg(f, c=2, tau=0.8) == [2, 2, 2]
    assert dyseg(f, c=2, tau=0.5) == [2, 4]
    assert dyseg(f, c=1, tau=-1.0) == [6]
    assert dyseg(f[:1], c=8, tau=0.9) == [1]


def test_density_scores_by_hand():
    """Three tokens in one frame, 1-D: 0, 0.1, 5 (D = 1, k = 2: the 2 *nearest*, the token itself
    included). Densities: 0 and 0.1 share exp(-0.005); 5 has exp(-(4.9^2)/2). The densest (the
    lower index of the tie) gets the largest distance; the others their distance to it."""
    x = torch.tensor([[[0.0], [0.1], [5.0]]])
    s = density_scores(x, k=2)[0]
    rho = [math.exp(-(0.1**2) / 2), math.exp(-(0.1**2) / 2), math.exp(-(4.9**2) / 2)]
    assert s.tolist() == pytest.approx([5.0 * rho[0], 0.1 * rho[1], 4.9 * rho[2]], rel=1e-5)


# -- the LLaVA-OneVision code (the default) ------------------------------------------------

def test_d_is_the_contextual_share():
    """Their ``frame_salient_num = R - int(R d)``: one frame of 10 tokens, budget 5, d = 0.4 ->
    int(2.0) = 2 contextual (anchor) tokens and 3 salient, the frame attention's top 3."""
    plan = plan_of(steps=1, per_step=10, r=0.5, hidden=4)
    m = one_segment(d=0.4)
    m.begin(plan)
    att = frame_attention(plan.features[plan.grid_index()])[0]
    assert torch.nonzero(m.salient[0]).flatten().tolist() == sorted(att.topk(3).indices.tolist())
    assert int(plan.input_keep.sum()) == 5 and len(plan.input_updates[0]) == 2
    assert m.counts(1, 10, 7) == ([5], [2], 2)  # R = 7: int(2.8) = 2 contextual, 5 salient


def test_anchor_frames_are_counted_from_the_segment_end():
    """One segment of 6 frames, dtm_p = 4: anchor frames 5 and 1 (the last frame always is one),
    not 0 and 4. R = 2, d = 0.5: 1 salient per frame; each anchor frame takes C L / A = 1 x 6 / 2 = 3."""
    plan = plan_of(steps=6, per_step=8, r=0.25, hidden=4)
    m = one_segment(d=0.5, dtm_p=4)
    m.begin(plan)
    assert plan.input_keep[plan.grid_index()].sum(1).tolist() == [1, 4, 1, 1, 1, 4]
    m.segments = [6, 1]  # R = 5, C = 2: the 6-frame segment's anchors 1 and 5 take 2 x 6 / 2; a lone frame C
    assert m.counts(7, 10, 35) == ([3] * 7, [0, 6, 0, 0, 0, 6, 2], 2)


def five_frames() -> torch.Tensor:
    """Frame t: tokens (t+1) e1, (t+1) e2, 10 e3; the frame attention's top token is 10 e3."""
    return torch.stack([torch.stack([(t + 1) * E[0], (t + 1) * E[1], 10 * E[2]]) for t in range(5)]).reshape(15, 3)


def test_every_token_merges_into_its_nearest_anchor_in_every_anchor_frame():
    """5 frames in one segment, dtm_p = 4: anchor frames 0 and 4. R = 2, d = 0.5: 10 e3 salient
    in every frame; the other two tokens of frames 0 and 4 are the anchors (C L / A = 2). Every
    e1 token of the segment, 1..5 e1, joins frame 0's e1 anchor *and* frame 4's:
    count 5, weight max(1/6, 0.6) = 0.6, mean 3 e1 -> 0.6 + 1.2 = 1.8 e1 and 3 + 1.2 = 4.2 e1."""
    plan = plan_of(steps=5, per_step=3, r=10 / 15, features=five_frames())
    m = one_segment(d=0.5, dtm_p=4)
    m.begin(plan)
    index, embeds = plan.input_updates
    assert index.tolist() == [0, 1, 12, 13]
    assert torch.allclose(embeds, torch.stack([1.8 * E[0], 1.8 * E[1], 4.2 * E[0], 4.2 * E[1]]))
    assert plan.input_keep.tolist() == [True, True, True] + [False, False, True] * 3 + [True, True, True]


def test_an_anchor_frame_with_only_its_own_share_merges_its_own_frame():
    """dtm_p = 1: every frame of the segment is an anchor frame with C L / L = C tokens, which
    their code sends down its single-frame path: a frame's tokens join its own anchors only.
    R = 1, d = 1: one anchor per frame (its top density score), joined by its frame's 3 tokens
    (itself included): 0.6 x_a + 0.4 mean(frame), not the mean of the segment's 6."""
    plan = plan_of(steps=2, per_step=3, r=2 / 6, hidden=4)
    one_segment(d=1.0, dtm_p=1).begin(plan)
    x = plan.features.reshape(2, 3, 4)
    anchors = [t * 3 + int(density_scores(x[t][None])[0].argmax()) for t in range(2)]
    index, embeds = plan.input_updates
    assert index.tolist() == anchors
    for t, a in enumerate(anchors):
        assert torch.allclose(embeds[t], 0.6 * plan.features[a] + 0.4 * x[t].mean(0))


def test_merge_includes_the_anchor_itself_but_the_port_leaves_it_out():
    """One frame of 6 tokens (D = 2), budget 3: 2 salient (tokens 0, 1 by the given attention),
    1 anchor. With k = 1 every density is 1, so the first candidate (token 2, the largest
    distance) is the anchor. The other candidates (0,2) (0,3) (0,4) join it. LLaVA-OneVision's
    code counts the anchor among the joined: 0.6 (0,1) + 0.4 mean((0,1),(0,2),(0,3),(0,4)) = (0,1.6);
    the Qwen2.5-VL port does not: 0.6 (0,1) + 0.4 (0,3) = (0,1.8)."""
    x = torch.tensor([[[5.0, 0.0], [6.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]]])
    att = torch.tensor([[0.5, 0.4, 0.03, 0.03, 0.02, 0.02]])
    for variant, expected in (("onevision", 1.6), ("qwen2_5_vl", 1.8)):
        m = one_segment(k=1, variant=variant)
        m.segments, m.similarity = [1], torch.zeros(0)
        keep, salient, anchors, merged = m.prune(x, att, 3)
        assert salient[0].tolist() == [True, True, False, False, False, False]
        assert anchors == [(0, 2)] and keep[0].tolist() == [True, True, True, False, False, False]
        assert torch.allclose(merged[0], torch.tensor([0.0, expected]))


# -- the Qwen2.5-VL port -------------------------------------------------------------------

def test_port_counts_by_hand():
    m = get_method("fastvid", variant="qwen2_5_vl")
    # 4 frames, frame 0 a near duplicate of frame 1 (similarity 1 >= 0.95): it gets nothing.
    # R = 2: 8 tokens, max(int(3.2), 1) = 3 contextual on the one anchor frame (the last), capped
    # at P // 2 = 2; 5 salient over the 3 other frames, 2 2 1, the last capped at P - 2
    m.segments, m.similarity = [4], torch.tensor([1.0, 0.5, 0.5])
    assert m.counts(4, 4, 8) == ([0, 2, 2, 1], [0, 0, 0, 2], -1)
    # 9 frames, R = 3: 27 tokens, int(10.8) = 10 contextual over anchor frames 8, 4, 0 as 4 3 3
    # (the last frame takes the remainder); 17 salient over 9 frames, 2 each but the last 1
    m.segments, m.similarity = [9], torch.full((8,), 0.5)
    assert m.counts(9, 10, 27) == ([2] * 8 + [1], [3, 0, 0, 0, 3, 0, 0, 0, 4], -1)
    # a lone frame: max(int(0.8), 1) = 1 contextual, 1 salient
    m.segments, m.similarity = [1], torch.zeros(0)
    assert m.counts(1, 10, 2) == ([1], [1], -1)


# -- below one token per frame ------------------------------------------------------------

def test_a_budget_under_one_token_per_frame_goes_to_the_anchor_frames():
    """32 frames, 6 tokens: the authors' code would keep none (R = 0); here all 6 are contextual,
    shared by the segments by length and fed on their anchor frames."""
    plan = plan_of(steps=32, per_step=4, r=0.05, hidden=8)
    m = get_method("fastvid")
    m.begin(plan)
    fed = plan.input_keep[plan.grid_index()]
    assert int(fed.sum()) == input_budget(plan) == 6 and not m.salient.any()
    ends = torch.tensor(m.segments).cumsum(0) - 1
    assert set(torch.nonzero(fed.any(1)).flatten().tolist()) <= {int(t) - 4 * j for t in ends for j in range(8)}


# -- agreement with a re-statement of the authors' loops ------------------------------------

def reference_scores(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """DPC-kNN, one token at a time (float64): density from the k nearest (itself included),
    delta to the nearest denser token (ties: the earlier), the frame's largest distance for the
    densest."""
    n, D = tokens.shape
    dist = torch.cdist(tokens.double(), tokens.double()) / D**0.5
    rho = torch.exp(-(dist.sort(dim=1).values[:, :k] ** 2).mean(1))
    out = []
    for i in range(n):
        denser = [j for j in range(n) if rho[j] > rho[i] or (rho[j] == rho[i] and j < i)]
        out.append(rho[i] * (min(dist[i, j] for j in denser) if denser else dist.max()))
    return torch.stack(out)


def reference_merge(anchors, pool, alpha):
    """Their merge, token by token: a pool token joins the anchor of the largest cosine."""
    groups = {a: [] for a in range(len(anchors))}
    for v in pool:
        cos = [float(v @ a / (v.norm() * a.norm())) for a in anchors]
        groups[cos.index(max(cos))].append(v)
    out = []
    for a, anchor in enumerate(anchors):
        w = max(1 / (len(groups[a]) + 1), alpha)
        mean = torch.stack(groups[a]).mean(0) if groups[a] else torch.zeros_like(anchor)
        out.append(w * anchor + (1 - w) * mean)
    return out


def reference_onevision(x, att, segments, R, d=0.4, p=4, alpha=0.6, k=4):
    """The LLaVA-OneVision code's steps (modeling_qwen2.py, "STPrune" to "DTM for Multi-Frame
    Segment"): R - int(R d) salient per frame; C = int(R d); each segment's anchor frames, every
    p-th from its end, get C L // ceil(L / p); frames whose count is C merge their own tokens,
    the others every non-salient token of their segment. Returns ({(t, p) fed}, {(t, p): merged})."""
    T, P = x.shape[:2]
    C = int(R * d)
    salient = [att[t].topk(R - C).indices.tolist() for t in range(T)]
    rest = [[q for q in range(P) if q not in salient[t]] for t in range(T)]
    count = [0] * T
    start = 0
    for L in segments:
        for i in range(L):
            if (L - 1 - i) % p == 0:
                count[start + i] = C * L // ((L + p - 1) // p)
        start += L
    fed = {(t, q) for t in range(T) for q in salient[t]}
    merged = {}
    start = 0
    for L in segments:
        for t in range(start, start + L):
            if count[t] == 0:
                continue
            score = reference_scores(x[t, rest[t]], k)
            anchors = [rest[t][j] for j in score.topk(min(count[t], len(rest[t]))).indices.tolist()]
            frames = [t] if count[t] == C else range(start, start + L)
            pool = [x[u, q] for u in frames for q in rest[u]]
            for q, v in zip(anchors, reference_merge([x[t, q] for q in anchors], pool, alpha)):
                fed.add((t, q))
                merged[(t, q)] = v
        start += L
    return fed, merged


def reference_port(x, att, segments, sim, R, d=0.4, p=4, alpha=0.6, k=4, ignore=0.95):
    """The Qwen2.5-VL port's per-segment loop (modeling_qwen2_5_vl.py): per segment
    max(int(R L d), 1) contextual, the rest salient; near-duplicate frames (similarity to the next
    >= ignore) skipped; salient shared evenly by the kept frames; contextual evenly by the anchor
    frames (every p-th kept frame from the end), at most P // 2 each; a frame's anchors absorb the
    segment's non-salient tokens but themselves."""
    P = x.shape[1]
    fed, merged = set(), {}
    start = 0
    for L in segments:
        c_total = max(int(R * L * d), 1)
        s_total = R * L - c_total
        if L == 1:
            n_sal, n_ctx = {start: s_total}, {start: c_total}
        else:
            kept = [start + i for i in range(L - 1) if sim[start + i] < ignore] + [start + L - 1]
            V, A = len(kept), -(-len(kept) // p)
            sal = [s_total // V + (i < s_total % V) for i in range(V)]
            per = [c_total // A + (i < c_total % A) for i in range(A)]
            ctx = [min(per[i // p], P // 2) if i % p == 0 else 0 for i in range(V)][::-1]
            n_sal = {t: min(s, P - c) for t, s, c in zip(kept, sal, ctx)}
            n_ctx = dict(zip(kept, ctx))
        frames = range(start, start + L)
        salient = {t: att[t].topk(n_sal[t]).indices.tolist() if n_sal.get(t, 0) > 0 else [] for t in frames}
        anchors = {}
        for t in frames:
            if n_ctx.get(t, 0) > 0:
                rest = [q for q in range(P) if q not in salient[t]]
                anchors[t] = [rest[j] for j in reference_scores(x[t, rest], k).topk(n_ctx[t]).indices.tolist()]
        for t in frames:
            fed |= {(t, q) for q in salient[t]}
        for t, a in anchors.items():
            pool = [x[u, q] for u in frames for q in range(P) if q not in salient[u] and not (u == t and q in a)]
            for q, v in zip(a, reference_merge([x[t, q] for q in a], pool, alpha)):
                fed.add((t, q))
                merged[(t, q)] = v
        start += L
    return fed, merged


def scenes(T: int, P: int, D: int, seed: int, duplicates: bool = False) -> torch.Tensor:
    """A structured video ``[T P, D]``: scenes of 3 to 8 frames, each a random token grid plus
    per-frame noise; with ``duplicates`` every scene's second frame repeats its first."""
    g = torch.Generator().manual_seed(seed)
    frames, t = [], 0
    while t < T:
        L = int(torch.randint(3, 9, (1,), generator=g))
        base = torch.randn(P, D, generator=g)
        for i in range(min(L, T - t)):
            frame = base + 0.3 * torch.randn(P, D, generator=g)
            frames.append(frames[-1] if duplicates and i == 1 else frame)
        t += L
    return torch.stack(frames).reshape(T * P, D)


@pytest.mark.parametrize("variant", ["onevision", "qwen2_5_vl"])
@pytest.mark.parametrize("R, params", [(2, {}), (5, {}), (9, {"dyseg_c": 2, "dyseg_tau": 0.5}), (4, {"dtm_p": 2, "d": 0.7}), (3, {"dtm_p": 1})])
def test_agrees_with_the_authors_loops(variant, R, params):
    """Same tokens, saliency and segments: the fed set and every merged embedding equal the
    re-statement's, on a 24-frame structured video of 16 tokens a frame (R tokens per frame)."""
    T, P, D = 24, 16, 8
    plan = plan_of(steps=T, per_step=P, r=R * T / (T * P), features=scenes(T, P, D, seed=R, duplicates=variant != "onevision"))
    m = get_method("fastvid", variant=variant, **params)
    m.begin(plan)
    x = plan.features.double().reshape(T, P, D)
    q = x.mean(1, keepdim=True)
    att = torch.softmax((q * x).sum(-1) / D**0.5, -1)
    kw = {k: v for k, v in params.items() if k in ("d",)} | ({"p": params["dtm_p"]} if "dtm_p" in params else {})
    if variant == "onevision":
        fed, merged = reference_onevision(x, att, m.segments, R, **kw)
    else:
        f = x.mean(1)
        sim = torch.nn.functional.cosine_similarity(f[:-1], f[1:], dim=-1)
        fed, merged = reference_port(x, att, m.segments, sim, R, **kw)
    assert len(m.segments) > 1 and any(L > 1 for L in m.segments)
    ours = {(i // P, i % P) for i in torch.nonzero(plan.input_keep).flatten().tolist()}
    assert ours == fed
    if not merged:  # (no contextual token: R d < 1)
        assert plan.input_updates is None
        return
    index, embeds = plan.input_updates
    assert sorted((i // P, i % P) for i in index.tolist()) == sorted(merged)
    for i, e in zip(index.tolist(), embeds):
        assert torch.allclose(e.double(), merged[(i // P, i % P)], atol=1e-5)


def test_parameters_are_checked():
    for bad in ({"d": 1.5}, {"dtm_p": 0}, {"variant": "llava"}, {"dyseg_ignore": 2.0}, {"dtm_alpha": -0.1}):
        with pytest.raises(ValueError):
            get_method("fastvid", **bad)
