"""Hydra entry: one run = one cell (model x method x dataset x budget x frames).

    python -m retake.run                                   # the needle model on the needle set (made on first use)
    python -m retake.run model=qwen2_vl_7b method=adaretake dataset=videomme data_root=DATA
    python -m retake.run -m +experiment=table2 data_root=DATA

The configs ship inside the package (``retake/conf``; ``conf/`` in the checkout links there), so
an installed wheel finds them too. All the work is done by
:func:`retake.harness.runner.run_cell`; this file only composes the config and logs.

A user error (a checkpoint, a benchmark or a setting that is not there) is one line on stderr
and exit code 2, no traceback (``RETAKE_TRACEBACK=1`` shows it); a file that cannot be written
(read-only, permission, disk full) is one line naming it, exit code 74; a cell another process
runs, with ``run.on_busy=exit``, exit code 75; Ctrl-C / SIGTERM at any moment (start-up and
imports included) is one line, saying how many answers are saved once a cell runs, and exit
code 130 / 143. Heavy imports wait until :func:`main` runs, inside that guard.
"""

from __future__ import annotations

# (guarded / interrupted live with the interrupts; retake.run.guarded stays importable from here)
from .harness.interrupts import guard_start, guarded, interrupted  # noqa: F401

guard_start(__name__)  # run as `python -m`: an interrupt from here on, imports included, is one line

from pathlib import Path  # noqa: E402

CONFIG_PATH = str(Path(__file__).resolve().parent / "conf")


def run(cfg) -> dict | None:
    """Run one composed config; returns the cell's metrics.json content on rank 0, else None.
    Under Hydra the job's folder gets ``cell.json`` (the cell's folder), which the sweep summary
    reads."""
    from .harness.trackers import log_cell
    from .harness.runner import cell_dir, resolve_config, run_cell
    from .harness.sweep import record_job

    cfg = resolve_config(cfg)
    result = run_cell(cfg)
    if result is not None:
        record_job(cell_dir(cfg))
        log_cell(cfg, result)
    return result


def _task(cfg) -> None:
    guarded(run, cfg)


def main() -> None:
    """``python -m retake.run``: Hydra composes the config and calls :func:`run`. From its first
    line, imports included, Ctrl-C and SIGTERM end the process with one line (130 / 143)."""
    from .harness.interrupts import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            import hydra

            from .harness.schema import register

            register()  # the typed schema conf/config.yaml starts from
            hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(_task)()
    except KeyboardInterrupt as e:
        interrupted(e)


if __name__ == "__main__":
    main()
