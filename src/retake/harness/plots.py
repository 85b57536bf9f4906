"""Accuracy against what it cost, one figure per model x dataset x axis, from ``collect`` rows.

Axes (:data:`AXES`): the achieved video keep ratio, the budget (``max_context``), the frame
count, the KV cache held after prefill, prefill seconds per sample and the accelerator's peak
memory (cells run on an accelerator only: on CPU the figure would be the process's peak RSS,
which says nothing about compression). On the discrete axes (budget, frames) the series are
dodged sideways a little so that their error bars do not cover each other; on the cost axes a
method's points are joined in budget order. Every method keeps one colour and one marker
in every figure (:func:`method_style`: the registry's order, 26 colours, 12 markers); series of
one method with other parameters or settings differ by line style. Points carry their 95 %
interval as error bars. Horizontal reference lines: the uncompressed model (``none`` cells of
that model and dataset) and chance. The legend names only what differs between the series
(parameters, settings, frames). :func:`accuracy_figure` builds a figure (tests read it);
:func:`plot_accuracy` writes them as PNG.
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
COST_AXES = ("kv", "prefill", "memory")  # a method's points joined in budget order
REFERENCE = "none"  # the method drawn as the uncompressed reference line


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


def series_of(runs: pd.DataFrame, axis: str) -> list[tuple[tuple, pd.DataFrame]]:
    """(key, points sorted by x) per method, parameters, settings and the dimension the axis does
    not sweep (frames for budget / cost axes, budget for the frames axis)."""
    fixed = "max_context" if axis == "frames" else "max_frames"
    x = _values(runs, axis)
    data = runs.assign(_x=x)
    data = data[data["_x"].notna() & data["score"].notna()]
    if axis == "memory" and "efficiency/peak_memory_kind" in data:
        data = data[data["efficiency/peak_memory_kind"] == "accelerator"]
    order = ["max_context", "_x", "path"] if axis in COST_AXES else ["_x", "path"]
    out = []
    for key, group in data.groupby(["method", "method_params", "settings", fixed], sort=True, dropna=False):
        out.append((key, group.sort_values(order)))
    return out


def _label(key: tuple, keys: list[tuple], frames_of: dict, fixed_name: str) -> str:
    """The method, then only what differs between the figure's series of that method / of all."""
    method, params, settings, fixed = key
    same_method = [k for k in keys if k[0] == method]
    parts = [method]
    if len({k[1] for k in same_method}) > 1 and params:
        parts.append(params)
    if len({k[2] for k in keys}) > 1 and settings:
        parts.append(settings)
    if len({k[3] for k in keys}) > 1:
        if fixed_name == "frames":
            parts.append(f"{frames_of[key]:.0f} frames")
        else:
            parts.append(f"context {int(fixed)}")
    return " ".join(parts)


def accuracy_figure(runs: pd.DataFrame, axis: str):
    """The figure of one model x dataset's cells (``collect`` rows) against ``axis``
    (:data:`AXES`), or None when no series has two points. Returns ``(figure, series)``:
    ``series`` maps each legend label to its (x, y) points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    drawn, xs, handles = {}, [], []
    styles_used: dict[str, int] = {}
    all_x = [v for _, p in series for v in p["_x"]]
    span = math.log(max(all_x) / min(all_x)) if min(all_x) > 0 and max(all_x) > min(all_x) else 0.0
    for k, (key, points) in enumerate(series):
        colour, marker = method_style(key[0])
        style = LINESTYLES[styles_used.get(key[0], 0) % len(LINESTYLES)]
        styles_used[key[0]] = styles_used.get(key[0], 0) + 1
        label = _label(key, keys, frames_of, fixed_name)
        y = points["score"].to_numpy(float)
        low = pd.to_numeric(points.get("score_ci95_low"), errors="coerce").to_numpy(float)
        high = pd.to_numeric(points.get("score_ci95_high"), errors="coerce").to_numpy(float)
        yerr = np.vstack([np.nan_to_num(y - low), np.nan_to_num(high - y)])
        x = points["_x"].to_numpy(float)
        shown = x
        if axis in DODGED and len(series) > 1 and span:  # side by side, within +-1.5 % of the axis
            shown = x * math.exp(span * 0.03 * (k / (len(series) - 1) - 0.5))
        handles.append(ax.errorbar(shown, y, yerr=yerr, color=colour, marker=marker, linestyle=style, capsize=2,
                                   linewidth=1.2, markersize=5, label=label))
        drawn[label] = list(zip(x.tolist(), y.tolist()))
        xs += x.tolist()
    if len(reference):
        best = reference.sort_values(["max_frames", "max_context"]).iloc[-1]
        handles.append(ax.axhline(float(best["score"]), color="black", linewidth=1.2,
                                  label=f"{REFERENCE} (uncompressed)"))
    chance = pd.to_numeric(runs.get("chance"), errors="coerce") if "chance" in runs else pd.Series(dtype=float)
    if chance.notna().any():
        handles.append(ax.axhline(float(chance.mean()), color="grey", linestyle="--", linewidth=1.0, label="chance"))
    log = axis in ("keep", "budget", "frames") or (min(xs) > 0 and max(xs) / min(xs) > 10)
    if log:
        ax.set_xscale("log")
    if measured_ticks:
        ticks = _ticks(xs, log)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([_tick_label(t, axis) for t in ticks], rotation=45 if len(ticks) > 8 else 0)
    first = runs.iloc[0]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{first['primary']} (%)")
    ax.set_title(f"{first['model']} / {first['dataset']}")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig, drawn


def plot_accuracy(runs: pd.DataFrame, out_dir, log=print, axes: tuple[str, ...] = tuple(AXES)) -> list[Path]:
    """``<model>__<dataset>__accuracy_vs_<axis>.png`` for every model x dataset of ``runs`` and
    every axis; a figure with no series of two or more points is skipped with a message through
    ``log``. Returns the files written."""
    import matplotlib.pyplot as plt

    if runs.empty:
        log("plots skipped: no cells")
        return []
    out, written = Path(out_dir), []
    out.mkdir(parents=True, exist_ok=True)
    for (model, dataset), group in runs.groupby(["model", "dataset"], sort=True):
        for axis in axes:
            fig, _ = accuracy_figure(group, axis)
            if fig is None:
                why = "needs a method with 2+ measured points"
                kinds = group["efficiency/peak_memory_kind"] if "efficiency/peak_memory_kind" in group else pd.Series([None])
                if axis == "memory" and (kinds != "accelerator").all():
                    why = "peak memory is measured on an accelerator only (these cells ran on CPU: see accuracy_vs_kv)"
                log(f"plot skipped: {model} / {dataset}: accuracy vs {axis}: {why}")
                continue
            path = out / f"{model}__{dataset}__accuracy_vs_{axis}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written
