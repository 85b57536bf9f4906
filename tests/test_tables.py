"""The tables and plots: paper numbers as data, cells matched to paper rows, paper / ours /
delta, malformed metrics.json skipped with its path, PNG plots, and spot checks of the paper
CSVs against the published tables (AdaReTaKe, arXiv 2503.12559)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from conftest import load_script
from retake.harness import tables
from retake.harness.tables import (
    MetricsError,
    ablation_grid,
    build_table,
    collect,
    load_paper,
    plot_accuracy,
    read_cell,
    table_markdown,
    to_markdown,
    write_tables,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "results" / "paper"
ADA = {"temporal_allocation": True, "layer_allocation": "adaptive", "r_min": 0.001, "w_min": 1.0}
PNG = b"\x89PNG\r\n\x1a\n"


def acc(value, n=100):
    """One breakdown group as the scorer writes it."""
    return {"accuracy": value, "num_samples": n, "num_correct": round(value * n / 100)}


def write_cell(root, model, method, dataset, context, frames, metrics, primary="accuracy", params=None, folder=None):
    """A metrics.json as the runner writes it; returns its folder."""
    d = Path(root) / (folder or f"{model}__{method}__{dataset}__{context}__{frames}")
    d.mkdir(parents=True)
    cell = {"model": model, "method": method, "dataset": dataset, "max_context": context, "max_frames": frames,
            "method_params": params or {}, "reforge_positions": False, "rope_scaling_factor": 4.0, "fps": 2.0}
    base = {"num_samples": 100, "num_correct": 0, "num_unparsable": 0, "num_failed": 0}
    versions = {"retake": "0.1.0", "transformers": "5.23.0", "torch": "2.13.0", "lmms_eval": "0.7.3"}
    (d / "metrics.json").write_text(json.dumps({"cell": cell, "metrics": {**base, **metrics}, "primary": primary,
                                                "versions": versions}))
    return d


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    # Table 2 row 6 (AdaReTaKe, 1K): VideoMME overall, and VideoMME Long from its duration breakdown
    write_cell(root, "qwen2_vl_7b", "adaretake", "videomme", 1024, 1024, params=ADA,
               metrics={"accuracy": 61.0, "per_duration": {"short": acc(70.1), "medium": acc(59.2), "long": acc(53.7)},
                        "per_task_type": {"Counting Problem": acc(40.0)}})
    # Table 3 row 3 (layer-wise allocation, no temporal allocation): MLVU M-Avg
    write_cell(root, "qwen2_vl_7b", "adaretake", "mlvu_dev", 1024, 1024, primary="m_avg",
               params={**ADA, "temporal_allocation": False}, folder="qwen2_vl_7b__adaretake-1a2b3c4d__mlvu_dev__1024__1024",
               metrics={"accuracy": 65.2, "m_avg": 64.0, "per_question_type": {"needle": acc(80.0)}})
    # Table 4 row 3 (AdaReTaKe 1024 frames / 16K): LVBench KIR / TG, MLVU needle / order
    write_cell(root, "qwen2_vl_7b", "adaretake", "lvbench", 16384, 1024, params=ADA,
               metrics={"accuracy": 47.5, "breakdown": {"question_type": {
                   "KIR": {"accuracy": 50.9, "num_samples": 300}, "TG": {"accuracy": 43.2, "num_samples": 200}}}})
    write_cell(root, "qwen2_vl_7b", "adaretake", "mlvu_dev", 16384, 1024, primary="m_avg", params=ADA,
               metrics={"accuracy": 70.0, "m_avg": 71.2, "per_question_type": {"needle": acc(80.3), "order": acc(61.0)}})
    # Table 1: Qwen2.5-VL-7B + AdaReTaKe on VideoMME (the users' reported gap, 63.5 vs 67.7)
    write_cell(root, "qwen2_5_vl_7b", "adaretake", "videomme", 16384, 2048, params=ADA,
               metrics={"accuracy": 63.5, "breakdown": {"duration": {"long": 58.1}}})  # the brief's contract form
    # a small sweep on the synthetic benchmark (grid and plots only)
    for method, base in (("adaretake", 40.0), ("uniform", 30.0)):
        for frames in (16, 32):
            for context in (256, 512):
                write_cell(root, "tiny_qwen2_vl", method, "synthetic", context, frames,
                           params=ADA if method == "adaretake" else {},
                           metrics={"accuracy": base + frames / 8 + context / 256})
    return root


def test_read_cell_flattens_metrics_params_and_breakdown(runs_root):
    row = read_cell(runs_root / "qwen2_vl_7b__adaretake__lvbench__16384__1024" / "metrics.json")
    assert row["model"] == "qwen2_vl_7b" and row["max_frames"] == 1024 and row["max_context"] == 16384
    assert row["primary"] == "accuracy" and row["score"] == 47.5
    assert row["method_params"] == "layer_allocation=adaptive r_min=0.001 temporal_allocation=true w_min=1.0"
    assert row["method_params/temporal_allocation"] is True
    assert row["breakdown/question_type/KIR/accuracy"] == 50.9
    assert row["versions/transformers"] == "5.23.0"


def test_collect_one_row_per_cell(runs_root):
    runs = collect(runs_root)
    assert len(runs) == 13 and runs.attrs["skipped"] == []
    mlvu = runs[(runs["dataset"] == "mlvu_dev") & (runs["max_context"] == 1024)].iloc[0]
    assert mlvu["primary"] == "m_avg" and mlvu["score"] == 64.0  # MLVU's headline is M-Avg
    assert collect(runs_root / "missing").empty


def test_table2_and_table3_paper_ours_delta(runs_root):
    runs = collect(runs_root)
    t2 = build_table(2, runs, load_paper(PAPER, 2)).set_index("method")
    assert t2.loc["adaretake", ["videomme_paper", "videomme_ours", "videomme_delta"]].tolist() == [62.2, 61.0, -1.2]
    # VideoMME Long read from the videomme cell's duration breakdown
    assert t2.loc["adaretake", ["videomme_long_paper", "videomme_long_ours", "videomme_long_delta"]].tolist() == [55.1, 53.7, -1.4]
    # not run: paper only
    assert t2.loc["fastv", "mlvu_dev_paper"] == 63.2
    assert math.isnan(t2.loc["fastv", "mlvu_dev_ours"]) and math.isnan(t2.loc["fastv", "mlvu_dev_delta"])
    # the ablation cell (temporal_allocation=false) is not the full AdaReTaKe of Table 2
    assert math.isnan(t2.loc["adaretake", "mlvu_dev_ours"])

    t3 = build_table(3, runs, load_paper(PAPER, 3)).set_index("row")
    assert t3.loc[3, ["mlvu_dev_paper", "mlvu_dev_ours", "mlvu_dev_delta"]].tolist() == [64.6, 64.0, -0.6]
    assert t3.loc[4, ["videomme_long_ours", "videomme_long_delta"]].tolist() == [53.7, -1.4]
    assert t3.loc[5, ["lvbench_ours", "lvbench_delta", "mlvu_dev_ours"]].tolist() == [47.5, -0.5, 71.2]
    assert math.isnan(t3.loc[2, "mlvu_dev_ours"])  # even allocation: not run
    assert math.isnan(t3.loc[5, "avg_ours"])  # VideoMME-L missing at 16K


def test_table4_breakdown_submetrics(runs_root):
    t4 = build_table(4, collect(runs_root), load_paper(PAPER, 4)).set_index("row")
    assert t4.loc[3, ["KIR_paper", "KIR_ours", "KIR_delta"]].tolist() == [52.9, 50.9, -2.0]
    assert t4.loc[3, ["TG_paper", "TG_ours", "TG_delta"]].tolist() == [42.7, 43.2, 0.5]
    assert t4.loc[3, ["needle_ours", "needle_delta", "order_ours", "order_delta"]].tolist() == [80.3, -2.4, 61.0, 0.8]
    assert t4.loc[[0, 1, 2], "needle_ours"].isna().all()


def test_markdown_and_csv_text(tmp_path, runs_root):
    paper = pd.DataFrame({
        "row": [0, 0, 1, 1], "label": ["Qwen2-VL", "Qwen2-VL", "+ AdaReTaKe", "+ AdaReTaKe"],
        "model": ["qwen2_vl_7b"] * 4, "method": ["uniform", "uniform", "adaretake", "adaretake"],
        "method_params": ["", "", "temporal_allocation=true", "temporal_allocation=true"],
        "max_frames": [1024] * 4, "max_context": [1024] * 4,
        "dataset": ["videomme_long", "lvbench"] * 2, "metric": ["primary"] * 4, "accuracy": [50.0, 40.0, 55.1, 44.8]})
    table = build_table(2, collect(runs_root), paper)
    table.to_csv(tmp_path / "t.csv", index=False, float_format="%.1f")
    assert (tmp_path / "t.csv").read_text() == (
        "row,label,model,method,method_params,max_frames,max_context,"
        "videomme_long_paper,videomme_long_ours,videomme_long_delta,lvbench_paper,lvbench_ours,lvbench_delta,"
        "keep,kv_per_layer,kv_mib_per_layer,state_mib,prefill_s,peak_gib,samples_per_h,incomplete\n"
        "0,Qwen2-VL,qwen2_vl_7b,uniform,,1024,1024,50.0,,,40.0,,,,,,,,,,0\n"
        "1,+ AdaReTaKe,qwen2_vl_7b,adaretake,temporal_allocation=true,1024,1024,55.1,53.7,-1.4,44.8,,,,,,,,,,0\n")
    short = table[["label", "max_frames", "videomme_long_paper", "videomme_long_ours", "videomme_long_delta"]]
    assert table_markdown("T", short, "2 cells.") == (
        "# T\n\n"
        "| label       |   max_frames |   videomme_long_paper |   videomme_long_ours |   videomme_long_delta |\n"
        "|:------------|-------------:|----------------------:|---------------------:|----------------------:|\n"
        "| Qwen2-VL    |         1024 |                  50.0 |                      |                       |\n"
        "| + AdaReTaKe |         1024 |                  55.1 |                 53.7 |                  -1.4 |\n"
        "\n2 cells.\n")


def test_markdown_without_tabulate_has_the_same_cells(monkeypatch):
    df = pd.DataFrame({"method": ["adaretake", "fastv"], "score": [56.44, math.nan], "frames": [1024, 2048]})
    with_tabulate = to_markdown(df)
    monkeypatch.setattr(tables, "find_spec", lambda name: None)
    own = to_markdown(df)
    assert own == ("| method    | score | frames |\n"
                   "|:----------|------:|-------:|\n"
                   "| adaretake |  56.4 |   1024 |\n"
                   "| fastv     |       |   2048 |")

    def cells(text):
        return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if ":" not in line]

    assert cells(own) == cells(with_tabulate)


def test_write_tables_files_and_footer(tmp_path, runs_root):
    out = tmp_path / "out"
    written = write_tables(runs_root, PAPER, out)
    names = sorted(p.name for p in written)
    assert names == sorted([f"table{n}.{e}" for n in range(1, 5) for e in ("md", "csv")]
                           + [f"{t}.{e}" for t in ("ablation_grid", "cells") for e in ("md", "csv")])
    t1 = pd.read_csv(out / "table1.csv")
    row = t1[(t1["model"] == "qwen2_5_vl_7b") & (t1["method"] == "adaretake")].iloc[0]
    assert (row["videomme_paper"], row["videomme_ours"], row["videomme_delta"]) == (67.7, 63.5, -4.2)
    assert (row["videomme_long_paper"], row["videomme_long_ours"], row["videomme_long_delta"]) == (58.3, 58.1, -0.2)
    assert t1["lvbench_ours"].isna().all()
    md = (out / "table1.md").read_text()
    assert md.startswith("# Table 1: main results")
    assert md.endswith(f"\n\n13 cells found under {runs_root}. 2 of 40 paper numbers have a cell.\n")
    assert " 63.5 |" in md and " -4.2 |" in md
    assert (out / "table4.md").read_text().endswith("4 of 16 paper numbers have a cell.\n")


def test_ablation_grid(tmp_path, runs_root):
    grid = ablation_grid(collect(runs_root))
    tiny = grid[grid["model"] == "tiny_qwen2_vl"].set_index("method")
    assert list(grid.columns[:5]) == ["model", "dataset", "method", "method_params", "settings"]
    assert list(grid.columns[5:]) == ["16/256", "16/512", "32/256", "32/512", "1024/1024", "1024/16384", "2048/16384"]
    assert tiny.loc["adaretake", ["16/256", "16/512", "32/256", "32/512"]].tolist() == [43.0, 44.0, 45.0, 46.0]
    assert tiny.loc["uniform", "method_params"] == ""
    write_tables(runs_root, PAPER, tmp_path)
    md = (tmp_path / "ablation_grid.md").read_text()
    assert "## synthetic\n" in md and "## lvbench\n" in md
    synthetic = md.split("## synthetic\n")[1].split("##")[0]
    assert "1024/1024" not in synthetic and " 46.0 |" in synthetic
    assert md.endswith(f"13 cells found under {runs_root}.\n")
    csv = (tmp_path / "ablation_grid.csv").read_text().splitlines()
    assert csv[0] == "model,dataset,method,method_params,settings,16/256,16/512,32/256,32/512,1024/1024,1024/16384,2048/16384"


def test_malformed_metrics_is_skipped_with_its_path(tmp_path, runs_root):
    bad = runs_root / "qwen2_vl_7b__fastv__videomme__1024__1024"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"cell": {"model": "qwen2_vl_7b"')
    no_primary = write_cell(runs_root, "qwen2_vl_7b", "fastv", "lvbench", 1024, 1024, {"accuracy": 41.0}, primary="m_avg")
    with pytest.raises(MetricsError, match=str(bad / "metrics.json")):
        read_cell(bad / "metrics.json")
    with pytest.raises(MetricsError, match="'primary' = 'm_avg' does not name a metric"):
        read_cell(no_primary / "metrics.json")
    with pytest.warns(UserWarning, match="skipping malformed metrics.json") as record:
        runs = collect(runs_root)
    assert len(runs) == 13 and runs.attrs["skipped"] == [str(no_primary / "metrics.json"), str(bad / "metrics.json")]
    assert any(str(bad) in str(w.message) for w in record)
    with pytest.warns(UserWarning):
        write_tables(runs_root, PAPER, tmp_path)
    assert f"2 malformed metrics.json skipped: {no_primary / 'metrics.json'}, {bad / 'metrics.json'}." in (tmp_path / "table2.md").read_text()


def test_two_cells_for_one_paper_number_is_an_error(runs_root):
    write_cell(runs_root, "qwen2_vl_7b", "adaretake", "videomme", 1024, 1024, params=ADA,
               metrics={"accuracy": 60.0}, folder="rerun/qwen2_vl_7b__adaretake__videomme__1024__1024")
    with pytest.raises(ValueError, match="several cells match.*rerun"):
        build_table(2, collect(runs_root), load_paper(PAPER, 2))


def test_variants_and_changed_params_are_not_paper_cells(tmp_path):
    fastv = {"k": 2}
    write_cell(tmp_path, "qwen2_vl_7b", "fastv", "lvbench", 1024, 1024, {"accuracy": 42.0}, params=fastv)
    write_cell(tmp_path, "qwen2_vl_7b", "fastv", "lvbench", 1024, 1024, {"accuracy": 30.0}, params={"k": 3},
               folder="qwen2_vl_7b__fastv-0a1b2c3d__lvbench__1024__1024")
    for suffix in ("limit20", "reforge", "s9f8e7d6c"):
        write_cell(tmp_path, "qwen2_vl_7b", "fastv", "lvbench", 1024, 1024, {"accuracy": 10.0}, params=fastv,
                   folder=f"qwen2_vl_7b__fastv__lvbench__1024__1024__{suffix}")
    runs = collect(tmp_path)
    assert sorted(runs["variant"]) == ["", "", "limit20", "reforge", "s9f8e7d6c"]
    t2 = build_table(2, runs, load_paper(PAPER, 2)).set_index("method")
    assert t2.loc["fastv", ["lvbench_paper", "lvbench_ours", "lvbench_delta"]].tolist() == [42.3, 42.0, -0.3]
    grid = ablation_grid(runs)
    assert len(grid) == 5 and sorted(grid["1024/1024"]) == [10.0, 10.0, 10.0, 30.0, 42.0]


def test_plots_are_png_and_sparse_data_is_skipped(tmp_path, runs_root):
    messages = []
    written = plot_accuracy(collect(runs_root), tmp_path / "plots", log=messages.append)
    assert sorted(p.name for p in written) == ["tiny_qwen2_vl__synthetic__accuracy_vs_budget.png",
                                               "tiny_qwen2_vl__synthetic__accuracy_vs_frames.png"]
    for p in written:
        assert p.read_bytes()[:8] == PNG
    assert any(m.startswith("plot skipped: qwen2_vl_7b / lvbench: accuracy vs frames") for m in messages)
    empty = []
    assert plot_accuracy(collect(tmp_path / "none"), tmp_path / "p2", log=empty.append) == [] and empty == ["plots skipped: no cells"]


def test_make_tables_script(tmp_path, runs_root, capsys):
    script = load_script("make_tables")
    assert script.main(["--runs", str(runs_root), "--paper", str(PAPER), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"== {tmp_path / 'table3.md'}" in out and "# Table 3: ablation" in out
    assert (tmp_path / "plots" / "tiny_qwen2_vl__synthetic__accuracy_vs_frames.png").is_file()


# -- the paper's numbers as data -------------------------------------------------------------

def paper_value(n, **key):
    df = load_paper(PAPER, n)
    for k, v in key.items():
        df = df[df[k] == v]
    assert len(df) == 1, key
    return df.iloc[0]


def test_paper_csvs_spot_checks():
    sizes = {1: 40, 2: 28, 3: 21, 4: 16}
    for n, size in sizes.items():
        df = load_paper(PAPER, n)
        assert len(df) == size and df["accuracy"].between(0, 100).all()
        assert not df.duplicated(["row", "dataset", "metric"]).any()
    assert paper_value(1, model="qwen2_5_vl_7b", method="adaretake", dataset="videomme")["accuracy"] == 67.7
    assert paper_value(1, model="llava_video_7b", method="uniform", dataset="lvbench")["accuracy"] == 43.1
    line = paper_value(1, model="qwen2_5_vl_72b", method="adaretake", dataset="mlvu_dev")
    assert (line["accuracy"], line["max_frames"], line["max_context"]) == (78.1, 1024, 16384)
    line = paper_value(2, method="sparsevlm", dataset="videomme_long")
    assert (line["accuracy"], line["max_frames"], line["max_context"]) == (54.4, 1024, 1024)
    assert paper_value(2, method="vlcache", dataset="mlvu_dev")["accuracy"] == 64.5  # the paper's "MLVU val"
    line = paper_value(3, row=0, dataset="lvbench")
    assert (line["method"], line["max_frames"], line["max_context"], line["accuracy"]) == ("uniform", 128, 9216, 40.1)
    line = paper_value(3, row=3, dataset="mlvu_dev")
    assert (line["method_params"], line["accuracy"]) == ("layer_allocation=adaptive temporal_allocation=false", 64.6)
    assert paper_value(3, row=6, dataset="videomme_long")["max_frames"] == 2048
    line = paper_value(4, model="llava_video_7b", method="uniform", metric="TG")
    assert (line["dataset"], line["max_frames"], line["max_context"], line["accuracy"]) == ("lvbench", 128, 25600, 36.8)
    assert paper_value(4, model="qwen2_vl_7b", method="adaretake", metric="order")["accuracy"] == 60.2


def test_table3_steps_match_the_published_delta():
    t3 = build_table(3, collect(Path("/nonexistent")), load_paper(PAPER, 3)).set_index("row")
    notes = pd.read_csv(PAPER / "notes.csv")
    published = notes[notes["kind"] == "published_delta"]
    assert len(published) == 6
    for label, value in zip(published["label"], published["value"]):
        assert abs(t3.loc[int(label.split()[-1]), "step_paper"] - value) <= 0.1 + 1e-9


def test_missing_breakdown_gives_empty_ours_and_a_warning(tmp_path):
    cell = write_cell(tmp_path, "qwen2_vl_7b", "fastv", "videomme", 1024, 1024, {"accuracy": 60.0}, params={"k": 2})
    with pytest.warns(UserWarning, match=f"{cell}: no 'long'"):
        t2 = build_table(2, collect(tmp_path), load_paper(PAPER, 2)).set_index("method")
    assert t2.loc["fastv", "videomme_ours"] == 60.0 and math.isnan(t2.loc["fastv", "videomme_long_ours"])
