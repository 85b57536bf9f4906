"""logger=wandb, offline: one run per finished cell whose comparison table holds the cell's
row (the columns every cell shares), and logger=none / an unknown logger."""

from __future__ import annotations

import glob
import json

import pytest
from omegaconf import OmegaConf

from retake.harness.logging import comparison_row, log_cell

RESULT = {
    "cell": {"model": "needle_qwen2_5_vl", "method": "adaretake", "dataset": "needle", "max_context": 270, "max_frames": 64},
    "metrics": {"accuracy": 75.0, "num_samples": 4, "num_unparsable": 1, "num_failed": 0,
                "per_question_type": {"colour": {"accuracy": 100.0}}},
    "primary": "accuracy",
}


def logger_cfg(name: str, **kw):
    return OmegaConf.create({"logger": {"name": name, "project": "retake", "entity": None, "group": "demo", **kw}})


def test_wandb_offline_run_holds_the_comparison_row(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_cell(logger_cfg("wandb", mode="offline"), RESULT)
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    assert len(runs) == 1 and glob.glob(runs[0] + "/run-*.wandb")
    (table,) = glob.glob(runs[0] + "/files/media/table/comparison_*.table.json")
    data = json.load(open(table))
    row = comparison_row(RESULT)
    assert data["columns"] == list(row) and data["data"] == [list(row.values())]
    assert dict(zip(data["columns"], data["data"][0]))["score"] == 75.0


def test_none_logs_nothing_and_unknown_names_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    log_cell(logger_cfg("none"), RESULT)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="valid choices: none, wandb"):
        log_cell(logger_cfg("tensorboard"), RESULT)
