"""The plots as a reader sees them, read back from the figures: one panel per method family
(the uncompressed line, chance and the sanity baselines in every panel), labelled ticks at the
measured budgets, one colour and marker per method (24+ methods), error bars from the intervals,
a legend naming only what differs, and the Pareto figure at one budget (points labelled, none
overlapping, the front marked)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from retake.harness.plots import (  # noqa: E402
    AXES,
    PALETTE,
    accuracy_figure,
    family_title,
    method_style,
    pareto_budget,
    pareto_figure,
    pareto_front,
    plot_accuracy,
    style_at,
)
from retake.harness.tables import collect  # noqa: E402
from retake.methods import FAMILIES, FAMILY, METHODS  # noqa: E402

METHODS_SHOWN = ("uniform", "adaretake", "retake", "fastv", "snapkv")


def write(root: Path, method: str, context: int, score: float, keep: float, frames: int = 64, params=None,
          prefill: float = 1.0, settings=None, memory_kind: str = "accelerator", unknown: bool = False):
    tag = f"-{abs(hash(json.dumps(params, sort_keys=True))) % 10**8:08d}" if params else ""
    folder = root / f"needle_qwen2_5_vl__{method}{tag}__needle__{context}__512{'__unknown' if unknown else ''}" \
                    f"{'__s1234abcd' if settings else ''}"
    folder.mkdir(parents=True)
    metrics = {"accuracy": score, "accuracy_ci95_low": score - 5, "accuracy_ci95_high": score + 4, "num_samples": 48,
               "num_correct": 0, "num_unparsable": 0, "num_failed": 0}
    cell = {"model": "needle_qwen2_5_vl", "method": method, "dataset": "needle", "max_context": context,
            "max_frames": 512, "method_params": params or {}, "settings": settings or {}, "limit": None,
            "question_mode": "unknown" if unknown else "aware"}
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


def test_every_method_has_a_family():
    """The families are declared once, beside the registry: every registered method in one, the
    panels' groups as the methods' papers define where they act."""
    assert set(FAMILY) == set(METHODS) and set(FAMILY.values()) <= set(FAMILIES)
    groups = {f: sorted(m for m in FAMILY if FAMILY[m] == f) for f in FAMILIES}
    assert groups["baseline"] == ["none", "random", "uniform"]
    assert {"adaretake", "retake", "snapkv", "pyramidkv", "h2o", "adakv", "knorm", "vlcache", "lookm"} == set(groups["kv"])
    assert groups["hidden"] == ["fastv", "fitprune", "pyramiddrop", "sparsevlm"]
    assert groups["pre_llm"] == ["downsample", "evs", "fastvid", "vidcom2"]
    assert groups["two_pass"] == ["adaptoken", "flexselect"] and groups["streaming"] == ["infinipot_v", "streammem"]


def panels(fig) -> dict:
    """The figure's panels by title."""
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}


def legend_texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def shared_legend(fig) -> list[str]:
    """The legend of what every panel shows (the figure's, or the one in the spare grid cell)."""
    found = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes if not ax.get_title())] if lg]
    assert len(found) == 1
    return legend_texts(found[0])


def test_keep_ratio_plot_reads_as_intended(runs):
    fig, series = accuracy_figure(runs, "keep")
    by_title = panels(fig)
    # one panel per family present: adaretake, retake, snapkv in-LLM KV; fastv hidden-state pruning
    assert list(by_title) == [family_title("kv"), family_title("hidden")]
    kv, hidden = by_title.values()
    for ax in (kv, hidden):
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == ["0.05", "0.1", "0.25"]  # ticks at the measured budgets, labelled (adaretake's 1.02x merged)
        assert ax.get_xscale() == "log" and "keep ratio" in ax.get_xlabel()
        # the uncompressed line, chance and the uniform baseline in every panel
        refs = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines()
                if line.get_label() in ("chance", "none (uncompressed)")}
        assert refs == {"chance": 25.0, "none (uncompressed)": 97.9}
        assert "uniform" in {c.get_label() for c in ax.containers}
    # each panel's legend: its family's methods only, no parameter that does not differ (all share frames)
    assert legend_texts(kv.get_legend()) == ["adaretake", "retake", "snapkv"]
    assert legend_texts(hidden.get_legend()) == ["fastv"]
    assert shared_legend(fig) == ["uniform", "none (uncompressed)", "chance"]
    assert set(series) == set(METHODS_SHOWN)
    colours = {c.get_label(): c.lines[0].get_color() for ax in (kv, hidden) for c in ax.containers}
    assert len(set(colours.values())) == len(METHODS_SHOWN)
    assert all(colours[m] == method_style(m)[0] for m in METHODS_SHOWN)
    assert {c.get_label(): c.lines[0].get_marker() for ax in (kv, hidden) for c in ax.containers} == \
        {m: method_style(m)[1] for m in METHODS_SHOWN}
    # error bars: the interval of each point
    bars = [c for c in kv.collections if c.get_segments()]
    assert bars and all(len(c.get_segments()) == 3 for c in bars)
    seg = bars[0].get_segments()[0]
    assert seg[1][1] - seg[0][1] == pytest.approx(9.0)  # -5 / +4 around the score


def test_budget_plot_has_labelled_ticks_even_inside_one_octave(runs):
    """270..341 tokens sit between two powers of 2: the old log-2 axis had no labelled tick."""
    fig, _ = accuracy_figure(runs, "budget")
    for ax in panels(fig).values():
        assert [t.get_text() for t in ax.get_xticklabels()] == ["270", "289", "341"]


def test_every_family_its_panel_and_question_unknown_runs_in_the_last(tmp_path):
    """Five families, five panels in the registry's family order, the shared lines named once in
    the spare sixth cell; question-unknown runs of any method join the streaming methods' panel;
    a series hidden under another is named as such; a method the registry does not know gets an
    "other" panel."""
    root = tmp_path / "runs"
    write(root, "none", 100000, 97.9, 1.0)
    for m in ("uniform", "random", "snapkv", "fastv", "evs", "flexselect", "adaptoken", "infinipot_v"):
        for context, keep in ((270, 0.05), (341, 0.25)):
            write(root, m, context, 40 + 100 * keep, keep)
    for context, keep in ((270, 0.05), (341, 0.25)):
        write(root, "snapkv", context, 30 + 100 * keep, keep, unknown=True, settings={"engine.question_tokens": 198})
    fig, series = accuracy_figure(collect(root), "keep")
    by_title = panels(fig)
    assert list(by_title) == [family_title(f) for f in ("kv", "hidden", "pre_llm", "two_pass", "streaming")]
    assert legend_texts(by_title[family_title("kv")].get_legend()) == ["snapkv"]
    assert legend_texts(by_title[family_title("streaming")].get_legend()) == ["infinipot_v", "snapkv question unknown"]
    # a series drawn exactly over an earlier one of its panel says so
    assert legend_texts(by_title[family_title("two_pass")].get_legend()) == ["adaptoken", "flexselect (= adaptoken)"]
    for ax in by_title.values():
        assert {"random", "uniform"} <= {c.get_label() for c in ax.containers}
    assert shared_legend(fig) == ["random", "uniform", "none (uncompressed)", "chance"]
    assert series["snapkv question unknown"] == [(0.05, 35.0), (0.25, 55.0)]

    for context, keep in ((270, 0.05), (341, 0.25)):
        write(tmp_path / "other", "gone_method", context, 40 + 100 * keep, keep)
        write(tmp_path / "other", "uniform", context, 30 + 100 * keep, keep)
    fig, _ = accuracy_figure(collect(tmp_path / "other"), "keep")
    (title, ax), = panels(fig).items()  # one panel: one legend, the shared lines after its series
    assert title == family_title("other") and legend_texts(ax.get_legend()) == ["gone_method", "uniform", "chance"]


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
    assert sorted(p.name for p in written) == sorted(
        [f"needle_qwen2_5_vl__needle__accuracy_vs_{a}.png" for a in AXES if a != "frames"]  # one frame count: no frames plot
        + ["needle_qwen2_5_vl__needle__pareto_prefill.png", "needle_qwen2_5_vl__needle__pareto_memory.png"])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_cost_axes_prefill_points_only_kv_joined_and_cpu_memory_skipped(tmp_path):
    """Prefill seconds (measured, not monotone in the budget) are points, not a path through the
    budgets, the marker growing with the budget; the KV held is joined in budget order. Peak
    memory measured as the process's RSS (a CPU run) is no figure, with a message why."""
    root = tmp_path / "runs"
    for context, keep, prefill in ((270, 0.05, 2.0), (289, 0.1, 1.0), (341, 0.25, 3.0)):
        write(root, "snapkv", context, 40 + keep * 100, keep, prefill=prefill, memory_kind="process_rss")
        write(root, "fastv", context, 30 + keep * 100, keep, prefill=prefill + 0.5, memory_kind="process_rss")
    runs = collect(root)
    fig, series = accuracy_figure(runs, "prefill")
    assert [x for x, _ in series["snapkv"]] == [2.0, 1.0, 3.0]  # (budget order)
    ax = panels(fig)[family_title("kv")]
    assert ax.containers and all(c.lines[0].get_linestyle() == "None" for c in ax.containers)  # no path
    sizes = [c.get_sizes() for c in ax.collections if hasattr(c, "get_sizes") and len(c.get_sizes()) == 3]
    assert len(sizes) == 1 and sizes[0][0] < sizes[0][1] < sizes[0][2]
    fig, series = accuracy_figure(runs, "kv")
    line = panels(fig)[family_title("kv")].containers[0].lines[0]
    assert line.get_linestyle() == "-" and list(line.get_xdata()) == [x for x, _ in series["snapkv"]]
    messages = []
    written = plot_accuracy(runs, tmp_path / "plots", log=messages.append)
    assert not any(p.name.endswith("_memory.png") for p in written)
    assert any("accuracy vs memory: peak memory is measured on an accelerator only" in m for m in messages)
    assert any("Pareto memory: peak memory is measured on an accelerator only" in m for m in messages)
    assert any(p.name.endswith("accuracy_vs_kv.png") for p in written)
    assert any(p.name.endswith("pareto_prefill.png") for p in written)


def test_pareto_front():
    # (cost, accuracy): the cheapest, then each cheaper-than-the-rest improvement; ties in cost: the better only
    points = [(1.0, 30.0), (2.0, 80.0), (1.5, 20.0), (3.0, 80.0), (4.0, 95.0), (2.0, 60.0), (0.5, 10.0)]
    assert pareto_front(points) == [6, 0, 1, 4]
    assert pareto_front([]) == []


def overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_pareto_figure_at_one_budget(tmp_path):
    """One point per method at the budget most methods ran at (the middle one of a tie), labelled
    with its name, no label over another or over the legend; the front through the points no other beats on both
    cost and accuracy; question-unknown runs in their own panel; none a star outside the front."""
    root = tmp_path / "runs"
    write(root, "none", 100000, 97.9, 1.0, prefill=0.5)
    methods = ("uniform", "random", "adaretake", "retake", "snapkv", "pyramidkv", "h2o", "fastv", "evs", "vidcom2",
               "flexselect", "infinipot_v")
    for i, m in enumerate(methods):
        for context, keep in ((270, 0.05), (289, 0.1), (341, 0.25)):
            # crowded on purpose: many near the same cost and accuracy
            write(root, m, context, 60 + 3 * (i % 5) + 100 * keep, keep, prefill=1 + 0.02 * i + keep)
    write(root, "snapkv", 289, 50.0, 0.1, prefill=0.9, unknown=True, settings={"engine.question_tokens": 198})
    write(root, "fastv", 289, 45.0, 0.1, prefill=1.5, unknown=True, settings={"engine.question_tokens": 198})
    runs = collect(root)
    assert pareto_budget(runs) == 289  # (the most series; 270, 289 and 341 otherwise tie: the middle)
    assert pareto_budget(runs[runs["question_mode"] != "unknown"]) == 289
    fig, out = pareto_figure(runs)
    assert list(out) == ["question given", "question unknown"] and "max_context = 289" in fig._suptitle.get_text()
    given = out["question given"]
    assert set(given["points"]) == set(methods)
    points = list(given["points"].values())
    assert [list(given["points"])[i] for i in pareto_front(points)] == given["front"]
    assert given["front"][0] == "uniform"  # the cheapest is always on it
    assert out["question unknown"]["front"] == ["snapkv"] and set(out["question unknown"]["points"]) == {"snapkv", "fastv"}
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from matplotlib.text import Text

    for title, ax in panels(fig).items():
        texts = [t for t in ax.texts if t.get_text()]
        names = [t.get_text() for t in texts]
        assert sorted(names) == sorted([*out[title.split(" (")[0]]["points"], "none"])
        boxes = [Text.get_window_extent(t, renderer) for t in texts]
        assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), title
        legend = fig.legends[0].get_window_extent(renderer)  # (one, below the panels: over no point)
        assert legend.y1 < ax.get_window_extent(renderer).y0 and not any(overlap(legend, b) for b in boxes)
        assert all(ax.get_window_extent(renderer).contains(b.x0, b.y0) for b in boxes)
        bold = {t.get_text() for t in texts if t.get_fontweight() == "bold"}
        assert bold == set(out[title.split(" (")[0]]["front"])
        star = [c for c in ax.collections if c.get_label().startswith("none (uncompressed")]
        assert len(star) == 1 and list(star[0].get_offsets()[0]) == [0.5, 97.9]
