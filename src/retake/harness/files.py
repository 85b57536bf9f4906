"""A cell's files under faults: writes that are whole or absent, one line per write error, one
process per cell.

- :func:`write_atomic`: a temporary beside the file, fsynced, renamed over it; if anything fails
  the temporary is removed and the old file is untouched.
- :func:`append_bytes`: an appended line is whole or absent: a failed or short write (disk full,
  a file-size limit, an interrupt) cuts the file back to where it was.
- :class:`WriteError`: a write that failed (read-only, permission, disk full), as one line naming
  the path and the cause; :func:`writing` turns an ``OSError`` of a block into it.
- :class:`CellLock`: an ``flock`` on ``<cell>/cell.lock``, held while a process runs the cell. It is
  a lock of the operating system, not a marker file: it goes away with its process, however that
  ends (``kill -9`` included). A second process on the cell is told who holds it and waits, or
  stops with :class:`CellBusy` (``run.on_busy``).

Standard library only: a process that only holds a lock imports nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time

LOCK_FILE = "cell.lock"
# the exit codes of sysexits.h: a file could not be written; try again later
EX_IOERR = 74
EX_TEMPFAIL = 75
# errors that say a write is refused or has no room (not that the data is wrong)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.EIO})


class WriteError(Exception):
    """A file of the run could not be written. ``str()`` is the one line to show; what was
    saved before is untouched, so the same command resumes once there is room (or permission)."""

    exit_code = EX_IOERR

    def __init__(self, path: str, cause: str, fix: str = "fix it"):
        self.path, self.cause = str(path), cause
        super().__init__(f"cannot write {self.path}: {cause}; nothing saved before was lost: {fix} and rerun "
                         "the same command to resume")

    @classmethod
    def from_os(cls, path: str, error: OSError) -> "WriteError":
        cause = error.strerror or str(error) or type(error).__name__
        if error.errno is not None:
            cause += f" [errno {errno.errorcode.get(error.errno, error.errno)}]"
        fix = {errno.ENOSPC: "make room", errno.EDQUOT: "make room", errno.EROFS: "make it writable",
               errno.EACCES: "make it writable", errno.EPERM: "make it writable",
               errno.EFBIG: "raise the file-size limit (ulimit -f)"}.get(error.errno)
        if fix is None and "disk space" in cause.lower():
            fix = "make room"
        return cls(error.filename or path, " ".join(cause.split()), fix or "fix it")


def is_write_error(error: BaseException) -> bool:
    """Whether ``error`` is an ``OSError`` that refuses a write (read-only, permission, no room)."""
    return isinstance(error, OSError) and error.errno in WRITE_ERRNOS


@contextlib.contextmanager
def writing(path: str):
    """Raise an ``OSError`` of the block as :class:`WriteError` naming ``path`` (or the file the
    error names)."""
    try:
        yield
    except OSError as e:
        raise WriteError.from_os(path, e) from None


def write_atomic(path: str, text: str) -> None:
    """``path`` holds ``text`` or what it held before, never a mix; no temporary is left behind."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise WriteError.from_os(path, e) from None
        raise


def check_writable(directory: str) -> None:
    """Create ``directory`` if needed and write (and remove) one byte there: a read-only,
    forbidden or full place fails now, as :class:`WriteError`, instead of after the model loaded."""
    with writing(directory):
        os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f".write_check.{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise WriteError.from_os(directory, e) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)


def append_bytes(fd: int, path: str, data: bytes) -> None:
    """Append ``data`` to the file open at ``fd`` (``O_APPEND``) and fsync it, whole or not at
    all: a failed write (no room, a file-size limit, an error of fsync) cuts the file back to
    its size before, so no half line is left, and raises :class:`WriteError`; an interrupt
    (Ctrl-C, SIGTERM) keeps the line if it was written whole, else cuts it off too."""
    start = os.fstat(fd).st_size
    view, done = memoryview(data), 0
    try:
        while done < len(data):
            n = os.write(fd, view[done:])
            if n <= 0:
                raise OSError(errno.EIO, "short write", path)
            done += n
        os.fsync(fd)
    except BaseException as e:
        if isinstance(e, OSError) or done < len(data):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # if even this fails, the next run sets the half line aside
        if isinstance(e, OSError):
            raise WriteError.from_os(path, e) from None
        raise


# -- one process per cell --------------------------------------------------------------------

class CellBusy(Exception):
    """Another process runs the cell (``run.on_busy=exit``); ``str()`` names it."""

    exit_code = EX_TEMPFAIL

    def __init__(self, directory: str, holder: str):
        self.directory, self.holder = directory, holder
        super().__init__(f"cell {directory} is being run by {holder}; not starting a second run of it "
                         "(run.on_busy=wait waits for it instead)")


def describe_holder(info: dict | None) -> str:
    if not info or "pid" not in info:
        return "another process"
    text = f"pid {info['pid']}"
    if info.get("host") and info["host"] != socket.gethostname():
        text += f" on {info['host']}"
    if info.get("since"):
        text += f" since {info['since']}"
    if info.get("command"):
        text += f" ({info['command']})"
    return text


class CellLock:
    """An exclusive ``flock`` on ``<directory>/cell.lock``, which holds who has it (pid, host,
    since, command: only read to say so). Only rank 0 of a sharded run takes it: the ranks of
    one run share the cell."""

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILE)
        self.fd: int | None = None

    def holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                return describe_holder(json.loads(f.read() or "null"))
        except (OSError, ValueError):
            return "another process"

    def acquire(self, wait: bool = True, log=print) -> bool:
        """Take the lock; returns whether it had to wait for another process. Busy and not
        ``wait``: :class:`CellBusy`. Waiting is interrupted by Ctrl-C / SIGTERM as usual."""
        with writing(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        waited = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.holder()
                if not wait:
                    raise CellBusy(self.directory, holder) from None
                log(f"cell {self.directory} is being run by {holder}; waiting for it to finish "
                    "(run.on_busy=exit stops instead)")
                fcntl.flock(fd, fcntl.LOCK_EX)
                waited = True
            me = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
            with writing(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return waited

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "CellLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
