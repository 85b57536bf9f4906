"""`make demo` (scripts/demo.py): Hydra-composed cells through lmms-eval's evaluator, a table
read back from the cells' metrics.json files, and a rerun that skips every finished cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TRANSFORMERS_VERBOSITY": "error"}

pytestmark = pytest.mark.xdist_group("demo")


def run_demo(out) -> str:
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--out", str(out), "--methods", "none,adaretake",
           "--datasets", "videomme,lvbench", "--videos", "2", "--frames", "32", "--max-context", "500"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_demo_runs_cells_and_prints_the_table(tmp_path):
    out = run_demo(tmp_path)
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["none"], ["adaretake"])}
    assert set(lines) == {"none", "adaretake"}
    cells = sorted(os.listdir(tmp_path / "runs"))
    assert len(cells) == 4 and all((tmp_path / "runs" / c / "metrics.json").exists() for c in cells)
    for method, cols in lines.items():
        # columns: method, videomme, lvbench, KV mean, unparsable, failed
        kv = []
        for c in cells:
            if f"__{method}__" in c:
                with open(tmp_path / "runs" / c / "predictions.jsonl") as f:
                    kv += [json.loads(line)["kv_tokens_mean"] for line in f]
        assert float(cols[3]) == pytest.approx(sum(kv) / len(kv), abs=0.05)
        assert cols[5] == "0"
    assert float(lines["adaretake"][3]) <= 500 + 4  # the budget, within a token per chunk
    assert float(lines["none"][3]) > 500  # the video does not fit uncompressed: compression was needed
    again = run_demo(tmp_path)  # finished cells are skipped
    table = lambda text: text[text.index("retake demo:"):text.index(" cells in ")]  # noqa: E731
    assert table(again) == table(out)
    assert "4 cells in" in again
