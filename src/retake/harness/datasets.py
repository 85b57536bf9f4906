"""The benchmark registry: ``name -> DatasetSpec(load, score, primary, ...)``.

One name everywhere: ``dataset=<name>`` in the config, the results directory, the table
column. Each loader reads the local layout below (what ``scripts/prepare_<benchmark>.py``
makes from the official download: annotation files with the official field names, videos
as symlinks) and returns ``Sample`` objects with absolute video paths. Video files are not
checked here: a missing or unreadable video is a per-sample failure at run time.

Local layouts under ``data_root`` (docs/datasets.md has the details):

- ``videomme`` / ``videomme_long`` (same root)::

      videomme.json  (or videomme.parquet)   rows: video_id, duration, domain, sub_category,
                                             videoID, question_id, task_type, question,
                                             options ["A. ...", ...], answer
      videos/<videoID>.mp4

  uid = question_id; ``videomme_long`` keeps the rows with duration == "long" (no subtitles).
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
- ``longvideobench_val``::

      lvb_val.json         rows: id, video_id, video_path, subtitle_path, question,
                           candidates | option0..option4 ("N/A" = unused), correct_choice,
                           duration_group, question_category, topic_category, duration
      videos/<video_path>
      subtitles/<subtitle_path>   JSON [{start, end, line}] / [{timestamp, text}], or SRT

  uid = id; Sample.subtitles = every subtitle line of the file, in file order.
- ``lvbench``::

      video_info.meta.jsonl   one line per video: key, type, qa [{uid, question
                              ("...\\n(A) ...\\n(B) ..."), answer, question_type [...],
                              time_reference}]
      videos/<key>.mp4

  uid = str(qa uid); question types mapped to KIR, EU, Sum, ER, Rea, TG.
- ``synthetic``: ``samples.jsonl`` of ``Sample.to_dict()`` lines, video paths relative to
  ``data_root`` (written by ``retake.harness.synthetic_data``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from retake.harness import scoring
from retake.harness.samples import LETTERS, Sample


@dataclass(frozen=True)
class DatasetSpec:
    """name: the registry key. load: data_root -> samples (absolute video paths).
    score: records -> metrics (``retake.harness.scoring``). primary: the key of the headline
    metric in score()'s output. max_guide_tokens: the guide (query) for query-aware
    compression is the last this many tokens of the prompt (None: the whole question).
    has_answers: False where the split has no public answers. generate: writes the benchmark
    at a data_root (generated benchmarks only: written on first use, :func:`ensure_data`)."""

    name: str
    load: Callable[[str], list[Sample]]
    score: Callable[[list[dict]], dict]
    primary: str
    max_guide_tokens: int | None = None
    has_answers: bool = True
    generate: Callable[[str], None] | None = None


# ---------------------------------------------------------------- file helpers


def make_command(dataset: str, data_root: str) -> str:
    """The command that makes ``dataset``'s local layout at ``data_root`` (for "not found" messages)."""
    data_root = os.fspath(data_root)
    commands = {
        "videomme": "python scripts/prepare_videomme.py --annotations <test-00000-of-00001.parquet> --videos <video folder> --out {}",
        "videomme_long": "python scripts/prepare_videomme.py --annotations <test-00000-of-00001.parquet> --videos <video folder> --out {}",
        "mlvu_dev": "python scripts/prepare_mlvu.py --src <MLVU download> --out {}",
        "mlvu_test": "python scripts/prepare_mlvu.py --split test --src <MLVU_Test download> --out {}",
        "longvideobench_val": "python scripts/prepare_longvideobench.py --src <LongVideoBench download> --out {}",
        "lvbench": "python scripts/prepare_lvbench.py --meta <video_info.meta.jsonl> --videos <video folder> --out {}",
        "needle": "python -m retake.synthetic --out {} --num-samples " + str(NEEDLE_SAMPLES) + " --seed 1",
    }
    if dataset == "synthetic":
        parent, folder = os.path.split(os.path.normpath(data_root))
        if folder == "synthetic":
            return f"python -m retake.harness.synthetic_data --out {parent or '.'} --formats synthetic"
        return f"python -m retake.harness.synthetic_data --out <root> --formats synthetic (it writes <root>/synthetic; data_root={data_root})"
    return commands[dataset].format(data_root)


class DatasetNotFoundError(FileNotFoundError):
    """A benchmark's annotation file is not under its data_root; the message names the command
    that makes the layout there."""


def _require(path: str, dataset: str, data_root: str) -> str:
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"{dataset}: annotation file {path!r} not found under data_root={data_root!r}; "
            f"make the layout with `{make_command(dataset, data_root)}` (docs/datasets.md)"
        )
    return path


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


def _rows(path: str) -> list[dict]:
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected a JSON list of objects")
    return rows


def _field(row: dict, key: str, where: str):
    if key not in row or row[key] is None:
        raise ValueError(f"{where}: missing field {key!r} (fields present: {sorted(row)})")
    return row[key]


def _options(options: list, where: str) -> list:
    """The option list of a question, checked before its answer letter is read."""
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"{where}: {len(options)} options ({options}); a question needs 2..{len(LETTERS)}")
    return options


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


def _letter(answer, n_options: int, where: str) -> str:
    letter = str(answer).strip().strip("()").strip().upper()
    if letter not in LETTERS[:n_options]:
        raise ValueError(f"{where}: answer {answer!r} is not one of the option letters {LETTERS[:n_options]}")
    return letter


def _abs(root: str, rel: str) -> str:
    return os.path.abspath(os.path.join(root, rel))


# ---------------------------------------------------------------- VideoMME

VIDEOMME_FILES = ("videomme.json", "videomme.parquet")
_OPTION_PREFIX = re.compile(r"^\s*\(?([A-J])\)?[.:)]?\s+")


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
    raise DatasetNotFoundError(
        f"videomme: neither {' nor '.join(VIDEOMME_FILES)} found under data_root={data_root!r}; "
        f"make the layout with `{make_command('videomme', data_root)}` (docs/datasets.md)"
    )


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
    return _rows(path)


def videomme_sample(row: dict, data_root: str, where: str = "videomme") -> Sample:
    qid = str(_field(row, "question_id", where))
    where = f"{where} question_id {qid}"
    options = _options(strip_option_letters(list(_field(row, "options", where)), where), where)
    duration = _field(row, "duration", where)
    if duration not in scoring.VIDEOMME_DURATIONS:
        raise ValueError(f"{where}: duration {duration!r} is not one of {scoring.VIDEOMME_DURATIONS}")
    video_id = str(_field(row, "videoID", where))
    return Sample(
        uid=qid,
        video=_abs(data_root, f"videos/{video_id}.mp4"),
        question=str(_field(row, "question", where)),
        options=options,
        answer=_letter(_field(row, "answer", where), len(options), where),
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


# ---------------------------------------------------------------- MLVU

def mlvu_dev_file(k: int, qtype: str) -> str:
    return f"json/{k}_{qtype}.json"


def mlvu_sample(row: dict, uid: str, video: str, qtype: str, where: str, with_answer: bool = True) -> Sample:
    candidates = _options([str(c) for c in _field(row, "candidates", where)], where)
    answer = None
    if with_answer:
        text = str(_field(row, "answer", where))
        if text not in candidates:
            raise ValueError(f"{where}: answer text {text!r} is not among the candidates {candidates}")
        answer = LETTERS[candidates.index(text)]  # first occurrence, as MLVU's own evaluation
    return Sample(
        uid=uid,
        video=video,
        question=str(_field(row, "question", where)),
        options=candidates,
        answer=answer,
        meta={"question_type": qtype, "duration": row.get("duration"), "video": row.get("video")},
    )


def load_mlvu_dev(data_root: str) -> list[Sample]:
    """The seven multiple-choice tasks of MLVU dev (json/<k>_<type>.json, all seven required;
    a file may hold an empty list)."""
    samples = []
    for k, qtype in enumerate(scoring.MLVU_DEV_TYPES, 1):
        path = _require(os.path.join(data_root, mlvu_dev_file(k, qtype)), "mlvu_dev", data_root)
        for i, row in enumerate(_rows(path)):
            where = f"{path} row {i}"
            video = _abs(data_root, f"video/{qtype}/{_field(row, 'video', where)}")
            samples.append(mlvu_sample(row, f"{qtype}/{i}", video, qtype, where))
    return samples


def load_mlvu_test(data_root: str) -> list[Sample]:
    """MLVU test (test_question.json + video/): multiple-choice questions without answers."""
    path = _require(os.path.join(data_root, "test_question.json"), "mlvu_test", data_root)
    samples, wheres = [], []
    for i, row in enumerate(_rows(path)):
        where = f"{path} row {i}"
        uid = str(_field(row, "question_id", where))
        video = _abs(data_root, f"video/{_field(row, 'video', where)}")
        samples.append(mlvu_sample(row, uid, video, str(_field(row, "question_type", where)), where, with_answer=False))
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


# ---------------------------------------------------------------- LongVideoBench

_SRT_TIME = re.compile(r"-->")
_TAG = re.compile(r"<[^>]+>")


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
    uid = str(_field(row, "id", where))
    where = f"{where} id {uid}"
    options = _options(lvb_options(row, where), where)
    choice = int(_field(row, "correct_choice", where))
    if not 0 <= choice < len(options):
        raise ValueError(f"{where}: correct_choice {choice} is out of range for {len(options)} options")
    group = row.get("duration_group")
    return Sample(
        uid=uid,
        video=_abs(data_root, f"videos/{_field(row, 'video_path', where)}"),
        question=str(_field(row, "question", where)),
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
    path = _require(os.path.join(data_root, "lvb_val.json"), "longvideobench_val", data_root)
    cache: dict[str, str | None] = {}  # many questions share a video's subtitle file
    samples, wheres = [], []
    for i, row in enumerate(_rows(path)):
        sub = row.get("subtitle_path")
        sub_path = _abs(data_root, f"subtitles/{sub}") if sub else None
        present = sub_path is not None and os.path.isfile(sub_path)
        if present and sub_path not in cache:
            cache[sub_path] = "\n".join(subtitle_lines(sub_path)) or None
        sample = lvb_sample(row, data_root, f"{path} row {i}", cache[sub_path] if present else None)
        if not present:
            sample.meta["subtitles_missing"] = True
        samples.append(sample)
        wheres.append(f"{path} row {i}")
    return unique(samples, wheres)


# ---------------------------------------------------------------- LVBench

_LINE_OPTION = re.compile(r"(?:^|\n)[ \t]*\(([A-J])\)[ \t]*")
_INLINE_OPTION = re.compile(r"\(([A-J])\)\s*")


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
    uid = str(_field(qa, "uid", where))
    where = f"{where} uid {uid}"
    try:
        question, options = split_lettered_options(str(_field(qa, "question", where)))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    key = str(_field(video, "key", where))
    return Sample(
        uid=uid,
        video=_abs(data_root, f"videos/{key}.mp4"),
        question=question,
        options=options,
        answer=_letter(_field(qa, "answer", where), len(options), where),
        meta={
            "question_type": lvbench_type_codes(qa.get("question_type")),
            "video_type": video.get("type"),
            "time_reference": qa.get("time_reference"),
            "video": key,
        },
    )


def lvbench_samples(video: dict, data_root: str, where: str) -> list[Sample]:
    """The samples of one line of video_info.meta.jsonl (one video and its questions)."""
    return [lvbench_sample(video, qa, data_root, where) for qa in _field(video, "qa", where)]


def load_lvbench(data_root: str) -> list[Sample]:
    """LVBench (1,549 questions on 103 videos) from video_info.meta.jsonl."""
    path = _require(os.path.join(data_root, "video_info.meta.jsonl"), "lvbench", data_root)
    samples, wheres = [], []
    for i, video in enumerate(read_jsonl(path)):
        found = lvbench_samples(video, data_root, f"{path} line {i + 1}")
        samples += found
        wheres += [f"{path} line {i + 1} uid {s.uid}" for s in found]
    return unique(samples, wheres)


# ---------------------------------------------------------------- synthetic

def load_synthetic(data_root: str, dataset: str = "synthetic") -> list[Sample]:
    """Our own format: samples.jsonl of ``Sample.to_dict()`` lines, videos relative to data_root."""
    path = _require(os.path.join(data_root, "samples.jsonl"), dataset, data_root)
    samples, wheres = [], []
    for i, d in enumerate(read_jsonl(path)):
        try:
            s = Sample.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} line {i + 1}: not a valid sample ({e})") from None
        s.video = _abs(data_root, s.video)
        samples.append(s)
        wheres.append(f"{path} line {i + 1}")
    return unique(samples, wheres)


# ---------------------------------------------------------------- generated benchmarks

NEEDLE_SAMPLES = 48  # the demo's held-out needle set (seed 1)


def generate_needle(data_root: str) -> None:
    """The held-out needle set (seed 1, :data:`NEEDLE_SAMPLES` questions) at ``data_root``."""
    from retake.synthetic import write_benchmark

    write_benchmark(data_root, NEEDLE_SAMPLES, seed=1)


def generate_synthetic(data_root: str) -> None:
    """The harness's small ``synthetic`` set (4 videos x 2 questions, seed 0) at ``data_root``."""
    import shutil
    import tempfile

    from retake.harness.synthetic_data import write_synthetic_benchmark

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(data_root))) as tmp:
        shutil.move(write_synthetic_benchmark(tmp, formats=("synthetic",))["synthetic"], data_root)


def ensure_data(spec: "DatasetSpec", data_root: str, log=print) -> bool:
    """Write a generated benchmark (``spec.generate``) at ``data_root`` when nothing is there yet
    (no folder, or an empty one); returns whether it did. A folder holding other files is left
    alone: its loader then names what is missing. Real benchmarks are never generated. Written
    into a temporary sibling and renamed, so processes starting together never see half a set."""
    import shutil

    if spec.generate is None or (os.path.isdir(data_root) and os.listdir(data_root)):
        return False
    log(f"{spec.name}: no data under {data_root}; writing it now (`{make_command(spec.name, data_root)}`)")
    data_root = os.path.abspath(data_root)
    os.makedirs(os.path.dirname(data_root), exist_ok=True)
    tmp = f"{data_root}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    spec.generate(tmp)
    try:
        if os.path.isdir(data_root):
            os.rmdir(data_root)  # empty: checked above
        os.rename(tmp, data_root)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return True


# ---------------------------------------------------------------- registry

DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec("synthetic", load_synthetic, scoring.score_accuracy, "accuracy", generate=generate_synthetic),
        # the needle benchmark (retake.synthetic): the same format, per question type
        DatasetSpec("needle", partial(load_synthetic, dataset="needle"), scoring.score_accuracy, "accuracy",
                    generate=generate_needle),
        DatasetSpec("videomme", load_videomme, scoring.score_videomme, "accuracy"),
        DatasetSpec("videomme_long", partial(load_videomme, durations=("long",)), scoring.score_videomme, "accuracy"),
        DatasetSpec("mlvu_dev", load_mlvu_dev, scoring.score_mlvu_dev, "m_avg"),
        DatasetSpec("mlvu_test", load_mlvu_test, scoring.score_mlvu_test, "num_answered", has_answers=False),
        DatasetSpec("longvideobench_val", load_longvideobench_val, scoring.score_longvideobench, "accuracy", max_guide_tokens=152),
        DatasetSpec("lvbench", load_lvbench, scoring.score_lvbench, "accuracy"),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------- for the prepare scripts

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


def missing_videos(samples: list[Sample]) -> list[str]:
    """The distinct video paths of ``samples`` that do not exist, sorted."""
    return sorted({s.video for s in samples if not os.path.exists(s.video)})


def report(name: str, data_root: str, strict: bool = False, extra: dict | None = None) -> int:
    """Load ``data_root`` with the real loader (validating every row), print a summary and
    return the exit code: 1 if videos are missing and ``strict``, else 0."""
    samples = get_dataset(name).load(data_root)
    missing = missing_videos(samples)
    n_videos = len({s.video for s in samples})
    print(f"{name}: {len(samples)} questions, {n_videos} videos under {os.path.abspath(data_root)}")
    for k, v in (extra or {}).items():
        print(f"  {k}: {v}")
    if missing:
        print(f"  WARNING {len(missing)} of {n_videos} videos missing (each will be a failed sample), e.g.:")
        for path in missing[:10]:
            print(f"    {path}")
    else:
        print("  all videos present")
    return 1 if missing and strict else 0
