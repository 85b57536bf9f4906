"""Hydra entry: one run = one cell (model x method x dataset x budget x frames).

    python -m retake.run model=qwen2_vl_7b method=adaretake dataset=videomme data_root=DATA
    python -m retake.run -m +experiment=table2 data_root=DATA

The configs live in the project's ``conf/`` (next to ``src/``). All the work is done by
:func:`retake.harness.runner.run_cell`; this file only composes the config and logs.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

CONFIG_PATH = "../../conf"


def run(cfg: DictConfig) -> dict | None:
    """Run one composed config; returns the cell's metrics.json content on rank 0, else None."""
    from .harness.logging import log_cell
    from .harness.runner import run_cell

    result = run_cell(cfg)
    if result is not None:
        log_cell(cfg, result)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
