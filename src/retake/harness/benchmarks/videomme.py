"""VideoMME: ``videomme`` (2,700 questions) and ``videomme_long`` (its long videos, no subtitles).

Local layout (``scripts/prepare_videomme.py`` makes it from the official download)::

    videomme.json  (or videomme.parquet)   rows: video_id, duration, domain, sub_category,
                                           videoID, question_id, task_type, question,
                                           options ["A. ...", ...], answer
    videos/<videoID>.mp4

uid = question_id; ``videomme_long`` keeps the rows with duration == "long". The same folder
serves both.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter

from retake.harness import scoring
from retake.harness.benchmarks.common import (
    Preparer,
    abs_path,
    answer_letter,
    check_options,
    field,
    index_videos,
    link,
    need_file,
    need_folder,
    no_duplicates,
    not_found,
    read_table,
    unique,
    write_json,
)
from retake.harness.samples import LETTERS, Sample

VIDEOMME_FILES = ("videomme.json", "videomme.parquet")
# the official columns the prepare script writes back (the others are dropped)
FIELDS = ("video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id", "task_type", "question", "options", "answer")
_OPTION_PREFIX = re.compile(r"^\s*\(?([A-J])\)?[.:)]?\s+")


def command(data_root: str) -> str:
    """The command that makes the layout at ``data_root`` (``videomme`` and ``videomme_long``)."""
    return f"python scripts/prepare_videomme.py --annotations <test-00000-of-00001.parquet> --videos <video folder> --out {data_root}"


def strip_option_letters(options: list, where: str) -> list[str]:
    """``["A. text", "B. text"]`` -> ``["text", "text"]``; the letters must run A, B, C, ..."""
    out = []
    for letter, opt in zip(LETTERS, options):
        m = _OPTION_PREFIX.match(str(opt))
        if not m or m.group(1) != letter:
            raise ValueError(f"{where}: option {opt!r} does not start with '{letter}.'")
        out.append(str(opt)[m.end() :].strip())
    return out


def read_videomme_rows(data_root: str) -> tuple[str, list[dict]]:
    """(annotation path, rows) from videomme.json or videomme.parquet under data_root."""
    for name in VIDEOMME_FILES:
        path = os.path.join(data_root, name)
        if os.path.isfile(path):
            return path, read_table(path)
    raise not_found("videomme", f"neither {' nor '.join(VIDEOMME_FILES)} found", data_root, command)


def videomme_sample(row: dict, data_root: str, where: str = "videomme") -> Sample:
    qid = str(field(row, "question_id", where))
    where = f"{where} question_id {qid}"
    options = check_options(strip_option_letters(list(field(row, "options", where)), where), where)
    duration = field(row, "duration", where)
    if duration not in scoring.VIDEOMME_DURATIONS:
        raise ValueError(f"{where}: duration {duration!r} is not one of {scoring.VIDEOMME_DURATIONS}")
    video_id = str(field(row, "videoID", where))
    return Sample(
        uid=qid,
        video=abs_path(data_root, f"videos/{video_id}.mp4"),
        question=str(field(row, "question", where)),
        options=options,
        answer=answer_letter(field(row, "answer", where), len(options), where),
        meta={
            "duration": duration,
            "domain": row.get("domain"),
            "sub_category": row.get("sub_category"),
            "task_type": row.get("task_type"),
            "videoID": video_id,
        },
    )


def load_videomme(data_root: str, durations: tuple[str, ...] = scoring.VIDEOMME_DURATIONS) -> list[Sample]:
    """All VideoMME questions (2,700), or those of the given durations."""
    path, rows = read_videomme_rows(data_root)
    wheres = [f"{path} row {i}" for i in range(len(rows))]
    samples = unique([videomme_sample(r, data_root, w) for r, w in zip(rows, wheres)], wheres)
    return [s for s in samples if s.meta["duration"] in durations]


def load_videomme_long(data_root: str) -> list[Sample]:
    """The long-video questions (900)."""
    return load_videomme(data_root, durations=("long",))


# ---------------------------------------------------------------- scripts/prepare_videomme.py


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", required=True, help="official VideoMME table: .parquet (hub download), .json or .jsonl")
    p.add_argument("--videos", required=True, help="folder holding <videoID>.mp4 files (the unzipped video archives)")


def make(args: argparse.Namespace) -> tuple[str, dict]:
    """Check every row of ``--annotations``, write ``<out>/videomme.json`` (the official columns)
    and link ``<out>/videos/<videoID>.mp4`` to each video found under ``--videos``."""
    need_file(args.annotations, "--annotations")
    need_folder(args.videos, "--videos")
    rows = read_table(args.annotations)
    samples = [videomme_sample(r, args.out, f"{args.annotations} row {i}") for i, r in enumerate(rows)]
    no_duplicates((s.uid for s in samples), args.annotations, "question_id")
    found = index_videos(args.videos)
    for video_id in sorted({s.meta["videoID"] for s in samples}):
        if video_id in found:
            link(found[video_id], os.path.join(args.out, "videos", f"{video_id}.mp4"))
    write_json(os.path.join(args.out, "videomme.json"), [{k: r[k] for k in FIELDS if k in r} for r in rows])
    per_duration = Counter(s.meta["duration"] for s in samples)
    return "videomme", {"questions per duration": dict(sorted(per_duration.items()))}


PREPARE = Preparer("prepare_videomme", arguments, make, out_help="output data_root (videomme.json + videos/)")
