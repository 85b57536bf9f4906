#!/usr/bin/env python
"""Make the local MLVU layout (dev or test) from the official download.

    python scripts/prepare_mlvu.py --src MLVU --out datasets/mlvu_dev
    python scripts/prepare_mlvu.py --split test --src MLVU_Test --out datasets/mlvu_test

dev: ``--src`` holds ``json/<k>_<type>.json`` (or ``json/<type>.json``) for the seven
multiple-choice types and ``video/<k>_<type>/`` (or ``video/<type>/``); the generation tasks
(8_sub_scene, 9_summary) are not used. Writes ``<out>/json/<k>_<type>.json`` and links
``<out>/video/<type>/<video>``.

test: ``--src`` holds ``leaderboard/test_question.json`` (or ``test_question.json``, or give
``--questions``) and ``video/``.
Writes ``<out>/test_question.json`` and links ``<out>/video/<video>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

from retake.harness import datasets as D
from retake.harness.scoring import MLVU_DEV_TYPES


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=("dev", "test"), default="dev", help="which MLVU split (default: dev)")
    p.add_argument("--src", required=True, help="the downloaded MLVU folder")
    p.add_argument("--questions", help="test only: the question file (default: <src>/leaderboard/test_question.json or <src>/test_question.json)")
    p.add_argument("--out", required=True, help="output data_root")
    p.add_argument("--strict", action="store_true", help="exit 1 if any video is missing")
    return p.parse_args(argv)


def first_existing(paths: list[str]) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None)


def prepare_dev(src: str, out: str) -> dict:
    per_type = {}
    for k, qtype in enumerate(MLVU_DEV_TYPES, 1):
        names = [f"{k}_{qtype}.json", f"{qtype}.json"]
        path = first_existing([os.path.join(src, "json", n) for n in names])
        if path is None:
            raise FileNotFoundError(f"{os.path.join(src, 'json')}: none of {names} (MLVU dev needs all seven of {', '.join(MLVU_DEV_TYPES)})")
        rows = D.read_table(path)
        for i, row in enumerate(rows):
            D.mlvu_sample(row, f"{qtype}/{i}", "", qtype, f"{path} row {i}")
        video_dir = first_existing([os.path.join(src, "video", f"{k}_{qtype}"), os.path.join(src, "video", qtype)])
        for row in rows:
            video = os.path.join(video_dir, row["video"]) if video_dir else None
            if video and os.path.exists(video):
                D.link(video, os.path.join(out, "video", qtype, row["video"]))
        D.write_json(os.path.join(out, D.mlvu_dev_file(k, qtype)), rows)
        per_type[qtype] = len(rows)
    return {"questions per type": per_type}


def prepare_test(src: str, questions: str | None, out: str) -> dict:
    candidates = [questions] if questions else [os.path.join(src, "leaderboard", "test_question.json"), os.path.join(src, "test_question.json")]
    path = first_existing(candidates)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"test question file not found at {' or '.join(candidates)} (give --questions)")
    rows = D.read_table(path)
    for i, row in enumerate(rows):
        D.mlvu_sample(row, str(row.get("question_id")), "", str(row.get("question_type")), f"{path} row {i}", with_answer=False)
    dup = [u for u, n in Counter(r["question_id"] for r in rows).items() if n > 1]
    if dup:
        raise ValueError(f"{path}: duplicate question_id(s) {dup[:5]}")
    video_dir = os.path.join(src, "video")
    for row in rows:
        video = os.path.join(video_dir, row["video"])
        if os.path.exists(video):
            D.link(video, os.path.join(out, "video", row["video"]))
    D.write_json(os.path.join(out, "test_question.json"), rows)
    return {"questions per type": dict(sorted(Counter(r["question_type"] for r in rows).items()))}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not os.path.isdir(args.src):
            raise FileNotFoundError(f"--src {args.src!r} is not a folder")
        if args.split == "dev":
            extra = prepare_dev(args.src, args.out)
        else:
            extra = prepare_test(args.src, args.questions, args.out)
        return D.report(f"mlvu_{args.split}", args.out, args.strict, extra)
    except (OSError, ValueError) as e:
        print(f"prepare_mlvu: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
