"""logger=wandb, offline, read back from the run files: one run per cell named after the cell,
job_type = dataset, group = experiment, metrics and efficiency in the summary (not the history),
a samples table; a cell logged before is not logged again; logger=none / an unknown logger."""

from __future__ import annotations

import glob
import json
import os
import time

import pytest
from omegaconf import OmegaConf

from retake.harness.trackers import SAMPLE_COLUMNS, comparison_row, log_cell, run_id

RESULT = {
    "status": "done", "failed_fraction": 0.0, "chance_accuracy": 25.0,
    "cell": {"model": "needle_qwen2_5_vl", "method": "adaretake", "dataset": "needle", "max_context": 270, "max_frames": 64},
    "metrics": {"accuracy": 75.0, "accuracy_ci95_low": 30.1, "accuracy_ci95_high": 95.4, "num_samples": 4,
                "num_unparsable": 1, "num_failed": 0, "per_question_type": {"colour": {"accuracy": 100.0}}},
    "primary": "accuracy",
    "efficiency": {"achieved_keep_ratio": {"mean": 0.1}, "prefill_seconds": {"mean": 0.5, "total": 2.0},
                   "peak_memory_bytes": {"mean": 1e9, "max": 2e9}, "samples_per_hour": 900.0},
}
CELL = "needle_qwen2_5_vl__adaretake__needle__270__64"


def logger_cfg(name: str, **kw):
    return OmegaConf.create({"logger": {"name": name, "project": "retake", "entity": None, "group": "demo", **kw}})


def cell_folder(tmp_path, result=RESULT):
    d = tmp_path / "runs" / CELL
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(result))
    records = [{"uid": f"q{i}", "prediction": "A", "parsed": "A", "answer": "AB"[i % 2], "error": None, "frames": 64,
                "video_tokens": 512, "achieved_keep_ratio": 0.1, "kv_tokens_mean": 270.0, "prefill_seconds": 0.5,
                "decode_seconds": 0.1, "peak_memory_bytes": 2e9, "warnings": []} for i in range(4)]
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d


def read_run(path: str) -> dict:
    """The run record, summary items, history keys and whether the exit record is there, of an
    offline run file."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    ds = datastore.DataStore()
    ds.open_for_scan(path)
    out = {"summary": {}, "history": set()}
    while (data := ds.scan_data()) is not None:
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
        elif kind == "summary":
            out["summary"].update({u.key: json.loads(u.value_json) for u in rec.summary.update if u.key})
        elif kind == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in rec.history.item}
        elif kind == "exit":
            out["exit"] = True
    return out


def offline_runs(wandb_dir, count: int, timeout: float = 300) -> list[str]:
    """The ``count`` offline run folders under ``wandb_dir``, once there (see :func:`finished_run`)."""
    deadline = time.monotonic() + timeout
    while len(runs := sorted(glob.glob(str(wandb_dir / "offline-run-*")))) < count:
        assert time.monotonic() < deadline, f"{len(runs)} of {count} offline runs in {wandb_dir} after {timeout} s"
        time.sleep(0.2)
    assert len(runs) == count, runs
    return runs


def finished_run(run_dir: str, timeout: float = 300) -> tuple[dict, str]:
    """(the run, as :func:`read_run` reads it, and its samples table file) once wandb's service
    has written all of it. ``run.finish()`` can return before the service (another process)
    has flushed the offline file: on a loaded machine the file then lacks its records (the
    flaky ``KeyError: 'run'`` of issue 24). The run is whole when its exit record, written
    last, is there; until then this waits (it never times anything: the deadline only stops
    a hung service)."""
    deadline = time.monotonic() + timeout
    while True:
        files = glob.glob(run_dir + "/run-*.wandb")
        tables = glob.glob(run_dir + "/files/media/table/samples_*.table.json")
        if len(files) == 1 and tables:
            try:
                run = read_run(files[0])
            except Exception:  # noqa: BLE001 - a record still being written
                run = {}
            if run.get("exit") and "run" in run:
                return run, tables[0]
        assert time.monotonic() < deadline, f"wandb wrote no whole run in {run_dir} within {timeout} s: {files}"
        time.sleep(0.2)


def test_wandb_offline_run_of_a_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = cell_folder(tmp_path)
    assert log_cell(logger_cfg("wandb", mode="offline"), RESULT, directory=str(folder))
    (run_dir,) = offline_runs(tmp_path / "wandb", 1)
    run, table = finished_run(run_dir)
    assert run["run"].display_name == CELL and run["run"].run_id == run_id(str(folder))
    assert run["run"].job_type == "needle" and run["run"].run_group == "demo"
    assert list(run["run"].tags) == ["needle_qwen2_5_vl", "adaretake", "needle"]
    summary = run["summary"]
    assert summary["accuracy"] == 75.0 and summary["score"] == 75.0 and summary["accuracy_ci95_low"] == 30.1
    assert summary["per_question_type/colour/accuracy"] == 100.0
    assert summary["efficiency/prefill_seconds/mean"] == 0.5 and summary["efficiency/samples_per_hour"] == 900.0
    assert summary["status"] == "done" and summary["chance_accuracy"] == 25.0
    assert not {k for k in run["history"] if "accuracy" in k or "efficiency" in k}  # no metric in the history
    data = json.load(open(table))
    assert data["columns"] == list(SAMPLE_COLUMNS) and len(data["data"]) == 4
    assert dict(zip(data["columns"], data["data"][1]))["answer"] == "B"
    # the same metrics.json again (a rerun of a skipped cell): nothing new
    assert not log_cell(logger_cfg("wandb", mode="offline"), RESULT, directory=str(folder), log=lambda m: None)
    assert len(glob.glob(str(tmp_path / "wandb" / "offline-run-*"))) == 1
    # a changed cell (its failures retried) is logged again, to the same run id
    (folder / "metrics.json").write_text(json.dumps({**RESULT, "failed_fraction": 0.0, "chance_accuracy": 25.000001}))
    assert log_cell(logger_cfg("wandb", mode="offline"), RESULT, directory=str(folder))
    runs = offline_runs(tmp_path / "wandb", 2)
    assert all(f"-{run_id(str(folder))}" in os.path.basename(r) for r in runs), runs


def test_comparison_row_holds_score_and_cost():
    row = comparison_row(RESULT)
    assert (row["score"], row["ci95_low"], row["achieved_keep_ratio"], row["prefill_seconds"]) == (75.0, 30.1, 0.1, 0.5)
    assert row["peak_memory_bytes"] == 2e9 and row["status"] == "done"


def test_none_logs_nothing_and_unknown_names_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    assert not log_cell(logger_cfg("none"), RESULT, directory=str(tmp_path))
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="valid choices: none, wandb"):
        log_cell(logger_cfg("tensorboard"), RESULT)
