"""Experiment trackers for finished cells (``logger=none|wandb``), rank 0 only.

wandb: one run per cell, ``group`` = the experiment, ``tags`` = model / method / dataset
(the names used everywhere), the resolved config, the cell's metrics (headline, counts and
breakdowns flattened as ``breakdown/<key>``) and a one-row comparison table whose columns are
the same for every cell, so the project's table view compares methods side by side.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

LOGGERS = ("none", "wandb")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def comparison_row(result: dict) -> dict:
    cell, metrics = result["cell"], result["metrics"]
    return {
        "model": cell["model"], "method": cell["method"], "dataset": cell["dataset"],
        "max_context": cell["max_context"], "max_frames": cell["max_frames"],
        "primary": result["primary"], "score": metrics.get(result["primary"]),
        "num_samples": metrics.get("num_samples"), "num_unparsable": metrics.get("num_unparsable"),
        "num_failed": metrics.get("num_failed"),
    }


def log_cell(cfg: DictConfig, result: dict) -> None:
    name = cfg.logger.name
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r}; valid choices: {', '.join(LOGGERS)}")
    if name == "none":
        return
    import wandb

    cell = result["cell"]
    run = wandb.init(
        project=cfg.logger.project, entity=cfg.logger.get("entity"), group=cfg.logger.get("group"),
        mode=cfg.logger.get("mode"), name=f"{cell['model']}__{cell['method']}__{cell['dataset']}",
        tags=[cell["model"], cell["method"], cell["dataset"]],
        config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous",
    )
    try:
        run.log(flatten(result["metrics"]))
        row = comparison_row(result)
        run.log({"comparison": wandb.Table(columns=list(row), data=[list(row.values())])})
        run.summary.update({"score": row["score"], "primary": row["primary"]})
    finally:
        run.finish()
