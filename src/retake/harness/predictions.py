"""The predictions files of a cell: ``<prefix>.rank<r>.jsonl``, one JSON line per answered
sample, appended by rank ``r`` (:class:`~retake.harness.lmms_model.RetakeLMM`), keyed by
``(task, doc_id, uid)``. Reading, and repairing a file's end before anything is appended.

Standard library only (no torch, no lmms-eval): the runner reads and repairs these files
before the model, and counts the saved answers when an interrupt may have cut an import short.
"""

from __future__ import annotations

import glob
import json
import os

from .. import log
from .files import writing


def rank_file(prefix: str, rank: int) -> str:
    return f"{prefix}.rank{rank}.jsonl"


def rank_files(prefix: str) -> list[str]:
    """Every ``PREFIX.rank<r>.jsonl``, in rank order."""
    found = glob.glob(glob.escape(prefix) + ".rank*.jsonl")
    ranks = {}
    for path in found:
        tag = path[len(prefix) + len(".rank"): -len(".jsonl")]
        if tag.isdigit():
            ranks[int(tag)] = path
    return [ranks[r] for r in sorted(ranks)]


def request_key(task: str, doc_id: int, uid: str | None) -> tuple:
    return (str(task), int(doc_id), None if uid is None else str(uid))


def _record(line: bytes) -> dict | None:
    """A predictions line as its record, or None when it is no whole record (cut short by a
    kill, garbage, not UTF-8)."""
    try:
        rec = json.loads(line.decode("utf-8"))
        request_key(rec["task"], rec["doc_id"], rec.get("uid"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return rec


def read_predictions(prefix: str) -> dict[tuple, dict]:
    """All per-sample lines of all rank files of ``prefix``, keyed by :func:`request_key`.
    A line that is no whole record (cut short by a killed process, garbage, not UTF-8) is
    skipped; a whole last record without its newline counts. If two lines share a key (a
    failed sample answered again with ``retry_failed``), an answer wins over a failure, and of
    two failures the later; of two answers the first."""
    out: dict[tuple, dict] = {}
    for path in rank_files(prefix):
        with open(path, "rb") as f:
            data = f.read()
        for line in data.split(b"\n"):
            rec = _record(line) if line.strip() else None
            if rec is None:
                continue
            key = request_key(rec["task"], rec["doc_id"], rec.get("uid"))
            old = out.get(key)
            if old is None or old.get("error") is not None:
                out[key] = rec
    return out


def repair_tail(path: str) -> str | None:
    """Make the file end with a whole line before anything is appended. A last line without
    its newline (a kill between the record and ``\\n``) that is a whole record gets the newline:
    the answer is kept. Anything else there (a line cut short, garbage, bytes that are not
    UTF-8) is moved to ``<path>.corrupt`` and cut off; the warning to show is returned."""
    if not os.path.exists(path):
        return None
    with writing(path), open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        tail = data[end:]
        if not tail:
            return None
        if _record(tail) is not None:
            f.write(b"\n")  # (at the end: the whole file was read)
            f.flush()
            os.fsync(f.fileno())
            return None
        corrupt = f"{path}.corrupt"
        with writing(corrupt), open(corrupt, "ab") as c:
            c.write(tail + b"\n")
            c.flush()
            os.fsync(c.fileno())
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    kind = "not UTF-8" if not _is_utf8(tail) else "not a whole record"
    kept = data[:end].count(b"\n")
    return f"{path}: its last line ({len(tail)} bytes, {kind}) was set aside in {corrupt}; the {kept} lines before it are kept"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def open_for_append(path: str):
    """Open ``path`` for appending text lines, first repairing its end (:func:`repair_tail`;
    a warning says what was set aside)."""
    with writing(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    warning = repair_tail(path)
    if warning:
        log.warning(warning)
    with writing(path):
        return open(path, "a", encoding="utf-8")


