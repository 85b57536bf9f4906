"""`make demo` (scripts/demo.py), shrunk: Hydra-composed cells through lmms-eval's evaluator
on the committed needle model, tables read back from the cells' metrics.json files, the plots,
a terminal that shows one progress bar per part and the tables (each cell's own output in its
log file), and a rerun that skips every finished cell."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TRANSFORMERS_VERBOSITY": "error"}

pytestmark = pytest.mark.xdist_group("demo")


def run_demo(out) -> str:
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--out", str(out), "--methods", "none,adaretake",
           "--datasets", "videomme,lvbench", "--videos", "2", "--frames", "32", "--max-context", "500",
           "--needle-methods", "uniform,adaretake,snapkv", "--needle-samples", "4", "--hybrid-methods", "adaretake",
           "--streaming-methods", "infinipot_v",
           "--streaming-frames", "16,32"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # the terminal: the parts' progress bars (one per part, the cell as postfix) on stderr, nothing
    # else (no lmms-eval / transformers / datasets bars or logs); those went to the cells' logs
    bars = [line for line in re.split(r"[\r\n]+", r.stderr) if line.strip()]
    assert bars and all(re.match(r"part (1|2|2b|3): +\d+%\|", line) for line in bars), bars[:20]
    assert {line.split(":")[0] for line in bars} >= {"part 1", "part 2", "part 3"}
    assert "Loading weights" not in r.stdout and "[retake]" not in r.stdout and "Generating" not in r.stdout
    assert f"{out}/logs/<part>/<cell>.log" in r.stdout.splitlines()[0]
    return r.stdout


def rows(text: str, names) -> dict[str, list[str]]:
    out = {}
    for line in text.splitlines():
        for name in names:
            if line.startswith(name + " "):
                out[name] = line[len(name):].split()
    return out


def mean_kv(folder) -> float:
    with open(os.path.join(folder, "predictions.jsonl")) as f:
        kv = [json.loads(line)["kv_tokens_mean"] for line in f]
    return sum(kv) / len(kv)


def test_demo_runs_cells_and_prints_the_tables(tmp_path):
    out = run_demo(tmp_path)
    end2 = out.index("part 2b") if "part 2b" in out else out.index("part 3:")  # (2b: its table or the skip line)
    part1, part2 = out[out.index("part 1:"):out.index("part 2:")], out[out.index("part 2:"):end2]
    part3 = out[out.index("part 3:"):]

    cells = sorted(os.listdir(tmp_path / "runs"))
    assert len(cells) == 4
    table = rows(part1, ["none", "adaretake"])
    assert set(table) == {"none", "adaretake"}
    for method, cols in table.items():  # videomme, lvbench, keep, KV mean, prefill s, unparsable, failed
        mine = [c for c in cells if f"__{method}__" in c]
        stored = [json.load(open(tmp_path / "runs" / c / "metrics.json")) for c in mine]
        scores = {m["cell"]["dataset"]: m["metrics"]["accuracy"] for m in stored}
        assert [float(cols[0]), float(cols[1])] == [pytest.approx(scores["videomme"], abs=0.05),
                                                    pytest.approx(scores["lvbench"], abs=0.05)]
        keep = sum(m["efficiency"]["achieved_keep_ratio"]["mean"] for m in stored) / len(stored)
        assert float(cols[2]) == pytest.approx(keep, abs=5e-4)
        kv = sum(mean_kv(tmp_path / "runs" / c) for c in mine) / len(mine)
        assert float(cols[3]) == pytest.approx(kv, abs=0.05) and float(cols[4]) > 0 and cols[6] == "0"
    assert float(table["adaretake"][3]) <= 500 + 4  # the budget, within a token per chunk
    assert float(table["none"][3]) > 500 and float(table["none"][2]) == 1.0  # uncompressed: compression was needed
    assert float(table["adaretake"][2]) < 1.0

    part2, heads = part2[:part2.index("per KV head")], part2[part2.index("per KV head"):]
    needle = rows(part2, ["none (all tokens)", "uniform", "adaretake", "snapkv"])
    # per budget: accuracy and keep ratio; the question-unknown accuracy at r = 0.1; prefill seconds
    assert set(needle) == {"none (all tokens)", "uniform", "adaretake", "snapkv"} and all(len(v) == 8 for v in needle.values())
    metrics = [json.load(open(tmp_path / "needle_runs" / c / "metrics.json")) for c in os.listdir(tmp_path / "needle_runs")]
    assert len(metrics) == 1 + 3 * 3 + 3 + 3  # none, 3 methods x (3 budgets + unknown), snapkv shared x 3 budgets
    # snapkv per KV head (the main table's row) beside snapkv with one set per layer
    one = {m["cell"]["max_context"]: m["metrics"]["accuracy"] for m in metrics
           if m["cell"]["method_params"].get("head_selection") == "shared"}
    per_head = rows(heads, ["snapkv"])["snapkv"]
    assert per_head[0::2] == needle["snapkv"][0:6:2]
    assert [float(v) for v in per_head[1::2]] == [pytest.approx(one[c], abs=0.05) for c in sorted(one)]
    metrics = [m for m in metrics if m["cell"]["method_params"].get("head_selection") != "shared"]
    aware = [m for m in metrics if m["cell"]["question_mode"] == "aware"]
    blind = {m["cell"]["method"]: m for m in metrics if m["cell"]["question_mode"] == "unknown"}
    budgets = sorted({m["cell"]["max_context"] for m in aware if m["cell"]["method"] == "adaretake"})
    by = {(m["cell"]["method"], m["cell"]["max_context"]): m["metrics"]["accuracy"] for m in aware}
    keep = {(m["cell"]["method"], m["cell"]["max_context"]): m["efficiency"]["achieved_keep_ratio"]["mean"] for m in aware}
    for method in ("uniform", "adaretake"):
        assert [float(v) for v in needle[method][0:6:2]] == [pytest.approx(by[(method, c)], abs=0.05) for c in budgets]
        assert [float(v) for v in needle[method][1:6:2]] == [pytest.approx(keep[(method, c)], abs=5e-4) for c in budgets]
        assert float(needle[method][6]) == pytest.approx(blind[method]["metrics"]["accuracy"], abs=0.05)
        # the same budget in both modes (question_tokens is the needle question's own length)
        assert blind[method]["cell"]["max_context"] == budgets[1]
        assert blind[method]["efficiency"]["kept_video_tokens_per_layer"] == \
            pytest.approx(next(m for m in aware if m["cell"]["method"] == method and m["cell"]["max_context"] == budgets[1])
                          ["efficiency"]["kept_video_tokens_per_layer"], abs=1.0)

    if os.path.isdir(tmp_path / "hybrid_runs"):  # part 2b: the committed hybrid needle model
        hybrid = out[out.index("part 2b:"):out.index("part 3:")]
        table = rows(hybrid, ["none (all tokens)", "adaretake"])
        cells = [json.load(open(tmp_path / "hybrid_runs" / c / "metrics.json")) for c in os.listdir(tmp_path / "hybrid_runs")]
        assert len(cells) == 1 + 1 and all(len(v) == 2 for v in table.values())  # 1 budget: accuracy, keep
        by = {m["cell"]["max_context"]: m for m in cells if m["cell"]["method"] == "adaretake"}
        assert [float(v) for v in table["adaretake"][0::2]] == [pytest.approx(by[c]["metrics"]["accuracy"], abs=0.05) for c in sorted(by)]
        assert all(m["efficiency"]["recurrent_state_bytes"]["mean"] > 0 for m in cells)
    else:
        assert "part 2b skipped" in out
    stream = rows(part3, ["none", "infinipot_v"])  # per frames: accuracy, held entries, peak KiB
    assert all(len(v) == 6 for v in stream.values())
    cap = budgets[1] - blind["adaretake"]["efficiency"]["kv_tokens_per_layer"]["mean"] + \
        blind["adaretake"]["efficiency"]["kept_video_tokens_per_layer"]["mean"]  # max_context - the text
    held, peak = [float(v) for v in stream["infinipot_v"][1::3]], [float(v) for v in stream["infinipot_v"][2::3]]
    assert held[0] == held[1] <= cap + 1e-6 and peak[0] == peak[1]
    none_held = [float(v) for v in stream["none"][1::3]]
    assert none_held[1] == 2 * none_held[0] > held[0] and float(stream["none"][5]) > float(stream["none"][2]) > peak[0]
    for name in ("accuracy_vs_keep", "accuracy_vs_budget", "accuracy_vs_prefill", "pareto_prefill"):
        assert (tmp_path / "plots" / f"needle_qwen2_5_vl__needle__{name}.png").exists()
    # each cell's own output in its log: lmms-eval's bars and the runner's lines
    logs = tmp_path / "logs"
    assert sorted(os.listdir(logs / "part1")) == ["adaretake_lvbench.log", "adaretake_videomme.log", "none_lvbench.log",
                                                  "none_videomme.log"]
    assert len(os.listdir(logs / "part2")) == len(os.listdir(tmp_path / "needle_runs"))
    text = (logs / "part2" / "snapkv_C=270_question_unknown.log").read_text()
    assert "[retake] cell " in text and "needle accuracy =" in text and "Postprocessing" in text

    again = run_demo(tmp_path)  # finished cells are skipped: the same tables
    assert again[again.index("part 1:"):again.index(" cells in ")] == out[out.index("part 1:"):out.index(" cells in ")]
    assert rows(again[again.index("part 2:"):again.index("per KV head")], needle) == needle


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_script", os.path.join(ROOT, "scripts", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cells_output_goes_to_its_log_and_everything_is_restored(tmp_path, capfd):
    """What a cell prints, at the file-descriptor level (C libraries) and in Python (prints,
    sys.stderr, logging handlers, tqdm bars, a handler created during the cell), goes to the log;
    the terminal's streams and handlers are back afterwards, after an error and a Ctrl-C too."""
    from tqdm import tqdm

    demo = load_demo()
    logger = logging.getLogger("test_demo_cell")
    before = logging.StreamHandler(sys.stderr)
    logger.addHandler(before)
    logger.setLevel(logging.INFO)
    stdout, stderr, inside = sys.stdout, sys.stderr, logging.getLogger("test_demo_cell.inside")
    made = []

    def cell(i):
        print(f"print {i}")
        os.write(1, f"fd1 {i}\n".encode())
        os.write(2, f"fd2 {i}\n".encode())
        sys.stderr.write(f"warning {i}\n")  # (what warnings.showwarning does; pytest records real warnings)
        logger.info(f"logged {i}")
        for _ in tqdm(range(3), desc=f"bar {i}"):
            pass
        if not made:
            made.append(logging.StreamHandler(sys.stderr))  # a library's handler, made during a cell
            inside.addHandler(made[0])
        inside.warning(f"inside {i}")

    capfd.readouterr()
    path = str(tmp_path / "logs" / "part1" / "c.log")
    try:
        with demo.output_to(path):
            cell(1)
        for error in (RuntimeError("boom"), KeyboardInterrupt()):
            with pytest.raises(type(error)):
                with demo.output_to(path):
                    cell(2)
                    raise error
        captured = capfd.readouterr()
        assert captured.out == "" and captured.err == ""  # nothing on the terminal
        text = open(path).read()
        for i in (1, 2):
            for line in (f"print {i}", f"fd1 {i}", f"fd2 {i}", f"warning {i}", f"logged {i}", f"bar {i}: 100%",
                         f"inside {i}"):
                assert line in text, line
        assert sys.stdout is stdout and sys.stderr is stderr and before.stream is stderr
        print("after")
        inside.warning("after the cell")  # the handler made inside writes to the terminal, not a closed file
        captured = capfd.readouterr()
        assert captured.out == "after\n" and "after the cell" in captured.err and "after" not in open(path).read()
    finally:
        logger.removeHandler(before)
        for handler in made:
            inside.removeHandler(handler)


def test_cell_labels_name_what_differs_in_a_part():
    demo = load_demo()
    part1 = [["method=none", "dataset=videomme", "engine.max_context=640", "model.max_frames=64"],
             ["method=snapkv", "dataset=lvbench", "engine.max_context=640", "model.max_frames=64"]]
    assert demo.cell_labels(part1) == ["none videomme", "snapkv lvbench"]
    part2 = [["method=none", "engine.max_context=100000"], ["method=snapkv", "engine.max_context=270"],
             ["method=snapkv", "engine.max_context=270", "engine.question_mode=unknown"],
             ["method=snapkv", "engine.max_context=270", "method.params.head_selection=shared"]]
    assert demo.cell_labels(part2) == ["none C=100000", "snapkv C=270", "snapkv C=270 question unknown",
                                       "snapkv C=270 shared"]


def test_a_failing_cell_ends_the_demo_with_one_line_naming_its_log(tmp_path, capfd):
    demo = load_demo()
    with pytest.raises(SystemExit) as e:
        demo.run_cells([["method=nosuchmethod", "dataset=needle", f"run.results_root={tmp_path / 'runs'}"]],
                       "part 1", str(tmp_path))
    err = capfd.readouterr().err
    log = tmp_path / "logs" / "part1" / "nosuchmethod.log"
    assert e.value.code == 1 and "Traceback" not in err and "Available options" not in err
    assert f"part 1: cell nosuchmethod failed: MissingConfigException: In 'config': Could not find 'method/nosuchmethod'\n" \
           f"its output and the traceback: {log}" in err
    assert "Traceback" in log.read_text() and "Available options in 'method'" in log.read_text()
