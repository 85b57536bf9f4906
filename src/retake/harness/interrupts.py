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
