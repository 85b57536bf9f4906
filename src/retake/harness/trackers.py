"""Experiment trackers for finished cells (``logger=none|wandb``), rank 0 only.

wandb, one run per cell:

- ``name`` = the cell's folder name (model, method[-params], dataset, budget, frames[, settings]),
  ``id`` derived from the cell's folder (the same cell is always the same run: a rerun that
  changed the cell, e.g. a retry of its failures, updates it), ``job_type`` = the dataset,
  ``group`` = the experiment, ``tags`` = model / method / dataset (the names used everywhere);
- ``config`` = the resolved cell config;
- the **summary** holds the cell's metrics (headline with its 95 % interval, counts, breakdowns
  flattened as ``per_duration/long/accuracy``), its ``efficiency/...`` block, ``status``,
  ``failed_fraction``, ``chance_accuracy`` and ``score`` / ``primary`` (nothing goes to the
  step history: a cell is one measurement, not a curve);
- one table ``samples``: every sample's prediction, answer, parsed letter, error and cost;
- a cell whose metrics.json was already logged (``<cell>/wandb.json`` holds its run id and the
  file's hash) is not logged again, so rerunning a sweep of finished (skipped) cells adds
  nothing.

The experiment-level comparison (one table of every cell of a sweep) is logged by the sweep
summary (``retake.harness.sweep``). lmms-eval's own ``WandbLogger`` is not used: it logs
lmms-eval's aggregate and its sample records, not our scores, intervals, costs and statuses,
and names runs its own way.
"""

from __future__ import annotations

import hashlib
import json
import os

from omegaconf import DictConfig, OmegaConf

LOGGERS = ("none", "wandb")
LOGGED = "wandb.json"  # in the cell folder: what was logged, so a skipped cell is not logged twice
# per-sample columns of the samples table (a prediction line's fields)
SAMPLE_COLUMNS = ("uid", "prediction", "parsed", "answer", "error", "frames", "video_tokens", "achieved_keep_ratio",
                  "kv_tokens_mean", "prefill_seconds", "decode_seconds", "peak_memory_bytes", "warnings")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def summary(result: dict) -> dict:
    """What a cell's wandb run summary holds (see the module doc)."""
    return {
        **flatten(result["metrics"]),
        **flatten(result.get("efficiency") or {}, "efficiency/"),
        "score": result["metrics"].get(result["primary"]),
        "primary": result["primary"],
        "status": result.get("status", "done"),
        "failed_fraction": result.get("failed_fraction", 0.0),
        "chance_accuracy": result.get("chance_accuracy"),
    }


def comparison_row(result: dict) -> dict:
    """One cell as a row of the experiment's comparison table: its keys, score and cost."""
    cell, metrics, eff = result["cell"], result["metrics"], result.get("efficiency") or {}
    primary = result["primary"]
    return {
        "model": cell["model"], "method": cell["method"], "dataset": cell["dataset"],
        "max_context": cell["max_context"], "max_frames": cell["max_frames"],
        "primary": primary, "score": metrics.get(primary),
        "ci95_low": metrics.get(f"{primary}_ci95_low"), "ci95_high": metrics.get(f"{primary}_ci95_high"),
        "achieved_keep_ratio": (eff.get("achieved_keep_ratio") or {}).get("mean"),
        "kv_tokens_per_layer": (eff.get("kv_tokens_per_layer") or {}).get("mean"),
        "prefill_seconds": (eff.get("prefill_seconds") or {}).get("mean"),
        "peak_memory_bytes": (eff.get("peak_memory_bytes") or {}).get("max"),
        "samples_per_hour": eff.get("samples_per_hour"),
        "num_samples": metrics.get("num_samples"), "num_unparsable": metrics.get("num_unparsable"),
        "num_failed": metrics.get("num_failed"), "status": result.get("status", "done"),
    }


def run_id(directory: str) -> str:
    """The wandb run id of a cell: 16 hex digits of its folder's absolute path."""
    return hashlib.sha1(os.path.abspath(directory).encode()).hexdigest()[:16]


def _file_hash(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def already_logged(directory: str) -> bool:
    """Whether the cell's current metrics.json was logged before (``LOGGED`` matches it)."""
    path = os.path.join(directory, LOGGED)
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        try:
            logged = json.load(f)
        except json.JSONDecodeError:
            return False
    return logged.get("metrics_sha1") == _file_hash(os.path.join(directory, "metrics.json")) is not None


def sample_rows(directory: str) -> tuple[list[str], list[list]]:
    """The samples table of a cell: :data:`SAMPLE_COLUMNS` of every line of predictions.jsonl."""
    path = os.path.join(directory, "predictions.jsonl")
    rows = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                rows.append([_cell(rec.get(c)) for c in SAMPLE_COLUMNS])
    return list(SAMPLE_COLUMNS), rows


def _cell(v):
    if isinstance(v, (list, dict)):
        return "; ".join(map(str, v)) if isinstance(v, list) else json.dumps(v)
    return v


def log_cell(cfg: DictConfig, result: dict, directory: str | None = None, log=print) -> bool:
    """Log one finished cell to ``cfg.logger``; returns whether a run was written (False for
    ``none`` and for a cell logged before). ``directory``: the cell's folder (default: derived
    from ``cfg``)."""
    name = cfg.logger.name
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r}; valid choices: {', '.join(LOGGERS)}")
    if name == "none":
        return False
    if directory is None:
        from .runner import cell_dir

        directory = cell_dir(cfg)
    directory = os.path.abspath(directory)
    if already_logged(directory):
        log(f"[retake] wandb: {os.path.basename(directory)} was logged before (run {run_id(directory)}); not again")
        return False
    import wandb

    cell = result["cell"]
    rid = run_id(directory)
    run = wandb.init(
        project=cfg.logger.project, entity=cfg.logger.get("entity"), group=cfg.logger.get("group"),
        mode=cfg.logger.get("mode"), name=os.path.basename(directory), id=rid, resume="allow",
        job_type=cell["dataset"], tags=[cell["model"], cell["method"], cell["dataset"]],
        config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous",
    )
    try:
        run.summary.update(summary(result))
        columns, rows = sample_rows(directory)
        if rows:
            run.log({"samples": wandb.Table(columns=columns, data=rows)})
    finally:
        run.finish()
    with open(os.path.join(directory, LOGGED), "w", encoding="utf-8") as f:
        json.dump({"run_id": rid, "project": cfg.logger.project,
                   "metrics_sha1": _file_hash(os.path.join(directory, "metrics.json"))}, f)
    return True
