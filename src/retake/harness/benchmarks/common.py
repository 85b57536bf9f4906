"""What the benchmark modules share: reading annotation files with errors that name the file
and the row, checking a question's fields, the ``samples.jsonl`` format of the generated
benchmarks, and the prepare scripts' helpers (checking their inputs, indexing and linking
videos, writing the annotation file back)."""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from retake.harness.samples import LETTERS, Sample


class DatasetNotFoundError(FileNotFoundError):
    """A benchmark's annotation file is not under its data_root; the message names the command
    that makes the layout there."""


def not_found(dataset: str, what: str, data_root: str, command: Callable[[str], str]) -> DatasetNotFoundError:
    """The error for ``what`` (e.g. "annotation file 'x' not found") under ``data_root``,
    naming ``command(data_root)``: the command that makes the layout."""
    return DatasetNotFoundError(
        f"{dataset}: {what} under data_root={data_root!r}; "
        f"make the layout with `{command(data_root)}` (docs/datasets.md)"
    )


def require(path: str, dataset: str, data_root: str, command: Callable[[str], str]) -> str:
    """``path`` if it is a file, else :class:`DatasetNotFoundError` naming ``command(data_root)``."""
    if not os.path.isfile(path):
        raise not_found(dataset, f"annotation file {path!r} not found", data_root, command)
    return path


# ---------------------------------------------------------------- reading


def read_text(path: str, encoding: str = "utf-8") -> str:
    """A text file's content; bytes that are not ``encoding`` fail naming the file, line and byte."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         "save the file as UTF-8") from None


def read_json(path: str):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: str) -> list:
    rows = []
    for i, line in enumerate(read_text(path).split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e})") from None
    return rows


def read_rows(path: str) -> list[dict]:
    """A JSON file holding a list of objects."""
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected a JSON list of objects")
    return rows


def read_table(path: str) -> list[dict]:
    """Rows of a .json (list of objects), .jsonl or .parquet file; array cells become lists."""
    if path.endswith(".parquet"):
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow), or convert it to JSON") from e
        rows = frame.to_dict("records")
        return [{k: (list(v) if hasattr(v, "tolist") and not isinstance(v, str) else v) for k, v in r.items()} for r in rows]
    if path.endswith(".jsonl"):
        return read_jsonl(path)
    return read_rows(path)


# ---------------------------------------------------------------- checking a question


def field(row: dict, key: str, where: str):
    """``row[key]``; missing or null fails naming ``where`` and the fields present."""
    if key not in row or row[key] is None:
        raise ValueError(f"{where}: missing field {key!r} (fields present: {sorted(row)})")
    return row[key]


def check_options(options: list, where: str) -> list:
    """The option list of a question, checked before its answer letter is read."""
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"{where}: {len(options)} options ({options}); a question needs 2..{len(LETTERS)}")
    return options


def answer_letter(answer, n_options: int, where: str) -> str:
    """``"B"``, ``"(b)"``, ``" B "`` -> ``"B"``, one of the first ``n_options`` letters."""
    letter = str(answer).strip().strip("()").strip().upper()
    if letter not in LETTERS[:n_options]:
        raise ValueError(f"{where}: answer {answer!r} is not one of the option letters {LETTERS[:n_options]}")
    return letter


def unique(samples: list[Sample], wheres: list[str]) -> list[Sample]:
    """``samples`` if their uids (the questions' ids) are unique; else ValueError naming the
    rows of the first duplicate. ``wheres[i]``: the file and row of ``samples[i]``."""
    first: dict[str, str] = {}
    for s, where in zip(samples, wheres):
        if s.uid in first:
            raise ValueError(f"{where}: question id {s.uid!r} is used twice (first at {first[s.uid]}); "
                             "every question needs its own id (its answer is saved under it)")
        first[s.uid] = where
    return samples


def abs_path(root: str, rel: str) -> str:
    return os.path.abspath(os.path.join(root, rel))


# ---------------------------------------------------------------- the generated benchmarks' format


def load_samples(data_root: str, dataset: str, command: Callable[[str], str]) -> list[Sample]:
    """Our own format: samples.jsonl of ``Sample.to_dict()`` lines, videos relative to data_root
    (``synthetic`` and ``needle``)."""
    path = require(os.path.join(data_root, "samples.jsonl"), dataset, data_root, command)
    samples, wheres = [], []
    for i, d in enumerate(read_jsonl(path)):
        try:
            s = Sample.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} line {i + 1}: not a valid sample ({e})") from None
        s.video = abs_path(data_root, s.video)
        samples.append(s)
        wheres.append(f"{path} line {i + 1}")
    return unique(samples, wheres)


# ---------------------------------------------------------------- for the prepare scripts


@dataclass(frozen=True)
class Preparer:
    """What one ``scripts/prepare_<benchmark>.py`` adds to the shared skeleton
    (:func:`retake.harness.benchmarks.prepare.main`, which adds ``--out`` and ``--strict``,
    turns a bad input into exit code 2 and reports the result).

    prog: the name that starts its error messages. arguments: adds the benchmark's own
    options to the parser. make: makes the layout at ``args.out`` from the download and
    returns (the dataset whose loader checks the result, ``{label: value}`` lines for the
    report). out_help: the help of ``--out``."""

    prog: str
    arguments: Callable[[argparse.ArgumentParser], None]
    make: Callable[[argparse.Namespace], tuple[str, dict]]
    out_help: str = "output data_root"


def need_file(path: str, option: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{option} {path!r} is not a file")
    return path


def need_folder(path: str, option: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{option} {path!r} is not a folder")
    return path


def no_duplicates(ids: Iterable, path: str, what: str) -> None:
    """ValueError naming ``path`` and (up to five of) the ids that occur more than once."""
    dup = [u for u, n in Counter(ids).items() if n > 1]
    if dup:
        raise ValueError(f"{path}: duplicate {what}(s) {dup[:5]}")


VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm", ".mov", ".avi")


def index_videos(folder: str, recursive: bool = True) -> dict[str, str]:
    """``{file stem: path}`` of the video files under ``folder`` (.mp4 preferred over the
    other extensions when a stem has several)."""
    found: dict[str, str] = {}
    rank = {e: i for i, e in enumerate(VIDEO_EXTENSIONS)}
    walker = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
    for dirpath, _, files in walker:
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext in rank and (stem not in found or rank[ext] < rank[os.path.splitext(found[stem])[1]]):
                found[stem] = os.path.join(dirpath, name)
    return found


def link(src: str, dst: str) -> None:
    """Make ``dst`` a symlink to ``src`` (absolute), replacing an older link or file at ``dst``."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.lexists(dst):
        os.remove(dst)
    os.symlink(os.path.abspath(src), dst)


def write_json(path: str, obj, lines: bool = False) -> None:
    """Write ``obj`` as JSON (or, with ``lines``, a list as JSON lines); numpy scalars and
    arrays (from a parquet file) become plain numbers and lists."""

    def plain(x):
        if hasattr(x, "tolist"):
            return x.tolist()
        raise TypeError(f"{type(x).__name__} is not JSON serializable")

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if lines:
            f.writelines(json.dumps(row, default=plain, ensure_ascii=False) + "\n" for row in obj)
        else:
            json.dump(obj, f, default=plain, ensure_ascii=False, indent=1)
