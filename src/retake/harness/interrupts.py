"""Ctrl-C and SIGTERM during a cell: one exception, one line, an exit code.

Its own module so that ``python -m retake.harness.runner`` (which runs the runner as
``__main__``) and the package raise and catch the same class.
"""

from __future__ import annotations

import contextlib
import signal
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

    def handler(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
