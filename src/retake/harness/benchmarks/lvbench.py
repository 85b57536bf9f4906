"""LVBench: ``lvbench`` (1,549 questions on 103 videos).

Local layout (``scripts/prepare_lvbench.py`` makes it from the official download)::

    video_info.meta.jsonl   one line per video: key, type, qa [{uid, question
                            ("...\\n(A) ...\\n(B) ..."), answer, question_type [...],
                            time_reference}]
    videos/<key>.mp4

uid = str(qa uid); question types mapped to KIR, EU, Sum, ER, Rea, TG.
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
    field,
    index_videos,
    link,
    need_file,
    need_folder,
    no_duplicates,
    read_jsonl,
    require,
    unique,
    write_json,
)
from retake.harness.samples import LETTERS, Sample

_LINE_OPTION = re.compile(r"(?:^|\n)[ \t]*\(([A-J])\)[ \t]*")
_INLINE_OPTION = re.compile(r"\(([A-J])\)\s*")


def command(data_root: str) -> str:
    return f"python scripts/prepare_lvbench.py --meta <video_info.meta.jsonl> --videos <video folder> --out {data_root}"


def split_lettered_options(text: str) -> tuple[str, list[str]]:
    """``"Why?\\n(A) x\\n(B) y"`` -> ``("Why?", ["x", "y"])``. Options on their own lines are
    preferred; options inline (``"Why? (A) x (B) y"``) are accepted. The letters must run
    A, B, C, ... (at least two); anything else raises ValueError."""
    for pattern in (_LINE_OPTION, _INLINE_OPTION):
        marks = list(pattern.finditer(text))
        # the option list is the last run starting at "(A)"
        starts = [i for i, m in enumerate(marks) if m.group(1) == "A"]
        if not starts:
            continue
        marks = marks[starts[-1] :]
        if len(marks) < 2 or [m.group(1) for m in marks] != list(LETTERS[: len(marks)]):
            continue
        bounds = [m.start() for m in marks[1:]] + [len(text)]
        options = [text[m.end() : b].strip() for m, b in zip(marks, bounds)]
        question = text[: marks[0].start()].strip()
        if question and all(options):
            return question, options
    raise ValueError(f"cannot split options '(A) ...' from question {text!r}")


def lvbench_type_codes(types) -> list[str]:
    """Full question-type names -> leaderboard codes (KIR, EU, Sum, ER, Rea, TG); a code or an
    unknown name is kept as it is."""
    if isinstance(types, str):
        types = [types]
    return [scoring.LVBENCH_TYPES.get(str(t).strip().lower(), str(t).strip()) for t in types or []]


def lvbench_sample(video: dict, qa: dict, data_root: str, where: str) -> Sample:
    uid = str(field(qa, "uid", where))
    where = f"{where} uid {uid}"
    try:
        question, options = split_lettered_options(str(field(qa, "question", where)))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    key = str(field(video, "key", where))
    return Sample(
        uid=uid,
        video=abs_path(data_root, f"videos/{key}.mp4"),
        question=question,
        options=options,
        answer=answer_letter(field(qa, "answer", where), len(options), where),
        meta={
            "question_type": lvbench_type_codes(qa.get("question_type")),
            "video_type": video.get("type"),
            "time_reference": qa.get("time_reference"),
            "video": key,
        },
    )


def lvbench_samples(video: dict, data_root: str, where: str) -> list[Sample]:
    """The samples of one line of video_info.meta.jsonl (one video and its questions)."""
    return [lvbench_sample(video, qa, data_root, where) for qa in field(video, "qa", where)]


def load_lvbench(data_root: str) -> list[Sample]:
    """LVBench (1,549 questions on 103 videos) from video_info.meta.jsonl."""
    path = require(os.path.join(data_root, "video_info.meta.jsonl"), "lvbench", data_root, command)
    samples, wheres = [], []
    for i, video in enumerate(read_jsonl(path)):
        found = lvbench_samples(video, data_root, f"{path} line {i + 1}")
        samples += found
        wheres += [f"{path} line {i + 1} uid {s.uid}" for s in found]
    return unique(samples, wheres)


# ---------------------------------------------------------------- scripts/prepare_lvbench.py


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meta", required=True, help="official video_info.meta.jsonl")
    p.add_argument("--videos", required=True, help="folder of <key>.mp4 videos")


def make(args: argparse.Namespace) -> tuple[str, dict]:
    """Check every question of ``--meta``, write ``<out>/video_info.meta.jsonl`` and link
    ``<out>/videos/<key>.mp4`` to each video found under ``--videos``."""
    need_file(args.meta, "--meta")
    need_folder(args.videos, "--videos")
    videos = read_jsonl(args.meta)
    samples = [s for i, v in enumerate(videos) for s in lvbench_samples(v, args.out, f"{args.meta} line {i + 1}")]
    no_duplicates((s.uid for s in samples), args.meta, "uid")
    found = index_videos(args.videos)
    for key in sorted({str(v["key"]) for v in videos}):
        if key in found:
            link(found[key], os.path.join(args.out, "videos", f"{key}.mp4"))
    write_json(os.path.join(args.out, "video_info.meta.jsonl"), videos, lines=True)
    per_type = Counter(t for s in samples for t in s.meta["question_type"])
    return "lvbench", {"questions per type (a question may have several)": dict(per_type)}


PREPARE = Preparer("prepare_lvbench", arguments, make)
