"""A Hydra multirun as a user runs it (subprocess, twice): timestamped sweep folders that never
overwrite each other, retake's lines in each job's log, one summary table of the sweep's cells,
wandb runs named after their cells, a comparison run per sweep, no cell logged twice."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pandas as pd
import pytest

from retake.harness.benchmarks.synthetic import write_synthetic_benchmark
from retake.tiny import write_tiny_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
       "WANDB_SILENT": "true"}


def read_runs(wandb_dir):
    """(display name, job_type, group) of every offline wandb run under ``wandb_dir``."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    out = []
    for path in sorted(glob.glob(str(wandb_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        ds = datastore.DataStore()
        ds.open_for_scan(path)
        while (data := ds.scan_data()) is not None:
            rec = pb.Record()
            rec.ParseFromString(data)
            if rec.WhichOneof("record_type") == "run":
                out.append((rec.run.display_name, rec.run.job_type, rec.run.run_group))
                break
    return out


@pytest.mark.xdist_group("sweep")
def test_a_sweep_twice(tmp_path):
    tiny = write_tiny_model("qwen2_vl", tmp_path / "tiny", seed=0)
    data = write_synthetic_benchmark(tmp_path / "data", formats=("synthetic",), num_videos=2)["synthetic"]
    work = tmp_path / "work"
    work.mkdir()
    cmd = [sys.executable, "-m", "retake.run", "-m", "model=tiny_qwen2_vl", f"model.pretrained={tiny}",
           "dataset=synthetic", f"dataset.data_root={data}", "method=none,snapkv", "engine.max_context=330",
           "engine.chunk_frames=4", "engine.max_new_tokens=2", "sampling.max_long_side=56", "model.max_frames=8",
           "run.results_root=runs", "logger=wandb", "logger.mode=offline", "experiment_name=sweeptest"]
    env = {**ENV, "WANDB_DIR": str(tmp_path)}
    for _ in range(2):
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    sweeps = sorted(glob.glob(str(work / "multirun" / "sweeptest" / "*")))
    assert len(sweeps) == 2  # timestamped: the second sweep has its own folder
    for sweep in sweeps:
        assert os.path.isfile(os.path.join(sweep, "multirun.yaml"))
        summary = pd.read_csv(os.path.join(sweep, "sweep_summary.csv"))
        assert list(summary["method"]) == ["none", "snapkv"]  # job order
        assert summary["score"].notna().all() and (summary["status"] == "done").all()
        assert {"keep", "kv_per_layer", "prefill_s", "ci95_low", "ci95_high"} <= set(summary.columns)
        md = open(os.path.join(sweep, "sweep_summary.md")).read()
        assert md.startswith(f"# Sweep {os.path.relpath(sweep, work)}") and "2 cells from the jobs of" in md
    # the jobs' logs hold retake's lines (Python logging through Hydra's job logging)
    first, second = (open(glob.glob(os.path.join(s, "0", "*.log"))[0]).read() for s in sweeps)
    assert "[retake][INFO] - cell " in first and "synthetic accuracy = " in first
    assert "cell done, skipped" in second
    runs = read_runs(tmp_path)
    cells = [r for r in runs if r[1] == "synthetic"]
    assert sorted(name for name, _, _ in cells) == sorted(os.path.basename(p) for p in glob.glob(str(work / "runs" / "*")))
    assert len(cells) == 2 and all(group == "sweeptest" for _, _, group in runs)  # the skipped cells: not again
    assert [r[1] for r in runs].count("sweep_summary") == 2
