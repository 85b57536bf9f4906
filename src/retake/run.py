"""Hydra entry: one run = one cell (model x method x dataset x budget x frames).

    python -m retake.run                                   # the needle model on the needle set (made on first use)
    python -m retake.run model=qwen2_vl_7b method=adaretake dataset=videomme data_root=DATA
    python -m retake.run -m +experiment=table2 data_root=DATA

The configs ship inside the package (``retake/conf``; ``conf/`` in the checkout links there), so
an installed wheel finds them too. All the work is done by
:func:`retake.harness.runner.run_cell`; this file only composes the config and logs.

A user error (a checkpoint, a benchmark or a setting that is not there) is one line on stderr
and exit code 2, no traceback (``RETAKE_TRACEBACK=1`` shows it); Ctrl-C / SIGTERM is one line
saying how many answers are saved and exit code 130 / 143.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .harness.schema import register

CONFIG_PATH = str(Path(__file__).resolve().parent / "conf")
register()  # the typed schema conf/config.yaml starts from


def run(cfg: DictConfig) -> dict | None:
    """Run one composed config; returns the cell's metrics.json content on rank 0, else None.
    Under Hydra the job's folder gets ``cell.json`` (the cell's folder), which the sweep summary
    reads."""
    from .harness.logging import log_cell
    from .harness.runner import cell_dir, resolve_config, run_cell
    from .harness.sweep import record_job

    cfg = resolve_config(cfg)
    result = run_cell(cfg)
    if result is not None:
        record_job(cell_dir(cfg))
        log_cell(cfg, result)
    return result


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the input's fault, shown as one line: bad values (ValueError), missing
    files (FileNotFoundError: a benchmark layout, a checkpoint) and unreadable videos."""
    from .video import VideoDecodeError

    return (ValueError, FileNotFoundError, VideoDecodeError)


def report(error: BaseException) -> int:
    """Say ``error`` in one line through the ``retake`` logger (``[retake] error: ...`` on
    stderr; the job's log too under Hydra); returns the exit code."""
    from . import log
    from .harness.interrupts import CellInterrupted

    if isinstance(error, CellInterrupted):
        log.warning(str(error))
        return error.exit_code
    log.error(f"error: {error}")
    return 2


def guarded(fn, *args):
    """Call ``fn`` with SIGTERM raised as an interrupt; a user error or an interrupt ends the
    process with :func:`report`'s code (an interrupt outside a cell: 130 / 143, one line)."""
    from .harness.interrupts import CellInterrupted, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            return fn(*args)
    except (CellInterrupted, *user_errors()) as e:
        if os.environ.get("RETAKE_TRACEBACK") and not isinstance(e, CellInterrupted):
            raise
        sys.exit(report(e))
    except KeyboardInterrupt as e:
        from . import log

        signum = int(getattr(e, "signum", 2))
        log.warning("interrupted")
        sys.exit(128 + signum)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    guarded(run, cfg)


if __name__ == "__main__":
    main()
