"""MLVU: ``mlvu_dev`` (the seven multiple-choice tasks of the dev set) and ``mlvu_test``
(questions without public answers; :func:`export_mlvu_test_submission` writes the
leaderboard's file).

Local layouts (``scripts/prepare_mlvu.py [--split test]`` makes them from the official download):

- ``mlvu_dev``::

      json/1_plotQA.json ... json/7_topic_reasoning.json   rows: video, duration, question,
                                                            candidates, answer (text), question_type
      video/<type>/<video>

  uid = "<type>/<index in its file>"; the answer text is resolved to the letter of its first
  occurrence among the candidates.
- ``mlvu_test``::

      test_question.json   rows: question_id, question_type, question, candidates, video
      video/<video>

  uid = question_id; no answers.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

from retake.harness import scoring
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
    require,
    unique,
    write_json,
)
from retake.harness.samples import LETTERS, Sample


def command_dev(data_root: str) -> str:
    return f"python scripts/prepare_mlvu.py --src <MLVU download> --out {data_root}"


def command_test(data_root: str) -> str:
    return f"python scripts/prepare_mlvu.py --split test --src <MLVU_Test download> --out {data_root}"


def mlvu_dev_file(k: int, qtype: str) -> str:
    return f"json/{k}_{qtype}.json"


def mlvu_sample(row: dict, uid: str, video: str, qtype: str, where: str, with_answer: bool = True) -> Sample:
    candidates = check_options([str(c) for c in field(row, "candidates", where)], where)
    answer = None
    if with_answer:
        text = str(field(row, "answer", where))
        if text not in candidates:
            raise ValueError(f"{where}: answer text {text!r} is not among the candidates {candidates}")
        answer = LETTERS[candidates.index(text)]  # first occurrence, as MLVU's own evaluation
    return Sample(
        uid=uid,
        video=video,
        question=str(field(row, "question", where)),
        options=candidates,
        answer=answer,
        meta={"question_type": qtype, "duration": row.get("duration"), "video": row.get("video")},
    )


def load_mlvu_dev(data_root: str) -> list[Sample]:
    """The seven multiple-choice tasks of MLVU dev (json/<k>_<type>.json, all seven required;
    a file may hold an empty list)."""
    samples = []
    for k, qtype in enumerate(scoring.MLVU_DEV_TYPES, 1):
        path = require(os.path.join(data_root, mlvu_dev_file(k, qtype)), "mlvu_dev", data_root, command_dev)
        for i, row in enumerate(read_rows(path)):
            where = f"{path} row {i}"
            video = abs_path(data_root, f"video/{qtype}/{field(row, 'video', where)}")
            samples.append(mlvu_sample(row, f"{qtype}/{i}", video, qtype, where))
    return samples


def load_mlvu_test(data_root: str) -> list[Sample]:
    """MLVU test (test_question.json + video/): multiple-choice questions without answers."""
    path = require(os.path.join(data_root, "test_question.json"), "mlvu_test", data_root, command_test)
    samples, wheres = [], []
    for i, row in enumerate(read_rows(path)):
        where = f"{path} row {i}"
        uid = str(field(row, "question_id", where))
        video = abs_path(data_root, f"video/{field(row, 'video', where)}")
        samples.append(mlvu_sample(row, uid, video, str(field(row, "question_type", where)), where, with_answer=False))
        wheres.append(where)
    return unique(samples, wheres)


def export_mlvu_test_submission(records: list[dict], path: str) -> int:
    """Write MLVU test predictions in the leaderboard's format and return how many.

    The format (MLVU's ``Evaluation_Test`` instructions): one JSON list of
    ``{"question_id": "AR_0", "question_type": "anomaly_reco", "option": "B"}``, in record
    order. A failed or unparsable sample gets ``"option": ""`` (scored wrong by the
    leaderboard, never a guessed letter)."""
    scoring.check_records(records, need_answers=False)
    rows = []
    for r in records:
        if "question_type" not in r["meta"]:
            raise ValueError(f"record {r['uid']!r}: meta has no question_type (the submission needs it)")
        ok = r["error"] is None and r["parsed"] is not None
        rows.append({"question_id": r["uid"], "question_type": r["meta"]["question_type"], "option": r["parsed"] if ok else ""})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    return len(rows)


# ---------------------------------------------------------------- scripts/prepare_mlvu.py


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=("dev", "test"), default="dev", help="which MLVU split (default: dev)")
    p.add_argument("--src", required=True, help="the downloaded MLVU folder")
    p.add_argument("--questions", help="test only: the question file (default: <src>/leaderboard/test_question.json or <src>/test_question.json)")


def first_existing(paths: list[str]) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None)


def prepare_dev(src: str, out: str) -> dict:
    """``<src>/json/<k>_<type>.json`` (or ``<type>.json``) and ``<src>/video/<k>_<type>/`` (or
    ``<type>/``) -> ``<out>/json/<k>_<type>.json`` and links ``<out>/video/<type>/<video>``."""
    per_type = {}
    for k, qtype in enumerate(scoring.MLVU_DEV_TYPES, 1):
        names = [f"{k}_{qtype}.json", f"{qtype}.json"]
        path = first_existing([os.path.join(src, "json", n) for n in names])
        if path is None:
            raise FileNotFoundError(f"{os.path.join(src, 'json')}: none of {names} (MLVU dev needs all seven of {', '.join(scoring.MLVU_DEV_TYPES)})")
        rows = read_table(path)
        for i, row in enumerate(rows):
            mlvu_sample(row, f"{qtype}/{i}", "", qtype, f"{path} row {i}")
        video_dir = first_existing([os.path.join(src, "video", f"{k}_{qtype}"), os.path.join(src, "video", qtype)])
        for row in rows:
            video = os.path.join(video_dir, row["video"]) if video_dir else None
            if video and os.path.exists(video):
                link(video, os.path.join(out, "video", qtype, row["video"]))
        write_json(os.path.join(out, mlvu_dev_file(k, qtype)), rows)
        per_type[qtype] = len(rows)
    return {"questions per type": per_type}


def prepare_test(src: str, questions: str | None, out: str) -> dict:
    """``--questions`` (default ``<src>/leaderboard/test_question.json`` or
    ``<src>/test_question.json``) and ``<src>/video/`` -> ``<out>/test_question.json`` and
    links ``<out>/video/<video>``."""
    candidates = [questions] if questions else [os.path.join(src, "leaderboard", "test_question.json"), os.path.join(src, "test_question.json")]
    path = first_existing(candidates)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"test question file not found at {' or '.join(candidates)} (give --questions)")
    rows = read_table(path)
    for i, row in enumerate(rows):
        mlvu_sample(row, str(row.get("question_id")), "", str(row.get("question_type")), f"{path} row {i}", with_answer=False)
    no_duplicates((r["question_id"] for r in rows), path, "question_id")
    video_dir = os.path.join(src, "video")
    for row in rows:
        video = os.path.join(video_dir, row["video"])
        if os.path.exists(video):
            link(video, os.path.join(out, "video", row["video"]))
    write_json(os.path.join(out, "test_question.json"), rows)
    return {"questions per type": dict(sorted(Counter(r["question_type"] for r in rows).items()))}


def make(args: argparse.Namespace) -> tuple[str, dict]:
    need_folder(args.src, "--src")
    if args.split == "dev":
        return "mlvu_dev", prepare_dev(args.src, args.out)
    return "mlvu_test", prepare_test(args.src, args.questions, args.out)


PREPARE = Preparer("prepare_mlvu", arguments, make)
