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

from .harness.interrupts import guard_start

guard_start(__name__)  # run as `python -m`: an interrupt from here on, imports included, is one line

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

CONFIG_PATH = str(Path(__file__).resolve().parent / "conf")


def run(cfg) -> dict | None:
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
    stderr; the job's log too under Hydra); returns the exit code: 2 for the input's fault, 74
    for a file that cannot be written, 75 for a cell another process runs (``run.on_busy=exit``),
    130 / 143 for an interrupt."""
    from . import log
    from .harness.files import EX_IOERR, WriteError, is_write_error
    from .harness.interrupts import CellInterrupted

    if isinstance(error, CellInterrupted):
        log.warning(str(error))
        return error.exit_code
    if is_write_error(error):  # an OSError from code that does not name its writes
        error = WriteError.from_os(getattr(error, "filename", None) or "a file", error)
    log.error(f"error: {error}")
    return getattr(error, "exit_code", None) or (EX_IOERR if isinstance(error, WriteError) else 2)


def guarded(fn, *args):
    """Call ``fn`` with SIGTERM raised as an interrupt; a user error, a write error, a busy cell
    or an interrupt ends the process with :func:`report`'s code and one line."""
    from .harness.files import CellBusy, WriteError, is_write_error
    from .harness.interrupts import CellInterrupted, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            return fn(*args)
    except KeyboardInterrupt as e:  # first: the next clause imports (an interrupt may have cut an import short)
        interrupted(e)
    except (CellInterrupted, WriteError, CellBusy, OSError, *user_errors()) as e:
        expected = not isinstance(e, OSError) or isinstance(e, user_errors()) or is_write_error(e)
        if not expected or (os.environ.get("RETAKE_TRACEBACK") and not isinstance(e, CellInterrupted)):
            raise
        sys.exit(report(e))


def interrupted(error: KeyboardInterrupt) -> None:
    """An interrupt outside a cell (start-up, imports, composing the config): one line, exit code
    128 + the signal (130 Ctrl-C, 143 SIGTERM). A second Ctrl-C while it exits is ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from . import log

    log.warning("interrupted")
    sys.exit(128 + int(getattr(error, "signum", signal.SIGINT)))


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
