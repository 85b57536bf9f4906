"""Ctrl-C and SIGTERM during a cell: one exception, one line, an exit code.

Its own module so that ``python -m retake.harness.runner`` (which runs the runner as
``__main__``) and the package raise and catch the same class. Standard library only: the
entry points import it first, before anything slow (:func:`guard_start`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


class CellInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped a cell. Every finished answer is in its predictions files;
    ``str()`` is the one line to show, ``exit_code`` 128 + the signal (130, 143)."""

    def __init__(self, directory: str, saved: int, total: int | None, signum: int):
        self.directory, self.saved, self.total, self.signum = directory, saved, total, signum
        self.exit_code = 128 + signum
        of = f" of {total}" if total is not None else ""
        super().__init__(f"interrupted: {saved}{of} answers saved in {directory}; rerun the same command to resume")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that one path saves and reports."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises :class:`_Terminated` in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame):
    raise _Terminated()


def guard_start(module_name: str) -> None:
    """Called first by a module run as ``python -m``: from here on SIGTERM raises like Ctrl-C,
    and an interrupt that nothing catches (one during the module's own imports, before its
    ``main`` guards the rest) ends the process with one line and 128 + the signal, no
    traceback. Does nothing when the module is imported (``module_name != "__main__"``)."""
    if module_name != "__main__" or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    previous = sys.excepthook

    def hook(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.write("[retake] interrupted\n")
        sys.stderr.flush()
        os._exit(128 + int(getattr(value, "signum", signal.SIGINT)))

    sys.excepthook = hook


# -- entry points: one line and an exit code (python -m retake.run, the runner's command line)

def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the input's fault, shown as one line: bad values (ValueError), missing
    files (FileNotFoundError: a benchmark layout, a checkpoint) and unreadable videos."""
    from ..video import VideoDecodeError

    return (ValueError, FileNotFoundError, VideoDecodeError)


def report(error: BaseException) -> int:
    """Say ``error`` in one line through the ``retake`` logger (``[retake] error: ...`` on
    stderr; the job's log too under Hydra); returns the exit code: 2 for the input's fault, 74
    for a file that cannot be written, 75 for a cell another process runs (``run.on_busy=exit``),
    130 / 143 for an interrupt."""
    from .. import log
    from .files import EX_IOERR, WriteError, is_write_error

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
    from .files import CellBusy, WriteError, is_write_error

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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from .. import log

    log.warning("interrupted")
    sys.exit(128 + int(getattr(error, "signum", signal.SIGINT)))
