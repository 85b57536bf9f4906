"""Accuracy against what it cost, from ``collect`` rows: per model x dataset, one figure per axis
with one panel per method family, and an accuracy-vs-cost Pareto figure at one budget.

**Family figures** (:func:`accuracy_figure`, ``<model>__<dataset>__accuracy_vs_<axis>.png``):
axes (:data:`AXES`) are the achieved video keep ratio, the budget (``max_context``), the frame
count, the KV cache held after prefill, prefill seconds per sample and the accelerator's peak
memory (cells run on an accelerator only: on CPU the figure would be the process's peak RSS,
which says nothing about compression). One panel per method family
(``retake.methods.FAMILIES``, declared beside the registry: in-LLM KV, hidden-state pruning,
pre-LLM, query-aware two-pass, question unknown / streaming; a method the registry does not know
goes to an "other" panel); every question-unknown run (``question_mode=unknown``) goes to the
last panel. The uncompressed model (``none`` cells: a horizontal line), chance (a dashed line)
and the sanity baselines (``uniform``, ``random``) appear in every panel; the panels share both
axes. On the discrete axes (budget, frames) a panel's series are dodged sideways a little so
that their error bars do not cover each other; on the KV and memory axes a method's points are
joined in budget order; prefill seconds (a measured time, not monotone in the budget) are
points only, their size growing with the budget. Every method keeps one colour and one marker
in every figure (:func:`method_style`: the registry's order, 26 colours, 12 markers); series of
one method with other parameters or settings differ by line style. Points carry their 95 %
interval as error bars. A panel's legend names its family's series, only what differs between
them (parameters, settings, frames); the lines every panel shares are named once, above.

**Pareto figure** (:func:`pareto_figure`, ``<model>__<dataset>__pareto_<axis>.png``): every
series' point at ONE budget (the ``max_context`` most series were run at, or the one given),
accuracy against a cost axis (prefill seconds; accelerator peak memory), each point labelled
with its method, no lines through budgets; the Pareto front (no other point is both cheaper
and more accurate) is a dashed staircase through circled points. The uncompressed model is a
star beside them (outside the front: it does not meet the budget). Question-given and
question-unknown runs are separate panels.

:func:`plot_accuracy` writes all of them as PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

# 26 distinguishable colours (tab10, then tab20's light shades, then six of Dark2)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", ":", "-.")
GIB, MIB = 2**30, 2**20
# name -> (column of the collect() rows, scale, axis label, ticks at the measured values)
AXES = {
    "keep": ("efficiency/achieved_keep_ratio/mean", 1.0, "achieved video keep ratio (kept / video tokens)", True),
    "budget": ("max_context", 1.0, "max_context (KV tokens per layer)", True),
    "frames": ("max_frames", 1.0, "max_frames", True),
    "kv": ("efficiency/kv_cache_bytes/mean", 1 / MIB, "KV cache after prefill, all layers (MiB)", False),
    "prefill": ("efficiency/prefill_seconds/mean", 1.0, "prefill seconds per sample (vision included)", False),
    "memory": ("efficiency/peak_memory_bytes/max", 1 / GIB, "accelerator peak memory (GiB)", False),
}
DODGED = ("budget", "frames")  # discrete axes: series drawn side by side
COST_AXES = ("kv", "prefill", "memory")  # series ordered by budget
UNJOINED = ("prefill",)  # points only (a time measured per cell), marker size growing with the budget
PARETO_AXES = ("prefill", "memory")  # the costs that differ between methods at one budget
REFERENCE = "none"  # the method drawn as the uncompressed reference line
UNKNOWN_PANEL = "streaming"  # the family whose panel also holds every question-unknown run
OTHER = "other"


def style_at(i: int) -> tuple[str, str]:
    """The i-th (colour, marker): colours repeat after 26, markers after 12, the pair after 156."""
    return PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]


def method_style(method: str) -> tuple[str, str]:
    """(colour, marker) of a method, the same in every figure: :func:`style_at` its place in the
    registry. A name the registry does not know (a cell of a method since removed) gets a place
    after the registry's from its name."""
    import zlib

    from ..methods import METHODS

    names = list(METHODS)
    i = names.index(method) if method in names else len(names) + zlib.crc32(method.encode()) % 130
    return style_at(i)


def family_of(method: str) -> str:
    """The method's family (``retake.methods.FAMILY``); ``"other"`` for a name it does not know."""
    from ..methods import FAMILY

    return FAMILY.get(method, OTHER)


def family_title(family: str) -> str:
    from ..methods import FAMILIES

    return FAMILIES.get(family, "other methods")


def _values(runs: pd.DataFrame, axis: str) -> pd.Series:
    column, scale, _, _ = AXES[axis]
    if column not in runs.columns:
        return pd.Series(np.nan, index=runs.index)
    return pd.to_numeric(runs[column], errors="coerce") * scale


def _ticks(values: list[float], log: bool, min_gap: float = 0.08) -> list[float]:
    """Tick positions at the measured values, thinned so that labels do not overlap: a value
    closer to the last tick kept than ``min_gap`` of the axis' span (in log space on a log
    axis) gets none (e.g. one method's keep ratio 2 % above another's)."""
    values = sorted({float(v) for v in values if v and not math.isnan(v) and (v > 0 or not log)})
    if not values:
        return []
    pos = (lambda v: math.log(v)) if log else (lambda v: v)  # noqa: E731
    span = pos(values[-1]) - pos(values[0]) or 1.0
    out = [values[0]]
    for v in values[1:]:
        if (pos(v) - pos(out[-1])) / span > min_gap:
            out.append(v)
    return out


def _tick_label(v: float, axis: str) -> str:
    if axis in ("budget", "frames"):
        return str(int(round(v)))
    return f"{v:.2g}" if v < 10 else f"{v:.0f}"


def _question_unknown(points: pd.DataFrame) -> bool:
    if "question_mode" in points:
        return bool((points["question_mode"] == "unknown").any())
    return bool(points["settings"].astype(str).str.contains("question unknown").any())


def _measured(runs: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The rows with a value on ``axis`` and a score (``_x`` the value); peak memory only where
    it was an accelerator's."""
    data = runs.assign(_x=_values(runs, axis))
    data = data[data["_x"].notna() & data["score"].notna()]
    if axis == "memory" and "efficiency/peak_memory_kind" in data:
        data = data[data["efficiency/peak_memory_kind"] == "accelerator"]
    return data


def series_of(runs: pd.DataFrame, axis: str) -> list[tuple[tuple, pd.DataFrame]]:
    """(key, points sorted by x) per method, parameters, settings and the dimension the axis does
    not sweep (frames for budget / cost axes, budget for the frames axis); on the cost axes the
    points are sorted by budget."""
    fixed = "max_context" if axis == "frames" else "max_frames"
    data = _measured(runs, axis)
    order = ["max_context", "_x", "path"] if axis in COST_AXES else ["_x", "path"]
    out = []
    for key, group in data.groupby(["method", "method_params", "settings", fixed], sort=True, dropna=False):
        out.append((key, group.sort_values(order)))
    return out


def _differing(text: str, others: list[str]) -> str:
    """The words of ``text`` (``key=value`` pairs, a setting's words) that not every one of
    ``others`` holds; ``question_tokens=`` dropped beside ``question unknown`` (it follows from it)."""
    words = str(text or "").split()
    common = set.intersection(*(set(str(o or "").split()) for o in others)) if others else set()
    kept = [w for w in words if w not in common]
    if "unknown" in kept:
        kept = [w for w in kept if not w.startswith("question_tokens=")]
    return " ".join(kept)


def _label(key: tuple, keys: list[tuple], frames_of: dict, fixed_name: str) -> str:
    """The method, then only what differs between the figure's series of that method / of all."""
    method, params, settings, fixed = key
    same_method = [k for k in keys if k[0] == method]
    parts = [method]
    if len({k[1] for k in same_method}) > 1 and params:
        parts.append(_differing(params, [k[1] for k in same_method]))
    if len({k[2] for k in keys}) > 1 and settings:
        parts.append(_differing(settings, [k[2] for k in keys]))
    if len({k[3] for k in keys}) > 1:
        if fixed_name == "frames":
            parts.append(f"{frames_of[key]:.0f} frames")
        else:
            parts.append(f"context {int(fixed)}")
    return " ".join(p for p in parts if p)


def _panels(series: list[tuple[tuple, pd.DataFrame]]) -> tuple[list[str], dict[tuple, str | None]]:
    """(the families drawn, in ``FAMILIES`` order then "other"; each series' family, None for a
    baseline drawn in every panel). A question-unknown series goes to the streaming panel."""
    from ..methods import FAMILIES

    where = {}
    for key, points in series:
        family = family_of(key[0])
        if _question_unknown(points):
            family = UNKNOWN_PANEL
        where[key] = None if family == "baseline" else family
    used = {f for f in where.values() if f}
    order = [f for f in [*FAMILIES, OTHER] if f in used]
    return order or ["baseline"], where


def _grid(n: int, width: float, height: float, top: float):
    import matplotlib.pyplot as plt

    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + top), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)  # (an odd count: the last cell stays empty)
    return fig, flat[:n]


def accuracy_figure(runs: pd.DataFrame, axis: str):
    """The figure of one model x dataset's cells (``collect`` rows) against ``axis``
    (:data:`AXES`), one panel per method family, or None when no series has two points.
    Returns ``(figure, series)``: ``series`` maps each legend label to its (x, y) points."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; valid choices: {', '.join(AXES)}")
    _, _, xlabel, measured_ticks = AXES[axis]
    reference = runs[runs["method"] == REFERENCE]
    compared = runs[runs["method"] != REFERENCE]
    series = series_of(compared, axis)
    if not any(len(points) >= 2 for _, points in series):
        return None, {}
    fixed_name = "context" if axis == "frames" else "frames"
    frames_col = "efficiency/frames/mean"
    frames_of = {}
    for key, points in series:
        f = pd.to_numeric(points.get(frames_col), errors="coerce") if frames_col in points else None
        frames_of[key] = float(f.mean()) if f is not None and f.notna().any() else float(key[3])
    keys = [k for k, _ in series]
    labels = {key: _label(key, keys, frames_of, fixed_name) for key in keys}
    families, where = _panels(series)
    fig, panels = _grid(len(families), 6.6, 3.4, 0.8)
    all_x = [v for _, p in series for v in p["_x"]]
    span = math.log(max(all_x) / min(all_x)) if min(all_x) > 0 and max(all_x) > min(all_x) else 0.0
    budgets = sorted({int(b) for _, p in series for b in p["max_context"]})
    size_of = {b: 4 + 5 * i / max(len(budgets) - 1, 1) for i, b in enumerate(budgets)}
    best = reference.sort_values(["max_frames", "max_context"]).iloc[-1] if len(reference) else None
    chance = pd.to_numeric(runs.get("chance"), errors="coerce") if "chance" in runs else pd.Series(dtype=float)
    drawn, shared = {}, {}
    for family, ax in zip(families, panels):
        mine = [(key, points) for key, points in series if where[key] in (family, None) or family == "baseline"]
        styles_used: dict[str, int] = {}
        handles = []
        for k, (key, points) in enumerate(mine):
            colour, marker = method_style(key[0])
            style = LINESTYLES[styles_used.get(key[0], 0) % len(LINESTYLES)]
            styles_used[key[0]] = styles_used.get(key[0], 0) + 1
            y = points["score"].to_numpy(float)
            low = pd.to_numeric(points.get("score_ci95_low"), errors="coerce").to_numpy(float)
            high = pd.to_numeric(points.get("score_ci95_high"), errors="coerce").to_numpy(float)
            yerr = np.vstack([np.nan_to_num(y - low), np.nan_to_num(high - y)])
            x = points["_x"].to_numpy(float)
            shown = x
            if axis in DODGED and len(mine) > 1 and span:  # side by side, within +-1.5 % of the axis
                shown = x * math.exp(span * 0.03 * (k / (len(mine) - 1) - 0.5))
            if axis in UNJOINED:
                ax.errorbar(shown, y, yerr=yerr, color=colour, linestyle="none", capsize=2, linewidth=1.0)
                ax.scatter(shown, y, s=[size_of[int(b)] ** 2 for b in points["max_context"]], color=colour,
                           marker=marker, zorder=3, edgecolors="white", linewidths=0.4)
                handle = Line2D([], [], color=colour, marker=marker, linestyle="none", markersize=6, label=labels[key])
            else:
                handle = ax.errorbar(shown, y, yerr=yerr, color=colour, marker=marker, linestyle=style, capsize=2,
                                     linewidth=1.2, markersize=5, label=labels[key])
            drawn[labels[key]] = list(zip(x.tolist(), y.tolist()))
            if where[key] is None:
                shared.setdefault(labels[key], handle)  # (named once, beside the panels)
            else:
                same = [labels[o] for o, _ in mine[:k] if where[o] is not None and drawn[labels[o]] == drawn[labels[key]]]
                if same:  # the same points as an earlier series of the family (one hides the other): say so
                    handle.set_label(f"{labels[key]} (= {same[0]})")
                handles.append(handle)
        if best is not None:
            shared.setdefault("ref", ax.axhline(float(best["score"]), color="black", linewidth=1.2,
                                                label=f"{REFERENCE} (uncompressed)"))
        if chance.notna().any():
            shared.setdefault("chance", ax.axhline(float(chance.mean()), color="grey", linestyle="--", linewidth=1.0,
                                                   label="chance"))
        ax.set_title(family_title(family), fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=True, labelleft=True, labelsize=8)
        if len(families) == 1:  # one panel: one legend, its series then the shared lines
            handles += [h for k, h in shared.items() if k not in ("ref", "chance")]
            handles += [shared[k] for k in ("ref", "chance") if k in shared]
            shared = {}
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    xs = [v for _, p in series for v in p["_x"]]
    log = axis in ("keep", "budget", "frames") or (min(xs) > 0 and max(xs) / min(xs) > 10)
    first = runs.iloc[0]
    for ax in panels:
        if log:
            ax.set_xscale("log")
        if measured_ticks:
            ticks = _ticks(xs, log)
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticks(ticks, [_tick_label(t, axis) for t in ticks], rotation=45 if len(ticks) > 8 else 0)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(f"{first['primary']} (%)", fontsize=8)
    title = f"{first['model']} / {first['dataset']}: {first['primary']} by method family"
    if axis in UNJOINED and len(budgets) > 1:
        title += " (points only: marker size grows with the budget)"
    fig.suptitle(title, fontsize=10)
    if shared:  # named once: in the empty cell beside an odd count's last panel, else below
        order = [h for k, h in shared.items() if k not in ("ref", "chance")]
        order += [shared[k] for k in ("ref", "chance") if k in shared]
        if len(panels) % 2:
            spare = fig.axes[len(panels)]
            spare.set_visible(True)
            spare.axis("off")
            spare.legend(handles=order, fontsize=8, frameon=False, title="in every panel", title_fontsize=8,
                         loc="center left")
        else:
            fig.legend(handles=order, loc="outside lower center", ncol=len(order), fontsize=8, frameon=False,
                       title="in every panel", title_fontsize=8)
    return fig, drawn


# -- the Pareto figure ---------------------------------------------------------------------

def pareto_budget(runs: pd.DataFrame, axis: str = "prefill") -> int | None:
    """The ``max_context`` the most series (method, parameters, settings) were measured at on
    ``axis``, the uncompressed ``none`` aside; of several, the middle one (the lower of two)."""
    data = _measured(runs[runs["method"] != REFERENCE], axis)
    if data.empty:
        return None
    counts = data.drop_duplicates(["max_context", "method", "method_params", "settings"]).groupby("max_context").size()
    tied = sorted(int(b) for b in counts[counts == counts.max()].index)
    return tied[(len(tied) - 1) // 2]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (as cheap or cheaper and as accurate or
    more, one of them strictly), by ascending cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _place_labels(fig, ax, items: list[tuple[float, float, str, dict]]) -> None:
    """Label each point (x, y, text, text properties) beside it where the text overlaps no other
    label and no marker and stays inside the axes: the nearest free spot on rings around it,
    joined to its point by a thin line when it is not next to it (the figure's layout is final)."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    taken = []
    legend = ax.get_legend()
    if legend is not None:
        e = legend.get_window_extent(renderer)
        taken.append((e.x0, e.y0, e.x1, e.y1))
    for x, y, _, props in items:  # the markers (a front point's circle is larger)
        px, py = ax.transData.transform((x, y))
        half = (11 if props.get("fontweight") == "bold" else 6) * fig.dpi / 72
        taken.append((px - half, py - half, px + half, py + half))
    rings = [(r, dx, dy) for r in (6, 14, 24, 36, 50, 66) for dx, dy in
             ((r, 0), (-r, 0), (r * 0.7, r * 0.7), (-r * 0.7, r * 0.7), (r * 0.7, -r * 0.7), (-r * 0.7, -r * 0.7),
              (0, r), (0, -r))]

    def overlaps(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    def label(x, y, text, props, dx, dy, r):
        ha = "left" if dx > 0 else "right" if dx < 0 else "center"
        va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
        arrow = {"arrowstyle": "-", "color": "0.55", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4} if r > 10 else None
        t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=7,
                        arrowprops=arrow, **props)
        t.update_positions(renderer)
        e = Text.get_window_extent(t, renderer)  # the text alone, not its leader line
        return t, (e.x0 - 1, e.y0 - 1, e.x1 + 1, e.y1 + 1)

    for x, y, text, props in sorted(items, key=lambda t: (-t[1], t[0])):
        for r, dx, dy in rings:
            t, rect = label(x, y, text, props, dx, dy, r)
            inside = rect[0] >= box.x0 and rect[2] <= box.x1 and rect[1] >= box.y0 and rect[3] <= box.y1
            if inside and not any(overlaps(rect, o) for o in taken):
                break
            t.remove()
        else:  # nowhere free: beside it, overlapping
            t, rect = label(x, y, text, props, 6, 0, 6)
        taken.append(rect)


def pareto_figure(runs: pd.DataFrame, axis: str = "prefill", budget: int | None = None):
    """Accuracy against ``axis`` (:data:`PARETO_AXES`) for every series' cell at one budget
    (:func:`pareto_budget` unless given), question-given and question-unknown runs in separate
    panels, or None when fewer than two cells were measured at that budget. Returns ``(figure, panels)``: ``panels`` maps a
    panel's title to ``{"points": {label: (x, y)}, "front": [labels, by cost]}``."""
    import matplotlib

    matplotlib.use("Agg")

    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; valid choices: {', '.join(AXES)}")
    budget = pareto_budget(runs, axis) if budget is None else int(budget)
    compared = _measured(runs[(runs["method"] != REFERENCE) & (runs["max_context"] == budget)], axis)
    if len(compared) < 2:
        return None, {}
    groups = {}
    for key, group in compared.groupby(["method", "method_params", "settings", "max_frames"], sort=True, dropna=False):
        groups[key] = group
    keys = list(groups)
    modes = {key: "question unknown" if _question_unknown(g) else "question given" for key, g in groups.items()}
    titles = [m for m in ("question given", "question unknown") if m in modes.values()]
    reference = _measured(runs[runs["method"] == REFERENCE], axis)
    best = reference.sort_values(["max_frames", "max_context"]).iloc[-1] if len(reference) else None
    _, _, xlabel, _ = AXES[axis]
    fig, panels = _grid(len(titles), 7.0, 4.6, 0.5)
    xs = [float(v) for v in compared["_x"]] + ([float(best["_x"])] if best is not None else [])
    chance = pd.to_numeric(runs.get("chance"), errors="coerce") if "chance" in runs else pd.Series(dtype=float)
    out = {}
    for title, ax in zip(titles, panels):
        mine = [k for k in keys if modes[k] == title]
        labels = {}
        for key in mine:  # the method, then what differs between the panel's series (not the mode: the panel's)
            method, params, settings, frames = key
            same = [k for k in mine if k[0] == method]
            parts = [method]
            if len({k[1] for k in same}) > 1:
                parts.append(_differing(params, [k[1] for k in same]))
            if len({k[2] for k in mine}) > 1:
                parts.append(_differing(settings, [k[2] for k in mine]).replace("question unknown", "").strip())
            if len({k[3] for k in mine}) > 1:
                parts.append(f"{int(frames)} frames")
            labels[key] = " ".join(p for p in parts if p)
        points = []
        for key in mine:
            g = groups[key]
            points.append((float(g["_x"].mean()), float(g["score"].mean())))
        front = pareto_front(points)
        items = []
        for i, key in enumerate(mine):
            g = groups[key]
            colour, marker = method_style(key[0])
            x, y = points[i]
            low = pd.to_numeric(g.get("score_ci95_low"), errors="coerce").mean()
            high = pd.to_numeric(g.get("score_ci95_high"), errors="coerce").mean()
            yerr = [[0.0 if math.isnan(low) else y - low], [0.0 if math.isnan(high) else high - y]]
            ax.errorbar([x], [y], yerr=yerr, color=colour, marker=marker, markersize=6, capsize=2, linewidth=0.8,
                        alpha=0.9, zorder=3)
            items.append((x, y, labels[key], {"color": "0.1", "fontweight": "bold" if i in front else "normal"}))
        fx = [points[i][0] for i in front]
        fy = [points[i][1] for i in front]
        ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=0.9, zorder=2,
                label="Pareto front (no point cheaper and more accurate)")
        ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", linewidths=0.9, zorder=4)
        if best is not None:
            ax.scatter([float(best["_x"])], [float(best["score"])], marker="*", s=160, color="black", zorder=4,
                       label=f"{REFERENCE} (uncompressed, max_context {int(best['max_context'])})")
            items.append((float(best["_x"]), float(best["score"]), REFERENCE, {"color": "black"}))
        if chance.notna().any():
            ax.axhline(float(chance.mean()), color="grey", linestyle="--", linewidth=1.0, label="chance")
        ax.set_title(f"{title} ({len(mine)} series)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=True, labelleft=True, labelsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(f"{runs.iloc[0]['primary']} (%)", fontsize=8)
        out[title] = {"points": {labels[k]: points[i] for i, k in enumerate(mine)},
                      "front": [labels[mine[i]] for i in front], "items": items}
    log = min(xs) > 0 and max(xs) / min(xs) > 10
    lo, hi = min(xs), max(xs)
    pad = (math.log(hi / lo) if log else hi - lo) * 0.08 or (hi or 1) * 0.1
    for ax in panels:
        if log:
            ax.set_xscale("log")
            ax.set_xlim(lo / math.exp(pad), hi * math.exp(pad))
        else:
            ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(min(-2, ax.get_ylim()[0]), max(104, ax.get_ylim()[1]))
    handles, names = panels[0].get_legend_handles_labels()  # (the same in every panel: below them, over no point)
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), fontsize=8, frameon=False)
    first = runs.iloc[0]
    fig.suptitle(f"{first['model']} / {first['dataset']}: {first['primary']} vs cost at one budget, max_context = "
                 f"{budget} (one point per method; bold: on the Pareto front)", fontsize=10)
    fig.canvas.draw()
    fig.set_layout_engine("none")  # (frozen: the labels are placed in display coordinates)
    for title, ax in zip(titles, panels):
        _place_labels(fig, ax, out[title].pop("items"))
    return fig, out


def plot_accuracy(runs: pd.DataFrame, out_dir, log=print, axes: tuple[str, ...] = tuple(AXES),
                  pareto: tuple[str, ...] = PARETO_AXES, pareto_at: int | None = None) -> list[Path]:
    """For every model x dataset of ``runs``: ``<model>__<dataset>__accuracy_vs_<axis>.png`` for
    every axis of ``axes`` (:func:`accuracy_figure`) and ``<model>__<dataset>__pareto_<axis>.png``
    for every axis of ``pareto`` (:func:`pareto_figure` at ``pareto_at``, else the budget most
    series were run at); a figure without the points it needs is skipped with a message through
    ``log``. Returns the files written."""
    import matplotlib.pyplot as plt

    if runs.empty:
        log("plots skipped: no cells")
        return []
    out, written = Path(out_dir), []
    out.mkdir(parents=True, exist_ok=True)
    for (model, dataset), group in runs.groupby(["model", "dataset"], sort=True):
        kinds = group["efficiency/peak_memory_kind"] if "efficiency/peak_memory_kind" in group else pd.Series([None])
        on_cpu = (kinds != "accelerator").all()
        cpu_why = "peak memory is measured on an accelerator only (these cells ran on CPU: see accuracy_vs_kv)"
        figures = [(f"accuracy_vs_{a}", f"accuracy vs {a}", lambda a=a: accuracy_figure(group, a)) for a in axes]
        figures += [(f"pareto_{a}", f"Pareto {a}", lambda a=a: pareto_figure(group, a, pareto_at)) for a in pareto]
        for name, what, build in figures:
            fig, _ = build()
            if fig is None:
                why = "needs a method with 2+ measured points" if name.startswith("accuracy") else \
                    "needs 2+ methods measured at one budget"
                if name.endswith("_memory") and on_cpu:
                    why = cpu_why
                log(f"plot skipped: {model} / {dataset}: {what}: {why}")
                continue
            path = out / f"{model}__{dataset}__{name}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written
