"""The plots as a reader sees them, read back from the figures: labelled ticks at the measured
budgets, one colour and marker per method (24+ methods), error bars from the intervals,
reference lines for the uncompressed model and chance, a legend naming only what differs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from retake.harness.plots import AXES, PALETTE, accuracy_figure, method_style, plot_accuracy, style_at  # noqa: E402
from retake.harness.tables import collect  # noqa: E402
from retake.methods import METHODS  # noqa: E402

METHODS_SHOWN = ("uniform", "adaretake", "retake", "fastv", "snapkv")


def write(root: Path, method: str, context: int, score: float, keep: float, frames: int = 64, params=None,
          prefill: float = 1.0, settings=None, memory_kind: str = "accelerator"):
    tag = f"-{abs(hash(json.dumps(params, sort_keys=True))) % 10**8:08d}" if params else ""
    folder = root / f"needle_qwen2_5_vl__{method}{tag}__needle__{context}__512{'__s1234abcd' if settings else ''}"
    folder.mkdir(parents=True)
    metrics = {"accuracy": score, "accuracy_ci95_low": score - 5, "accuracy_ci95_high": score + 4, "num_samples": 48,
               "num_correct": 0, "num_unparsable": 0, "num_failed": 0}
    cell = {"model": "needle_qwen2_5_vl", "method": method, "dataset": "needle", "max_context": context,
            "max_frames": 512, "method_params": params or {}, "settings": settings or {}, "limit": None}
    eff = {"frames": {"mean": frames}, "achieved_keep_ratio": {"mean": keep}, "prefill_seconds": {"mean": prefill},
           "peak_memory_bytes": {"max": 2**30 * (1 + keep)}, "peak_memory_kind": memory_kind,
           "kv_tokens_per_layer": {"mean": context}, "kv_cache_bytes": {"mean": 2**20 * context / 10}}
    (folder / "metrics.json").write_text(json.dumps({"cell": cell, "metrics": metrics, "primary": "accuracy",
                                                     "chance_accuracy": 25.0, "efficiency": eff, "status": "done"}))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write(root, "none", 100000, 97.9, 1.0, prefill=3.0)
    for i, m in enumerate(METHODS_SHOWN):
        for context, keep in ((270, 0.05), (289, 0.1), (341, 0.25)):
            write(root, m, context, 30 + 10 * i + 100 * keep, keep * (1.02 if m == "adaretake" else 1.0),
                  prefill=1 + keep + i / 10)
    return collect(root)


def test_every_method_has_its_own_colour_and_marker():
    """26 colours before any repeats, colour + marker pairs never repeating before 156; every
    registered method its own pair (the registry's order), the same in every figure."""
    assert len({style_at(i)[0] for i in range(26)}) == len(PALETTE) == 26
    assert len({style_at(i) for i in range(156)}) == 156
    styles = [method_style(m) for m in METHODS]
    assert len(set(styles)) == len(METHODS) and len({c for c, _ in styles}) == len(METHODS)
    assert method_style("adaretake") == style_at(list(METHODS).index("adaretake"))


def test_keep_ratio_plot_reads_as_intended(runs):
    fig, series = accuracy_figure(runs, "keep")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0.05", "0.1", "0.25"]  # ticks at the measured budgets, labelled (adaretake's 1.02x merged)
    assert ax.get_xscale() == "log" and "keep ratio" in ax.get_xlabel()
    # one legend entry per method, no parameter that does not differ (all series share frames)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[: len(METHODS_SHOWN)] == sorted(METHODS_SHOWN) and set(series) == set(METHODS_SHOWN)
    assert "none (uncompressed)" in legend and "chance" in legend
    refs = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines() if line.get_label() in ("chance", "none (uncompressed)")}
    assert refs == {"chance": 25.0, "none (uncompressed)": 97.9}
    colours = {c.get_label(): c.lines[0].get_color() for c in ax.containers}  # one errorbar container per series
    assert len(set(colours.values())) == len(METHODS_SHOWN)
    assert all(colours[m] == method_style(m)[0] for m in METHODS_SHOWN)
    assert {c.get_label(): c.lines[0].get_marker() for c in ax.containers} == {m: method_style(m)[1] for m in METHODS_SHOWN}
    # error bars: the interval of each point
    bars = [c for c in ax.collections if c.get_segments()]
    assert bars and all(len(c.get_segments()) == 3 for c in bars)
    seg = bars[0].get_segments()[0]
    assert seg[1][1] - seg[0][1] == pytest.approx(9.0)  # -5 / +4 around the score


def test_budget_plot_has_labelled_ticks_even_inside_one_octave(runs):
    """270..341 tokens sit between two powers of 2: the old log-2 axis had no labelled tick."""
    fig, _ = accuracy_figure(runs, "budget")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["270", "289", "341"]


def test_legend_names_what_differs_only(tmp_path):
    root = tmp_path / "runs"
    for context, keep in ((270, 0.05), (341, 0.25)):
        write(root, "snapkv", context, 40 + keep * 100, keep)
        write(root, "snapkv", context, 45 + keep * 100, keep, params={"window": 8})
        write(root, "fastv", context, 35 + keep * 100, keep, frames=32)
        write(root, "fastv", context, 38 + keep * 100, keep, frames=32, settings={"engine.chunk_frames": 8})
    fig, series = accuracy_figure(collect(root), "keep")
    assert set(series) == {"fastv", "fastv chunk_frames=8", "snapkv", "snapkv window=8"}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert not any("frames" in t and "chunk" not in t for t in legend)  # frames are not a series dimension here


def test_plot_files_for_every_axis(tmp_path, runs):
    written = plot_accuracy(runs, tmp_path / "plots", log=lambda m: None)
    assert sorted(p.name for p in written) == sorted(f"needle_qwen2_5_vl__needle__accuracy_vs_{a}.png" for a in AXES
                                                     if a != "frames")  # one frame count: no frames plot
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_cost_axes_join_points_in_budget_order_and_skip_cpu_memory(tmp_path):
    """Prefill seconds that do not grow with the budget still draw the budget's path; peak
    memory measured as the process's RSS (a CPU run) is no figure, with a message why."""
    root = tmp_path / "runs"
    for context, keep, prefill in ((270, 0.05, 2.0), (289, 0.1, 1.0), (341, 0.25, 3.0)):
        write(root, "snapkv", context, 40 + keep * 100, keep, prefill=prefill, memory_kind="process_rss")
        write(root, "fastv", context, 30 + keep * 100, keep, prefill=prefill + 0.5, memory_kind="process_rss")
    runs = collect(root)
    _, series = accuracy_figure(runs, "prefill")
    assert [x for x, _ in series["snapkv"]] == [2.0, 1.0, 3.0]
    messages = []
    written = plot_accuracy(runs, tmp_path / "plots", log=messages.append)
    assert not any(p.name.endswith("accuracy_vs_memory.png") for p in written)
    assert any("accuracy vs memory: peak memory is measured on an accelerator only" in m for m in messages)
    assert any(p.name.endswith("accuracy_vs_kv.png") for p in written)
