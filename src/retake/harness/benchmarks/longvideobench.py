"""LongVideoBench: ``longvideobench_val`` (1,337 questions, with each video's subtitles).

Local layout (``scripts/prepare_longvideobench.py`` makes it from the official download)::

    lvb_val.json         rows: id, video_id, video_path, subtitle_path, question,
                         candidates | option0..option4 ("N/A" = unused), correct_choice,
                         duration_group, question_category, topic_category, duration
    videos/<video_path>
    subtitles/<subtitle_path>   JSON [{start, end, line}] / [{timestamp, text}], or SRT

uid = id; Sample.subtitles = every subtitle line of the file, in file order.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter

from retake.harness.benchmarks.common import (
    Preparer,
    abs_path,
    check_options,
    field,
    link,
    need_folder,
    no_duplicates,
    read_rows,
    read_table,
    read_text,
    require,
    unique,
    write_json,
)
from retake.harness.samples import LETTERS, Sample

_SRT_TIME = re.compile(r"-->")
_TAG = re.compile(r"<[^>]+>")


def command(data_root: str) -> str:
    return f"python scripts/prepare_longvideobench.py --src <LongVideoBench download> --out {data_root}"


def subtitle_lines(path: str) -> list[str]:
    """The text lines of a subtitle file, in file order: a JSON list of ``{start, end, line}``
    or ``{timestamp, text}`` items (LongVideoBench), or SRT (blocks of index, time, text)."""
    content = read_text(path, "utf-8-sig")
    if content.lstrip().startswith("["):
        try:
            items = json.loads(content)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        lines = []
        for i, item in enumerate(items):
            text = item.get("line", item.get("text")) if isinstance(item, dict) else None
            if text is None:
                raise ValueError(f"{path}: subtitle item {i} has neither 'line' nor 'text': {item!r}")
            lines.append(str(text))
    else:
        lines = []
        for block in re.split(r"\n\s*\n", content.replace("\r\n", "\n")):
            rows = block.strip().split("\n")
            timing = next((j for j, r in enumerate(rows) if _SRT_TIME.search(r)), None)
            if timing is not None:
                lines += rows[timing + 1 :]
    lines = [_TAG.sub("", t).strip() for t in lines]
    return [t for t in lines if t]


def lvb_options(row: dict, where: str) -> list[str]:
    """``candidates`` (the official lvb_val.json) or option0..option4 with "N/A" = unused
    (the hub copy). An unused option may only trail: the answer index counts from option0."""
    if "candidates" in row:
        return [str(c) for c in row["candidates"]]
    raw = [row.get(f"option{i}", "N/A") for i in range(5)]
    used = [o for o in raw if o is not None and o != "N/A"]
    if raw[: len(used)] != used:
        raise ValueError(f"{where}: an 'N/A' option comes before a used one: {raw}")
    return [str(o) for o in used]


def lvb_sample(row: dict, data_root: str, where: str, subtitles: str | None) -> Sample:
    uid = str(field(row, "id", where))
    where = f"{where} id {uid}"
    options = check_options(lvb_options(row, where), where)
    choice = int(field(row, "correct_choice", where))
    if not 0 <= choice < len(options):
        raise ValueError(f"{where}: correct_choice {choice} is out of range for {len(options)} options")
    group = row.get("duration_group")
    return Sample(
        uid=uid,
        video=abs_path(data_root, f"videos/{field(row, 'video_path', where)}"),
        question=str(field(row, "question", where)),
        options=options,
        answer=LETTERS[choice],
        subtitles=subtitles,
        meta={
            "duration_group": None if group is None else str(int(group)),
            "question_category": row.get("question_category"),
            "topic_category": row.get("topic_category"),
            "duration": row.get("duration"),
            "video_id": row.get("video_id"),
        },
    )


def load_longvideobench_val(data_root: str) -> list[Sample]:
    """LongVideoBench val (1,337 questions) with each video's subtitles. A missing subtitle
    file gives ``subtitles=None`` and ``meta["subtitles_missing"] = True`` (the prepare
    script reports them)."""
    path = require(os.path.join(data_root, "lvb_val.json"), "longvideobench_val", data_root, command)
    cache: dict[str, str | None] = {}  # many questions share a video's subtitle file
    samples, wheres = [], []
    for i, row in enumerate(read_rows(path)):
        sub = row.get("subtitle_path")
        sub_path = abs_path(data_root, f"subtitles/{sub}") if sub else None
        present = sub_path is not None and os.path.isfile(sub_path)
        if present and sub_path not in cache:
            cache[sub_path] = "\n".join(subtitle_lines(sub_path)) or None
        sample = lvb_sample(row, data_root, f"{path} row {i}", cache[sub_path] if present else None)
        if not present:
            sample.meta["subtitles_missing"] = True
        samples.append(sample)
        wheres.append(f"{path} row {i}")
    return unique(samples, wheres)


# ---------------------------------------------------------------- scripts/prepare_longvideobench.py


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", required=True, help="the downloaded LongVideoBench folder (videos/, subtitles/)")
    p.add_argument("--annotations", help="validation annotations (default: <src>/lvb_val.json)")


def make(args: argparse.Namespace) -> tuple[str, dict]:
    """Check every row of the annotations, write ``<out>/lvb_val.json`` and link
    ``<out>/videos/...`` and ``<out>/subtitles/...`` for every row."""
    need_folder(args.src, "--src")
    path = args.annotations or os.path.join(args.src, "lvb_val.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path!r} not found (give --annotations)")
    rows = read_table(path)
    samples = [lvb_sample(r, args.out, f"{path} row {i}", None) for i, r in enumerate(rows)]
    no_duplicates((s.uid for s in samples), path, "id")
    missing_subs = set()
    for row in rows:
        for folder, key in (("videos", "video_path"), ("subtitles", "subtitle_path")):
            if not row.get(key):
                continue
            source = os.path.join(args.src, folder, row[key])
            if os.path.exists(source):
                link(source, os.path.join(args.out, folder, row[key]))
            elif folder == "subtitles":
                missing_subs.add(row[key])
    write_json(os.path.join(args.out, "lvb_val.json"), rows)
    per_group = Counter(s.meta["duration_group"] for s in samples)
    return "longvideobench_val", {
        "questions per duration group": dict(sorted(per_group.items(), key=lambda kv: int(kv[0]))),
        "missing subtitle files (prompt without subtitles)": len(missing_subs),
    }


PREPARE = Preparer("prepare_longvideobench", arguments, make)
