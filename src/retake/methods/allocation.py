"""Budget allocation shared by methods: over chunks (time) and over layers."""

from __future__ import annotations

import torch

from .base import VideoPlan, adjacent_distances, budget_tokens  # noqa: F401 (adjacent_distances: its users import it from here too)


def project_ratios(raw: torch.Tensor, sizes: torch.Tensor, total: float, lo: float, hi: float = 1.0, iters: int = 100) -> torch.Tensor:
    """Euclidean projection of ``raw`` onto ``{r : lo <= r <= hi, sum(r * sizes) = total}``.

    ``r = clip(raw - mu, lo, hi)`` with mu found by bisection (the weighted sum is
    non-increasing in mu). raw, sizes: ``[C]``. If ``total`` is outside what the box allows,
    the nearest feasible end is returned (all ``lo`` or all ``hi``).
    """
    raw = raw.double()
    sizes = sizes.double()
    if total <= lo * float(sizes.sum()):
        return torch.full_like(raw, lo)
    if total >= hi * float(sizes.sum()):
        return torch.full_like(raw, hi)

    def weighted(mu: float) -> float:
        return float((torch.clamp(raw - mu, lo, hi) * sizes).sum())

    a, b = float(raw.min()) - hi, float(raw.max()) - lo  # weighted(a) = hi*sum, weighted(b) = lo*sum
    for _ in range(iters):
        mid = (a + b) / 2
        if weighted(mid) > total:
            a = mid
        else:
            b = mid
    return torch.clamp(raw - (a + b) / 2, lo, hi)


def frame_distances(step_features: torch.Tensor) -> torch.Tensor:
    """``d_t = 1 - cos(f_t, f_{t-1})`` for t >= 1 and ``d_0 = d_1``. ``[S, D] -> [S]``."""
    if step_features.shape[0] == 1:
        return torch.ones(1)
    d = adjacent_distances(step_features)
    return torch.cat([d[:1], d]).clamp_min(0)


def temporal_ratios(plan: VideoPlan, r_min: float) -> torch.Tensor:
    """AdaReTaKe §4.3: chunk keep ratios proportional to the chunk's mean adjacent-step
    distance, summing to the global budget, projected onto ``[r_min, 1]``. ``[C]``."""
    chunks = plan.chunks
    r = plan.keep_ratio
    if r >= 1:
        return torch.ones(len(chunks), dtype=torch.float64)
    d = frame_distances(plan.step_features())
    D = torch.stack([d[c.step_start : c.step_end].mean() for c in chunks]).double()
    n = torch.tensor([plan.fed(c) for c in chunks], dtype=torch.float64)
    total = r * float(n.sum())
    if float((D * n).sum()) <= 0:  # a static video: nothing to prefer
        return torch.full((len(chunks),), r, dtype=torch.float64)
    raw = D * total / float((D * n).sum())
    return project_ratios(raw, n, total, r_min, 1.0)


def round_half_up(x: torch.Tensor | float) -> torch.Tensor:
    return torch.floor(torch.as_tensor(x, dtype=torch.float64) + 0.5).long()


def layer_counts_adaptive(scores: torch.Tensor, ratio: float, w_min: float) -> torch.Tensor:
    """AdaReTaKe §4.4: tokens per layer for one chunk. scores ``[L, n]`` -> counts ``[L]``.

    B = round(ratio * n * L); n_l = how many of the global top-B scores fall in layer l;
    w_l = n_l + w_min; r_l = L * ratio * w_l / sum(w); k_l = clamp(round(r_l * n), 1, n).
    """
    L, n = scores.shape
    B = int(round_half_up(ratio * n * L))
    top = scores.reshape(-1).topk(min(B, L * n)).indices
    n_l = torch.bincount(top // n, minlength=L).double()
    w = n_l + w_min
    r_l = L * ratio * w / w.sum()
    return round_half_up(r_l * n).clamp(1, n)


def layer_counts_even(num_layers: int, ratio: float, n: int) -> torch.Tensor:
    return torch.full((num_layers,), budget_tokens(ratio, n), dtype=torch.long)


# -- vlcache, fitprune, adakv: proportional layer ratios, the layer's real attention ---------

def proportional_ratios(weights: torch.Tensor, mean: float, lo: float, hi: float = 1.0, iters: int = 100) -> torch.Tensor:
    """Ratios ``r = clip(s * weights, lo, hi)`` with the scale s found by bisection so that
    ``mean(r) = mean`` (VL-Cache's layer budgets). weights ``[L]`` >= 0 -> ``[L]`` float64.
    ``lo`` is lowered to ``mean`` when the box cannot hold it; all-zero weights give ``mean``."""
    w = weights.double().clamp_min(0)
    lo = min(lo, mean)
    if mean >= hi:
        return torch.full_like(w, hi)
    if float(w.max()) <= 0:
        return torch.full_like(w, mean)

    def average(s: float) -> float:
        return float(torch.clamp(s * w, lo, hi).mean())

    a, b = 0.0, hi / float(w[w > 0].min())  # average(a) = lo <= mean, average(b) >= mean unless zeros pin some at lo
    for _ in range(iters):
        mid = (a + b) / 2
        if average(mid) < mean:
            a = mid
        else:
            b = mid
    return torch.clamp(b * w, lo, hi)


def input_attention_blocks(view, start: int, stop: int, block: int):
    """The layer's real attention for the input's queries ``[start, stop)`` (indices into
    ``view.query``, chunk tokens first, then the guide): softmax over the layer's whole cache
    plus the causal part of the input, as the model computes it (query i of the q-long input
    sees key j iff ``j <= k - q + i``). ``view`` is a ``LayerView``. Yields ``(a, att)`` per block
    of at most ``block`` queries, att ``[H, b, k]`` for queries ``[a, a + b)``, so no
    ``[H, q, k]`` tensor is held for more than one block."""
    for a in range(start, stop, block):
        yield a, view.causal_attention(a, min(stop, a + block))


# -- fastv, pyramiddrop, snapkv, pyramidkv: layer schedules ---------------------------------


def stage_starts(num_layers: int, stages: int) -> list[int]:
    """First layer of each of ``stages`` equal stages, ``floor(s * L / stages)``: PyramidDrop
    splits 32 layers at 8, 16, 24 (28 layers at 7, 14, 21)."""
    if not 1 <= stages <= num_layers:
        raise ValueError(f"stages must be in [1, {num_layers}] for a {num_layers}-layer model, got {stages}")
    return [s * num_layers // stages for s in range(stages)]


def pyramiddrop_counts(num_layers: int, stages: int, lam: float, ratio: float, n: int) -> torch.Tensor:
    """PyramidDrop's kept tokens per stage for one chunk of ``n`` tokens: ``[stages]`` long.

    Stage s keeps ``lam**s`` of stage 0's count, stage 0's count scaled so that the mean over
    layers is ``ratio * n``. A stage that would keep more than n keeps n and the scale grows
    for the others (the mean stays ``ratio * n``); every stage keeps at least 1. Rounded
    half-up per stage, so counts stay non-increasing (nested sets are possible).
    """
    starts = stage_starts(num_layers, stages) + [num_layers]
    sizes = torch.tensor([starts[s + 1] - starts[s] for s in range(stages)])
    weights = (lam ** torch.arange(stages, dtype=torch.float64)).repeat_interleave(sizes)  # [L]
    per_layer = proportional_ratios(weights, ratio, 1.0 / n, 1.0)
    return round_half_up(per_layer[starts[:-1]] * n).clamp(1, n)


def round_to_total(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Integers in ``[lo, hi]`` near ``x`` ``[L]`` that sum to ``round(sum(x))`` (clamped to what
    the box holds): x is projected onto the box keeping its sum (:func:`project_ratios`), then
    rounded by largest remainder, ties to the lower index (a non-increasing x stays so)."""
    L = x.shape[0]
    total = min(hi * L, max(lo * L, int(round_half_up(float(x.double().sum())))))
    y = project_ratios(x, torch.ones(L, dtype=torch.float64), total, lo, hi)
    k = torch.floor(y + 1e-9).clamp(lo, hi)
    frac = torch.round((y - k) * 1e9)  # float noise must not break ties between equal entries
    extra = torch.sort(-frac, stable=True).indices[: max(0, total - int(k.sum()))]
    k[extra] += 1
    return k.long()


def pyramidkv_counts(num_layers: int, ratio: float, n: int, beta: float) -> torch.Tensor:
    """PyramidKV's kept tokens per layer for one chunk of ``n`` tokens: ``[L]`` long.

    Linear from the bottom layer to the top with mean ``T = ratio * n`` (the authors' rule):
    top ``T / beta``, bottom ``2T - T / beta``; if the bottom would exceed n it keeps n and the
    top ``2T - n``. Then integers in ``[1, n]`` summing to ``round(T * L)``
    (:func:`round_to_total`), non-increasing from bottom to top.
    """
    T = ratio * n
    top, bottom = T / beta, 2 * T - T / beta
    if bottom > n:
        bottom, top = float(n), 2 * T - n
    x = torch.linspace(bottom, top, num_layers, dtype=torch.float64) if num_layers > 1 else torch.tensor([T], dtype=torch.float64)
    return round_to_total(x, 1, n)


# -- pre-LLM and two-pass methods: token counts over groups / frames ------------------------

def capped_counts(weights: torch.Tensor, caps: torch.Tensor, total: int) -> torch.Tensor:
    """Integers ``k_g`` in ``[0, caps_g]`` summing to ``min(total, sum(caps))``, proportional to
    ``weights`` where no cap binds (water-filling: ``k = min(s * w, caps)`` with the scale s
    found by bisection), rounded by largest remainder (ties to the lower index). All-zero
    weights share by size (``weights = caps``). weights, caps ``[G]`` -> ``[G]`` long."""
    w = weights.double().clamp_min(0)
    caps = caps.double().clamp_min(0)
    total = int(min(int(total), int(caps.sum())))
    if total <= 0:
        return torch.zeros_like(caps, dtype=torch.long)
    if float(w[caps > 0].sum()) <= 0:
        w = caps.clone()
    w = torch.where(caps > 0, w, torch.zeros_like(w))

    def filled(s: float) -> float:
        return float(torch.minimum(s * w, caps).sum())

    lo, hi = 0.0, 1.0
    while filled(hi) < total and hi < 1e30:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if filled(mid) < total:
            lo = mid
        else:
            hi = mid
    x = torch.minimum(hi * w, caps)
    k = torch.floor(x + 1e-9).clamp(max=caps)
    frac = torch.where(k < caps, torch.round((x - k) * 1e9), torch.full_like(x, -1.0))
    extra = torch.sort(-frac, stable=True).indices[: max(0, total - int(k.sum()))]
    k[extra] += 1
    return k.long()


def input_budget(plan: VideoPlan) -> int:
    """Video tokens a pre-LLM method may feed: ``round(r * N_v)`` (at least 1), the budget of
    every method (docs/architecture.md, "Budget")."""
    return max(1, int(round_half_up(plan.keep_ratio * plan.num_video_tokens)))


def step_text(plan: VideoPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """The span's tokens outside the grid (Qwen3-VL's timestamps and vision start / end, LLaVA's
    trailing newline): (their span offsets ``[m]``, the grid step each belongs to ``[m]``)."""
    is_grid = torch.zeros(plan.num_video_tokens, dtype=torch.bool)
    is_grid[plan.grid_index().reshape(-1)] = True
    off = torch.tensor(plan.step_token_offsets)
    text = torch.nonzero(~is_grid).flatten()
    step = (torch.searchsorted(off, text, right=True) - 1).clamp(0, len(off) - 2)
    return text, step


def keep_grid_tokens(plan: VideoPlan, grid_keep: torch.Tensor) -> torch.Tensor:
    """``plan.input_keep`` from a bool ``[num_steps, tokens_per_step]`` over the grid tokens: a
    step's interleaved text is fed iff one of its grid tokens is (a timestamp without its frame
    says nothing)."""
    keep = torch.zeros(plan.num_video_tokens, dtype=torch.bool)
    grid_keep = grid_keep.reshape(len(plan.step_token_offsets) - 1, -1).cpu()
    keep[plan.grid_index().reshape(-1)] = grid_keep.reshape(-1)
    text, step = step_text(plan)
    keep[text] = grid_keep.any(dim=1)[step]
    return keep


def fit_grid(plan: VideoPlan, select) -> tuple[torch.Tensor, int]:
    """``(plan.input_keep, G)`` for a pre-LLM method: ``select(G)`` returns a bool ``[num_steps,
    tokens_per_step]`` of (at most) G kept grid tokens; G is the largest for which they and the
    text of the steps they touch (:func:`keep_grid_tokens`) fit the budget
    (:func:`input_budget`), found by bisection (the text of a step is counted once it keeps a
    grid token). Families without interleaved text use G = the budget directly."""
    budget = input_budget(plan)
    n_grid = plan.grid_index().numel()
    top = min(n_grid, budget)
    text, _ = step_text(plan)
    if len(text) == 0:
        return keep_grid_tokens(plan, select(top)), top

    def fitted(G: int):
        keep = keep_grid_tokens(plan, select(G))
        return keep, int(keep.sum()) <= budget

    lo = max(0, min(top, budget - len(text)))  # fits whatever steps it touches
    best, fits = fitted(lo)
    if not fits:  # (only when a method keeps more than G, e.g. one token per frame at least)
        lo, best = 0, fitted(0)[0]
    hi = top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        keep, fits = fitted(mid)
        if fits:
            lo, best = mid, keep
        else:
            hi = mid - 1
    return best, lo
