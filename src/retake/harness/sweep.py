"""After a Hydra multirun: one table of every cell of the sweep, accuracy beside cost.

Each job records the cell it ran (``cell.json`` in the job's folder, :func:`record_job`); at
the end of the sweep the callback :class:`SweepSummary` (``conf/config.yaml``:
``hydra.callbacks.sweep_summary``) reads those cells' metrics.json files and writes
``sweep_summary.md`` and ``sweep_summary.csv`` in the sweep folder (``multirun/<experiment>/
<time>/``): the rows of ``retake.harness.tables.cells_table``, in job order. A job that ended
without a finished cell (an error, an interrupt) is listed under the table. With
``logger=wandb`` the same table is logged as the experiment's comparison (one run of
``job_type`` ``sweep_summary`` in the experiment's group).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

JOB_FILE = "cell.json"
SUMMARY = "sweep_summary"


def record_job(directory: str) -> None:
    """Under Hydra, write the cell folder of this job into the job's output folder."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    out = HydraConfig.get().runtime.output_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, JOB_FILE), "w", encoding="utf-8") as f:
        json.dump({"cell": os.path.abspath(directory)}, f)


def job_cells(sweep_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(cell folders recorded by the sweep's jobs, in job order; job folders with none)."""
    root = Path(sweep_dir)
    jobs = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) \
        if root.is_dir() else []
    cells, missing = [], []
    for job in jobs:
        record = job / JOB_FILE
        cell = json.loads(record.read_text())["cell"] if record.is_file() else None
        if cell and (Path(cell) / "metrics.json").is_file():
            cells.append(cell)
        else:
            missing.append(str(job))
    return cells, missing


def write_summary(sweep_dir: str | os.PathLike) -> tuple[list[Path], object]:
    """``sweep_summary.{md,csv}`` in ``sweep_dir``; returns the paths and the table."""
    import pandas as pd

    from .tables import cells_table, read_cell, table_markdown

    cells, missing = job_cells(sweep_dir)
    table = cells_table(pd.DataFrame([read_cell(Path(c) / "metrics.json") for c in cells]), sort=False)  # job order
    foot = f"{len(cells)} cells from the jobs of {sweep_dir}."
    if missing:
        foot += f" {len(missing)} job(s) ended without a finished cell: {', '.join(missing)}."
    out = Path(sweep_dir)
    md, csv = out / f"{SUMMARY}.md", out / f"{SUMMARY}.csv"
    table.to_csv(csv, index=False)
    md.write_text(table_markdown(f"Sweep {out}: every cell, accuracy beside cost", table, foot))
    return [md, csv], table


class SweepSummary(Callback):
    """Hydra callback: :func:`write_summary` when a multirun ends (and the wandb comparison)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = config.hydra.sweep.dir
        if not os.path.isdir(sweep_dir):
            return
        paths, table = write_summary(sweep_dir)
        print(f"[retake] sweep summary: {paths[0]}", flush=True)
        logger = config.get("logger") or {}
        name = logger.get("name")
        if getattr(name, "value", name) == "wandb" and len(table):
            log_comparison(config, table, sweep_dir)


def log_comparison(config: DictConfig, table, sweep_dir: str) -> None:
    """The sweep's table as one wandb run of the experiment's group (``job_type`` sweep_summary)."""
    import wandb

    logger = config.logger
    name = f"{config.get('experiment_name', 'sweep')} {os.path.basename(os.path.normpath(sweep_dir))}"
    run = wandb.init(project=logger.project, entity=logger.get("entity"), group=logger.get("group"),
                     mode=logger.get("mode"), name=name, job_type=SUMMARY, reinit="finish_previous",
                     config={"sweep_dir": os.path.abspath(sweep_dir), "cells": len(table)})
    try:
        run.log({"comparison": wandb.Table(dataframe=table)})
    finally:
        run.finish()
