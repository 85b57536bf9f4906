"""The ``synthetic`` benchmark, and tiny benchmarks on disk in every benchmark's local layout
(``retake.harness.benchmarks``), so that the real loaders, the runner and the scoring can be
tested end to end on CPU.

``synthetic`` itself is ``samples.jsonl`` of ``Sample.to_dict()`` lines, video paths relative
to ``data_root``: 4 videos x 2 questions (seed 0), written on first use (:func:`generate_synthetic`).

Videos are real (written with ``retake.video.write_test_video``: by default 32 frames at
8 fps, 64x96, a few KiB each); answers are balanced over the letters and shuffled with
``seed``. ``broken=("missing", "corrupt")`` makes one video absent and one unreadable (its
file name says which: ``v000_missing.mp4``, ``v001_corrupt.mp4``) for the harness's
bad-sample tests.

    python -m retake.harness.benchmarks.synthetic --out DIR [--formats synthetic videomme ...]
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from retake.harness import scoring
from retake.harness.benchmarks.common import load_samples
from retake.harness.samples import LETTERS, Sample

DEFAULT_FORMATS = ("synthetic", "videomme", "mlvu_dev", "longvideobench_val", "lvbench")
FORMATS = DEFAULT_FORMATS + ("mlvu_test",)
# folder of each format under root: the same names as conf/dataset/*.yaml's data_root, so one
# root serves every ``dataset=<name>`` (videomme's folder also serves videomme_long)
FOLDERS = {"synthetic": "synthetic", "videomme": "videomme", "mlvu_dev": "mlvu", "mlvu_test": "mlvu_test",
           "longvideobench_val": "longvideobench", "lvbench": "lvbench"}
BROKEN_KINDS = ("missing", "corrupt")
_MLVU_TEST_ABBR = {"plotQA": "PQA", "needleQA": "NQA", "ego": "ER", "count": "AC", "order": "AO",
                   "anomaly_reco": "AR", "topic_reasoning": "TR", "sportsQA": "SQA", "tutorialQA": "TQA"}
_LVB_CATEGORIES = ("S2E", "E2O", "TOS", "SSS")


def command(data_root: str) -> str:
    """The command that writes ``synthetic`` at ``data_root`` (it writes ``<out>/synthetic``)."""
    parent, folder = os.path.split(os.path.normpath(data_root))
    if folder == "synthetic":
        return f"python -m retake.harness.benchmarks.synthetic --out {parent or '.'} --formats synthetic"
    return (f"python -m retake.harness.benchmarks.synthetic --out <root> --formats synthetic "
            f"(it writes <root>/synthetic; data_root={data_root})")


def load_synthetic(data_root: str) -> list[Sample]:
    """``samples.jsonl`` of ``Sample.to_dict()`` lines, videos relative to data_root."""
    return load_samples(data_root, "synthetic", command)


def generate_synthetic(data_root: str) -> None:
    """The harness's small ``synthetic`` set (4 videos x 2 questions, seed 0) at ``data_root``."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(data_root))) as tmp:
        shutil.move(write_synthetic_benchmark(tmp, formats=("synthetic",))["synthetic"], data_root)


def write_synthetic_benchmark(
    root: str | os.PathLike,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    num_videos: int = 4,
    questions_per_video: int = 2,
    seed: int = 0,
    frames: int = 32,
    fps: int = 8,
    size: tuple[int, int] = (64, 96),
    broken: tuple[str, ...] = (),
) -> dict[str, str]:
    """Write ``num_videos`` videos with ``questions_per_video`` questions each, for every format
    in ``formats`` (dataset names; ``videomme``'s root also serves ``videomme_long``).

    Returns ``{format: data_root}`` (absolute paths, ``root/FOLDERS[format]``)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown synthetic format(s) {unknown}; valid choices: {', '.join(FORMATS)}")
    bad = [b for b in broken if b not in BROKEN_KINDS]
    if bad or len(set(broken)) != len(broken):
        raise ValueError(f"broken={broken!r}: each of {', '.join(BROKEN_KINDS)} at most once")
    if num_videos < max(1, len(broken)) or questions_per_video < 1:
        raise ValueError(f"need num_videos >= {max(1, len(broken))} and questions_per_video >= 1")
    root = os.path.abspath(os.fspath(root))
    media = _Media(os.path.join(root, "_media"), broken, frames, fps, size, seed)
    plan = _Plan(num_videos, questions_per_video, seed, media)
    writers = {
        "synthetic": _write_synthetic,
        "videomme": _write_videomme,
        "mlvu_dev": _write_mlvu_dev,
        "mlvu_test": _write_mlvu_test,
        "longvideobench_val": _write_lvb,
        "lvbench": _write_lvbench,
    }
    out = {}
    for fmt in formats:
        data_root = os.path.join(root, FOLDERS[fmt])
        os.makedirs(data_root, exist_ok=True)
        writers[fmt](data_root, plan)
        out[fmt] = data_root
    shutil.rmtree(media.folder, ignore_errors=True)  # the clean originals, copied where needed
    return out


class _Media:
    """Writes each clean video once and copies it where a layout wants it."""

    def __init__(self, folder, broken, frames, fps, size, seed):
        self.folder, self.frames, self.fps, self.size, self.seed = folder, frames, fps, size, seed
        self.kinds = dict(enumerate(broken))  # video index -> "missing" / "corrupt"

    def name(self, i: int) -> str:
        return f"v{i:03d}_{self.kinds[i]}" if i in self.kinds else f"v{i:03d}"

    def place(self, i: int, dst: str) -> None:
        kind = self.kinds.get(i)
        if kind == "missing":
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if kind == "corrupt":
            with open(dst, "wb") as f:  # an mp4 signature and nothing decodable after it
                f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
            return
        src = os.path.join(self.folder, f"{self.name(i)}.mp4")
        if not os.path.exists(src):
            from retake.video import write_test_video  # (torch: only when a video is written)

            os.makedirs(self.folder, exist_ok=True)
            write_test_video(src, num_frames=self.frames, size=self.size, fps=self.fps, seed=self.seed + i)
        shutil.copyfile(src, dst)


class _Plan:
    """Which question is about which video, and its balanced, seeded answer index."""

    def __init__(self, num_videos, questions_per_video, seed, media):
        self.media = media
        self.items = [(i, j) for i in range(num_videos) for j in range(questions_per_video)]
        self.num_videos = num_videos
        rng = np.random.default_rng(seed)
        self._order = rng.permutation(len(self.items))  # q -> slot in the balanced cycle

    def answer(self, q: int, n_options: int) -> int:
        return int(self._order[q]) % n_options

    def questions(self, place=None):
        """``(q, video index, question index within the video, video name)``; ``place(i, name)``:
        the path each video is written to, before its first question is given."""
        placed = set()
        for q, (i, j) in enumerate(self.items):
            name = self.media.name(i)
            if place is not None and i not in placed:
                self.media.place(i, place(i, name))
                placed.add(i)
            yield q, i, j, name

    def duration(self, i: int) -> float:
        return self.media.frames / self.media.fps


def _question(i: int, j: int) -> str:
    return f"Question {j} about video {i}: where does the square move?"


def _options(q: int, n: int) -> list[str]:
    return [f"answer {letter} of question {q}" for letter in LETTERS[:n]]


def _dump(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def _dump_lines(path: str, rows: list) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _write_synthetic(data_root: str, plan: _Plan) -> None:
    rows = []
    for q, i, j, name in plan.questions(lambda i, name: os.path.join(data_root, "videos", f"{name}.mp4")):
        options = _options(q, 4)
        sample = Sample(
            uid=f"syn-{q}", video=f"videos/{name}.mp4", question=_question(i, j), options=options,
            answer=LETTERS[plan.answer(q, 4)], meta={"question_type": ("motion", "colour")[q % 2]},
        )
        rows.append(sample.to_dict())
    _dump_lines(os.path.join(data_root, "samples.jsonl"), rows)


def _write_videomme(data_root: str, plan: _Plan) -> None:
    rows = []
    for q, i, j, name in plan.questions(lambda i, name: os.path.join(data_root, "videos", f"{name}.mp4")):
        options = _options(q, 4)
        rows.append({
            "video_id": f"{i + 1:03d}",
            "duration": scoring.VIDEOMME_DURATIONS[i % 3],
            "domain": scoring.VIDEOMME_DOMAINS[i % len(scoring.VIDEOMME_DOMAINS)],
            "sub_category": "Daily Life",
            "url": "",
            "videoID": name,
            "question_id": f"{i + 1:03d}-{j + 1}",
            "task_type": scoring.VIDEOMME_TASK_TYPES[q % len(scoring.VIDEOMME_TASK_TYPES)],
            "question": _question(i, j),
            "options": [f"{letter}. {text}" for letter, text in zip(LETTERS, options)],
            "answer": LETTERS[plan.answer(q, 4)],
        })
    _dump(os.path.join(data_root, "videomme.json"), rows)


def _write_mlvu_dev(data_root: str, plan: _Plan) -> None:
    """Video i belongs to type i % 7, so with few videos some types are empty (empty files)."""
    types = scoring.MLVU_DEV_TYPES
    per_file: dict[str, list] = {t: [] for t in types}
    place = lambda i, name: os.path.join(data_root, "video", types[i % len(types)], f"{name}.mp4")  # noqa: E731
    for q, i, j, name in plan.questions(place):
        qtype = types[i % len(types)]
        options = _options(q, 4)
        per_file[qtype].append({
            "video": f"{name}.mp4", "duration": plan.duration(i), "question": _question(i, j),
            "candidates": options, "answer": options[plan.answer(q, 4)], "question_type": qtype,
        })
    for k, qtype in enumerate(types, 1):
        _dump(os.path.join(data_root, "json", f"{k}_{qtype}.json"), per_file[qtype])


def _write_mlvu_test(data_root: str, plan: _Plan) -> None:
    rows, counter = [], {}
    for q, i, j, name in plan.questions(lambda i, name: os.path.join(data_root, "video", f"{name}.mp4")):
        qtype = scoring.MLVU_TEST_TYPES[i % len(scoring.MLVU_TEST_TYPES)]
        n = counter[qtype] = counter.get(qtype, -1) + 1
        rows.append({
            "question_id": f"{_MLVU_TEST_ABBR[qtype]}_{n}", "question_type": qtype, "question": _question(i, j),
            "candidates": _options(q, 6), "video": f"{name}.mp4", "duration": plan.duration(i),
        })
    _dump(os.path.join(data_root, "test_question.json"), rows)


def _subtitle_file(data_root: str, i: int, name: str) -> str:
    """Even videos get a JSON [{start, end, line}] file, odd ones an SRT file."""
    lines = [f"subtitle {k} of video {i}" for k in range(3)]
    if i % 2 == 0:
        rel = f"{name}_en.json"
        _dump(os.path.join(data_root, "subtitles", rel),
              [{"start": f"00:00:0{k}.000", "end": f"00:00:0{k + 1}.000", "line": t} for k, t in enumerate(lines)])
    else:
        rel = f"{name}_en.srt"
        blocks = [f"{k + 1}\n00:00:0{k},000 --> 00:00:0{k + 1},000\n{t}\n" for k, t in enumerate(lines)]
        os.makedirs(os.path.join(data_root, "subtitles"), exist_ok=True)
        with open(os.path.join(data_root, "subtitles", rel), "w", encoding="utf-8") as f:
            f.write("\n".join(blocks))
    return rel


def _write_lvb(data_root: str, plan: _Plan) -> None:
    """option0..option4; every odd question leaves option4 "N/A" (4 options). Answers cycle
    over A-D so that both kinds stay balanced."""
    rows, subs = [], {}
    for q, i, j, name in plan.questions(lambda i, name: os.path.join(data_root, "videos", f"{name}.mp4")):
        if i not in subs:
            subs[i] = _subtitle_file(data_root, i, name)
        n = 5 if q % 2 == 0 else 4
        options = _options(q, n) + ["N/A"] * (5 - n)
        rows.append({
            "video_id": name, "id": f"{name}_{j}", "video_path": f"{name}.mp4", "subtitle_path": subs[i],
            "question": _question(i, j), **{f"option{k}": o for k, o in enumerate(options)},
            "correct_choice": plan.answer(q, 4), "duration_group": int(scoring.LVB_DURATION_GROUPS[i % 4]),
            "duration": plan.duration(i), "question_category": _LVB_CATEGORIES[q % len(_LVB_CATEGORIES)],
            "topic_category": "KS-Knowledge-STEM", "starting_timestamp_for_subtitles": 0.0,
        })
    _dump(os.path.join(data_root, "lvb_val.json"), rows)


def _write_lvbench(data_root: str, plan: _Plan) -> None:
    """Questions carry their options as "(A) ..." lines; every third question has two types."""
    names = list(scoring.LVBENCH_TYPES)
    videos: dict[int, dict] = {}
    for q, i, j, name in plan.questions(lambda i, name: os.path.join(data_root, "videos", f"{name}.mp4")):
        if i not in videos:
            videos[i] = {"key": name, "type": ("cartoon", "sports", "documentary")[i % 3], "qa": []}
        options = _options(q, 4)
        types = [names[q % len(names)]] + ([names[(q + 1) % len(names)]] if q % 3 == 0 else [])
        text = _question(i, j) + "".join(f"\n({letter}) {o}" for letter, o in zip(LETTERS, options))
        videos[i]["qa"].append({
            "uid": 1000 + q, "question": text, "answer": LETTERS[plan.answer(q, 4)],
            "question_type": types, "time_reference": "00:00-00:02",
        })
    _dump_lines(os.path.join(data_root, "video_info.meta.jsonl"), [videos[i] for i in sorted(videos)])


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m retake.harness.benchmarks.synthetic",
        description="Write tiny benchmarks (real videos, official annotation layouts) under --out: "
        + ", ".join(f"{f} -> <out>/{d}" for f, d in FOLDERS.items()),
    )
    p.add_argument("--out", required=True, help="root folder (the config's data_root)")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS, help="default: all")
    p.add_argument("--num-videos", type=int, default=4)
    p.add_argument("--questions-per-video", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--broken", nargs="*", default=[], choices=BROKEN_KINDS, help="make one video missing / one corrupt")
    args = p.parse_args(argv)
    roots = write_synthetic_benchmark(args.out, tuple(args.formats), args.num_videos, args.questions_per_video,
                                      args.seed, broken=tuple(args.broken))
    for fmt, data_root in roots.items():
        print(f"{fmt}: {data_root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
