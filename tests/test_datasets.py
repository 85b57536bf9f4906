"""Benchmark loaders, scoring, prepare scripts and the synthetic benchmark writer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import load_script
from retake.harness import datasets as D
from retake.harness.benchmarks.synthetic import FORMATS, write_synthetic_benchmark
from retake.harness.samples import format_prompt
from retake.harness.scoring import score_mlvu_test
from retake.video import VideoDecodeError, load_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return write_synthetic_benchmark(tmp_path_factory.mktemp("bench"), formats=FORMATS, broken=("missing", "corrupt"))


def load(name, roots):
    return D.get_dataset(name).load(roots["videomme" if name == "videomme_long" else name])


def rec(uid, parsed, answer, error=None, **meta):
    return {"uid": uid, "prediction": parsed, "parsed": parsed, "answer": answer, "meta": meta, "error": error}


# ------------------------------------------------------------------ registry


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError) as e:
        D.get_dataset("videomme_short")
    for name in ("synthetic", "videomme", "videomme_long", "mlvu_dev", "mlvu_test", "longvideobench_val", "lvbench"):
        assert name in str(e.value)


@pytest.mark.parametrize("name", list(D.DATASETS))
def test_every_spec_scores_an_empty_run_and_reports_its_primary(name):
    spec = D.get_dataset(name)
    assert spec.name == name
    out = spec.score([])
    assert spec.primary in out
    assert {"accuracy", "num_samples", "num_unparsable", "num_failed"} <= set(out)
    assert out["accuracy"] is None  # nothing scored is not 0 %


def test_spec_flags():
    assert D.get_dataset("longvideobench_val").max_guide_tokens == 152
    assert D.get_dataset("videomme").max_guide_tokens is None
    assert not D.get_dataset("mlvu_test").has_answers
    assert D.get_dataset("mlvu_dev").primary == "m_avg"


def test_missing_annotation_names_the_prepare_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_mlvu.py"):
        D.get_dataset("mlvu_dev").load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="prepare_videomme.py"):
        D.get_dataset("videomme_long").load(str(tmp_path))


# ------------------------------------------------------------------ loaders on the synthetic files


@pytest.mark.parametrize("name", ["synthetic", "videomme", "mlvu_dev", "longvideobench_val", "lvbench"])
def test_loader_counts_answers_and_paths(roots, name):
    samples = load(name, roots)
    assert len(samples) == 8 and len({s.uid for s in samples}) == 8
    assert Counter(s.answer for s in samples) == Counter("AABBCCDD")  # balanced over A-D
    assert all(os.path.isabs(s.video) for s in samples)
    assert sum(not os.path.exists(s.video) for s in samples) == 2  # the missing video's two questions
    assert "Options:\nA. answer A of question" in format_prompt(samples[0])


def test_videomme_fields(roots):
    samples = load("videomme", roots)
    s = samples[0]
    assert s.uid == "001-1" and s.video.endswith("videos/v000_missing.mp4")
    assert s.options == [f"answer {c} of question 0" for c in "ABCD"]
    assert s.meta["duration"] == "short" and s.meta["task_type"] == "Temporal Perception"
    long = load("videomme_long", roots)
    assert [x.uid for x in long] == ["003-1", "003-2"] and {x.meta["duration"] for x in long} == {"long"}
    assert all(x.subtitles is None for x in long)


def test_videomme_reads_parquet(tmp_path, roots):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = json.loads(Path(roots["videomme"], "videomme.json").read_text())
    pd.DataFrame(rows).to_parquet(tmp_path / "videomme.parquet")
    a = D.get_dataset("videomme").load(str(tmp_path))
    b = load("videomme", roots)
    assert [(s.uid, s.options, s.answer) for s in a] == [(s.uid, s.options, s.answer) for s in b]


def test_mlvu_dev_uids_and_letters(roots):
    samples = load("mlvu_dev", roots)
    assert [s.uid for s in samples[:2]] == ["plotQA/0", "plotQA/1"]
    assert {s.meta["question_type"] for s in samples} == {"plotQA", "needle", "ego", "count"}  # 4 videos -> 4 of 7 types
    assert samples[0].video.endswith("video/plotQA/v000_missing.mp4")
    row = json.loads(Path(roots["mlvu_dev"], "json/1_plotQA.json").read_text())[0]
    assert samples[0].options[ord(samples[0].answer) - 65] == row["answer"]


def test_mlvu_answer_text_resolution():
    row = {"video": "a.mp4", "question": "q", "candidates": ["Six", "Three", "Three", "Eight"], "answer": "Three"}
    assert D.mlvu_sample(row, "count/0", "a.mp4", "count", "x").answer == "B"  # first occurrence
    with pytest.raises(ValueError, match="not among the candidates"):
        D.mlvu_sample({**row, "answer": "Two"}, "count/0", "a.mp4", "count", "x")


def test_mlvu_test_has_no_answers(roots):
    samples = load("mlvu_test", roots)
    assert len(samples) == 8 and all(s.answer is None for s in samples)
    assert samples[0].uid == "PQA_0" and len(samples[0].options) == 6
    assert samples[0].meta["question_type"] == "plotQA"


def test_longvideobench_subtitles_and_options(roots):
    samples = load("longvideobench_val", roots)
    by_video = {s.meta["video_id"]: s for s in samples}
    # v000 has a JSON subtitle file, v001 an SRT one
    assert by_video["v000_missing"].subtitles == "subtitle 0 of video 0\nsubtitle 1 of video 0\nsubtitle 2 of video 0"
    assert by_video["v001_corrupt"].subtitles == "subtitle 0 of video 1\nsubtitle 1 of video 1\nsubtitle 2 of video 1"
    assert [len(s.options) for s in samples[:2]] == [5, 4]  # option4 "N/A" skipped
    assert samples[0].meta["duration_group"] == "15" and samples[0].meta["question_category"] == "S2E"
    prompt = format_prompt(samples[0])
    assert prompt.startswith("subtitle 0 of video 0") and "E. answer E of question 0" in prompt


def test_longvideobench_candidates_and_bad_na():
    row = {"id": "x", "video_path": "x.mp4", "question": "q", "candidates": ["a", "b", "c"], "correct_choice": 2}
    assert D.lvb_sample(row, "/d", "w", None).answer == "C"
    na = {"id": "x", "video_path": "x.mp4", "question": "q", "option0": "a", "option1": "N/A", "option2": "c", "correct_choice": 0}
    with pytest.raises(ValueError, match="N/A"):
        D.lvb_sample(na, "/d", "w", None)
    with pytest.raises(ValueError, match="out of range"):
        D.lvb_sample({**row, "correct_choice": 3}, "/d", "w", None)


def test_missing_subtitle_file_is_flagged(tmp_path):
    row = {"id": "x", "video_path": "x.mp4", "subtitle_path": "gone.json", "question": "q", "candidates": ["a", "b"], "correct_choice": 0}
    (tmp_path / "lvb_val.json").write_text(json.dumps([row]))
    (s,) = D.get_dataset("longvideobench_val").load(str(tmp_path))
    assert s.subtitles is None and s.meta["subtitles_missing"] is True


def test_subtitle_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"timestamp": [0.0, 1.0], "text": " hi "}, {"timestamp": [1.0, None], "text": "there"}]))
    (tmp_path / "b.srt").write_text('1\n00:00:00,000 --> 00:00:01,000\n<font color="white">Hello</font>\nworld\n\n2\n00:00:01,000 --> 00:00:02,000\nagain\n')
    assert D.subtitle_lines(str(tmp_path / "a.json")) == ["hi", "there"]
    assert D.subtitle_lines(str(tmp_path / "b.srt")) == ["Hello", "world", "again"]
    (tmp_path / "c.json").write_text(json.dumps([{"start": 0}]))
    with pytest.raises(ValueError, match="neither 'line' nor 'text'"):
        D.subtitle_lines(str(tmp_path / "c.json"))


def test_lvbench_option_splitting(roots):
    samples = load("lvbench", roots)
    s = samples[0]
    assert s.uid == "1000" and s.question == "Question 0 about video 0: where does the square move?"
    assert s.options == [f"answer {c} of question 0" for c in "ABCD"]
    assert s.meta["question_type"] == ["KIR", "EU"] and samples[1].meta["question_type"] == ["EU"]
    assert s.video.endswith("videos/v000_missing.mp4")


def test_split_lettered_options():
    assert D.split_lettered_options("Who?\n(A) x\n(B) y (z)\n(C) w") == ("Who?", ["x", "y (z)", "w"])
    assert D.split_lettered_options("Who? (A) x (B) y") == ("Who?", ["x", "y"])
    assert D.split_lettered_options("In (A) what?\n(A) x\n(B) y") == ("In (A) what?", ["x", "y"])
    for bad in ("Who?", "Who?\n(A) x\n(C) y", "(A) x\n(B) y"):
        with pytest.raises(ValueError, match="cannot split"):
            D.split_lettered_options(bad)
    assert D.lvbench_type_codes(["key information retrieval", "Temporal Grounding", "TG", "new"]) == ["KIR", "TG", "TG", "new"]


def test_synthetic_writer_is_seeded_and_validates(tmp_path):
    a = write_synthetic_benchmark(tmp_path / "a", formats=("videomme",), seed=3)["videomme"]
    b = write_synthetic_benchmark(tmp_path / "b", formats=("videomme",), seed=3)["videomme"]
    c = write_synthetic_benchmark(tmp_path / "c", formats=("videomme",), seed=4)["videomme"]
    text = [Path(r, "videomme.json").read_text() for r in (a, b, c)]
    assert text[0] == text[1] != text[2]
    assert sorted(os.listdir(Path(a, "videos"))) == ["v000.mp4", "v001.mp4", "v002.mp4", "v003.mp4"]
    with pytest.raises(ValueError, match="valid choices"):
        write_synthetic_benchmark(tmp_path / "d", formats=("nope",))
    with pytest.raises(ValueError, match="missing, corrupt"):
        write_synthetic_benchmark(tmp_path / "d", broken=("gone",))


def test_synthetic_cli_uses_the_config_folders(tmp_path, capsys):
    from retake.harness.benchmarks.synthetic import main

    assert main(["--out", str(tmp_path), "--formats", "mlvu_dev", "longvideobench_val", "--num-videos", "2"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["longvideobench", "mlvu"]
    assert len(D.get_dataset("mlvu_dev").load(str(tmp_path / "mlvu"))) == 4
    assert len(D.get_dataset("longvideobench_val").load(str(tmp_path / "longvideobench"))) == 4


def test_synthetic_broken_videos(roots):
    videos = Path(roots["synthetic"], "videos")
    assert not (videos / "v000_missing.mp4").exists()
    with pytest.raises(VideoDecodeError):
        load_video(videos / "v001_corrupt.mp4", backend="pyav")
    assert load_video(videos / "v002.mp4", backend="pyav", max_long_side=96).num_frames == 8  # 32 frames at 8 fps, 2 fps


# ------------------------------------------------------------------ scoring, by hand


def test_videomme_score_by_hand():
    records = [
        rec("1", "A", "A", duration="short", task_type="Temporal Perception", domain="Knowledge"),
        rec("2", "B", "A", duration="short", task_type="OCR Problems", domain="Knowledge"),
        rec("3", None, "A", duration="medium", task_type="OCR Problems", domain="Knowledge"),  # unparsable
        rec("4", "A", "A", error="VideoDecodeError: file not found", duration="long", task_type="Temporal Perception", domain="Knowledge"),
        rec("5", "C", "C", duration="long", task_type="OCR Problems", domain="Knowledge"),
    ]
    out = D.get_dataset("videomme").score(records)
    assert (out["accuracy"], out["num_samples"], out["num_correct"], out["num_unparsable"], out["num_failed"]) == (40.0, 5, 2, 1, 1)
    assert list(out["per_duration"]) == ["short", "medium", "long"]
    assert {k: v["accuracy"] for k, v in out["per_duration"].items()} == {"short": 50.0, "medium": 0.0, "long": 50.0}
    assert list(out["per_task_type"]) == ["Temporal Perception", "OCR Problems"]  # official order
    assert {k: v for k, v in out["per_task_type"]["Temporal Perception"].items() if "ci95" not in k} == {"accuracy": 50.0, "num_samples": 2, "num_correct": 1}
    assert out["per_task_type"]["OCR Problems"]["accuracy"] == pytest.approx(100 / 3)
    assert list(out)[:7] == ["accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "num_samples", "num_correct",
                             "num_unparsable", "num_failed"]


def test_mlvu_m_avg_ignores_absent_types():
    records = [rec("plotQA/0", "A", "A", question_type="plotQA"), rec("plotQA/1", "B", "B", question_type="plotQA")]
    records += [rec(f"needle/{i}", p, "C", question_type="needle") for i, p in enumerate(["C", "A", None, "D"])]
    records += [rec("count/0", "A", "B", question_type="count")]
    out = D.get_dataset("mlvu_dev").score(records)
    assert list(out["per_question_type"]) == ["plotQA", "needle", "count"]
    assert [v["accuracy"] for v in out["per_question_type"].values()] == [100.0, 25.0, 0.0]
    assert out["m_avg"] == pytest.approx((100 + 25 + 0) / 3)  # not / 7: four types are absent
    assert out["accuracy"] == pytest.approx(100 * 3 / 7)
    assert out["num_unparsable"] == 1 and out["num_failed"] == 0


def test_longvideobench_score_by_hand():
    records = [
        rec("a", "A", "A", duration_group="3600", question_category="TOS"),
        rec("b", "B", "A", duration_group="15", question_category="S2E"),
        rec("c", "E", "E", duration_group="600", question_category="S2E"),
        rec("d", None, "B", duration_group="3600", question_category="E2O"),
    ]
    out = D.get_dataset("longvideobench_val").score(records)
    assert out["accuracy"] == 50.0 and out["num_unparsable"] == 1
    assert list(out["per_duration_group"]) == ["15", "600", "3600"]
    assert {k: v["accuracy"] for k, v in out["per_duration_group"].items()} == {"15": 0.0, "600": 100.0, "3600": 50.0}
    assert list(out["per_question_category"]) == ["E2O", "S2E", "TOS"]
    assert {k: v for k, v in out["per_question_category"]["S2E"].items() if "ci95" not in k} == {"accuracy": 50.0, "num_samples": 2, "num_correct": 1}


def test_lvbench_multi_type_questions_count_in_each():
    records = [
        rec("1", "A", "A", question_type=["KIR", "TG"]),
        rec("2", "B", "C", question_type=["TG"]),
        rec("3", None, "D", question_type=["EU"]),
        rec("4", "D", "D", question_type=["Sum", "KIR"]),
        rec("5", None, "A", error="OutOfMemoryError", question_type=["Rea"]),
    ]
    out = D.get_dataset("lvbench").score(records)
    assert (out["accuracy"], out["num_correct"], out["num_unparsable"], out["num_failed"]) == (40.0, 2, 1, 1)
    per = out["per_question_type"]
    assert list(per) == ["KIR", "EU", "Sum", "Rea", "TG"]
    assert {k: (v["num_samples"], v["accuracy"]) for k, v in per.items()} == {
        "KIR": (2, 100.0), "EU": (1, 0.0), "Sum": (1, 100.0), "Rea": (1, 0.0), "TG": (2, 50.0)}


def test_synthetic_score_and_record_checks():
    out = D.get_dataset("synthetic").score([rec("1", "A", "A", question_type="motion"), rec("2", "A", "B", question_type="colour")])
    assert out["accuracy"] == 50.0 and list(out["per_question_type"]) == ["colour", "motion"]
    with pytest.raises(ValueError, match="duplicate uid"):
        D.get_dataset("synthetic").score([rec("1", "A", "A"), rec("1", "A", "A")])
    with pytest.raises(ValueError, match="no answer letter"):
        D.get_dataset("videomme").score([rec("1", "A", None)])
    with pytest.raises(ValueError, match="missing field"):
        D.get_dataset("videomme").score([{"uid": "1", "parsed": "A"}])


def test_mlvu_test_counts_and_submission(tmp_path):
    records = [
        rec("AR_0", "B", None, question_type="anomaly_reco"),
        rec("AR_1", None, None, question_type="anomaly_reco"),
        rec("SQA_0", "C", None, error="VideoDecodeError", question_type="sportsQA"),
    ]
    out = score_mlvu_test(records)
    assert (out["num_answered"], out["num_samples"], out["num_unparsable"], out["num_failed"]) == (1, 3, 1, 1)
    assert out["accuracy"] is None and out["per_question_type"] == {"anomaly_reco": {"num_samples": 2}, "sportsQA": {"num_samples": 1}}
    path = tmp_path / "sub" / "mlvu_test_submission.json"
    assert D.export_mlvu_test_submission(records, str(path)) == 3
    assert json.loads(path.read_text()) == [
        {"question_id": "AR_0", "question_type": "anomaly_reco", "option": "B"},
        {"question_id": "AR_1", "question_type": "anomaly_reco", "option": ""},
        {"question_id": "SQA_0", "question_type": "sportsQA", "option": ""},
    ]


# ------------------------------------------------------------------ prepare scripts on synthetic official downloads


def run_script(name, *args):
    return load_script(name).main([str(a) for a in args])


def same_questions(a, b):
    key = lambda s: (s.uid, s.question, s.options, s.answer, s.subtitles)
    assert [key(s) for s in a] == [key(s) for s in b]


def test_prepare_videomme_from_parquet(tmp_path, roots, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    src = tmp_path / "download"
    (src / "data").mkdir(parents=True)
    rows = json.loads(Path(roots["videomme"], "videomme.json").read_text())
    pd.DataFrame(rows).to_parquet(src / "test-00000-of-00001.parquet")
    for f in Path(roots["videomme"], "videos").iterdir():  # v003 shipped as .mkv
        shutil.copy(f, src / "data" / (f.name.replace(".mp4", ".mkv") if f.stem == "v003" else f.name))
    out = tmp_path / "videomme"
    assert run_script("prepare_videomme", "--annotations", src / "test-00000-of-00001.parquet", "--videos", src, "--out", out) == 0
    text = capsys.readouterr().out
    assert "videomme: 8 questions, 4 videos" in text and "1 of 4 videos missing" in text and "v000_missing" in text
    assert os.path.islink(out / "videos" / "v003.mp4") and os.readlink(out / "videos" / "v003.mp4").endswith("v003.mkv")
    same_questions(D.get_dataset("videomme").load(str(out)), load("videomme", roots))
    assert run_script("prepare_videomme", "--annotations", src / "test-00000-of-00001.parquet", "--videos", src, "--out", out, "--strict") == 1


def test_prepare_videomme_rejects_bad_rows(tmp_path, roots, capsys):
    rows = json.loads(Path(roots["videomme"], "videomme.json").read_text())
    rows[3]["answer"] = "E"
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    assert run_script("prepare_videomme", "--annotations", tmp_path / "bad.json", "--videos", tmp_path, "--out", tmp_path / "o") == 2
    assert "question_id 002-2: answer 'E' is not one of the option letters ABCD" in capsys.readouterr().err
    assert run_script("prepare_videomme", "--annotations", tmp_path / "nope.parquet", "--videos", tmp_path, "--out", tmp_path / "o") == 2


def test_prepare_mlvu_dev_from_numbered_video_folders(tmp_path, roots, capsys):
    src = tmp_path / "MLVU"
    shutil.copytree(Path(roots["mlvu_dev"], "json"), src / "json")
    for k, qtype in enumerate(("needle", "ego", "count"), 2):  # the hub names folders video/<k>_<type>; plotQA's one video is missing
        shutil.copytree(Path(roots["mlvu_dev"], "video", qtype), src / "video" / f"{k}_{qtype}")
    out = tmp_path / "mlvu_dev"
    assert run_script("prepare_mlvu", "--src", src, "--out", out) == 0
    text = capsys.readouterr().out
    assert "mlvu_dev: 8 questions" in text and "1 of 4 videos missing" in text
    same_questions(D.get_dataset("mlvu_dev").load(str(out)), load("mlvu_dev", roots))
    os.remove(src / "json" / "7_topic_reasoning.json")
    assert run_script("prepare_mlvu", "--src", src, "--out", out) == 2
    assert "topic_reasoning" in capsys.readouterr().err


def test_prepare_mlvu_test(tmp_path, roots, capsys):
    out = tmp_path / "mlvu_test"
    assert run_script("prepare_mlvu", "--split", "test", "--src", roots["mlvu_test"], "--out", out) == 0
    assert "mlvu_test: 8 questions" in capsys.readouterr().out
    same_questions(D.get_dataset("mlvu_test").load(str(out)), load("mlvu_test", roots))


def test_prepare_longvideobench_with_candidates(tmp_path, roots, capsys):
    src = tmp_path / "LongVideoBench"
    shutil.copytree(roots["longvideobench_val"], src, symlinks=True)
    rows = json.loads((src / "lvb_val.json").read_text())
    for r in rows:  # the official file lists candidates instead of option0..4
        r["candidates"] = [r.pop(f"option{i}") for i in range(5)]
        r["candidates"] = [c for c in r["candidates"] if c != "N/A"]
    (src / "lvb_val.json").write_text(json.dumps(rows))
    os.remove(src / "subtitles" / "v003_en.srt")
    out = tmp_path / "lvb"
    assert run_script("prepare_longvideobench", "--src", src, "--out", out) == 0
    text = capsys.readouterr().out
    assert "longvideobench_val: 8 questions" in text and "missing subtitle files (prompt without subtitles): 1" in text
    got = D.get_dataset("longvideobench_val").load(str(out))
    want = load("longvideobench_val", roots)
    assert [(s.uid, s.options, s.answer) for s in got] == [(s.uid, s.options, s.answer) for s in want]
    assert [s.subtitles is None for s in got] == [s.meta["video_id"] == "v003" for s in got]


def test_prepare_lvbench(tmp_path, roots, capsys):
    out = tmp_path / "lvbench"
    meta = Path(roots["lvbench"], "video_info.meta.jsonl")
    assert run_script("prepare_lvbench", "--meta", meta, "--videos", Path(roots["lvbench"], "videos"), "--out", out) == 0
    assert "lvbench: 8 questions" in capsys.readouterr().out
    same_questions(D.get_dataset("lvbench").load(str(out)), load("lvbench", roots))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(meta.read_text().replace("(B)", "(C)", 1))
    assert run_script("prepare_lvbench", "--meta", bad, "--videos", tmp_path, "--out", out) == 2
    assert "cannot split options" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["prepare_videomme", "prepare_mlvu", "prepare_longvideobench", "prepare_lvbench"])
def test_prepare_scripts_have_help(name):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--out" in res.stdout


def test_every_accuracy_has_its_95_percent_interval():
    """Wilson intervals against published values (5/10: 23.7-76.3 %, 0/10: 0-27.8 %), present for
    the headline and every breakdown group; MLVU's m_avg gets a seeded stratified bootstrap
    interval that holds the estimate and narrows with more questions."""
    from retake.harness.scoring import m_avg_interval, wilson_interval

    assert wilson_interval(5, 10) == pytest.approx((23.659, 76.341), abs=1e-3)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 27.753), abs=1e-3)
    assert wilson_interval(10, 10)[1] == 100.0 and wilson_interval(0, 0) == (None, None)
    recs = [rec(str(i), "A" if i % 4 else "B", "A", duration="long", task_type="OCR Problems") for i in range(40)]
    out = D.get_dataset("videomme").score(recs)
    assert out["accuracy"] == 75.0 and (out["accuracy_ci95_low"], out["accuracy_ci95_high"]) == wilson_interval(30, 40)
    for group in (out["per_duration"]["long"], out["per_task_type"]["OCR Problems"]):
        assert (group["accuracy_ci95_low"], group["accuracy_ci95_high"]) == wilson_interval(30, 40)
    mlvu = [rec(f"{t}/{i}", "A" if i % 2 else "B", "A", question_type=t) for t in ("plotQA", "needle") for i in range(20)]
    m = D.get_dataset("mlvu_dev").score(mlvu)
    assert m["m_avg_ci95_low"] < m["m_avg"] == 50.0 < m["m_avg_ci95_high"]
    assert D.get_dataset("mlvu_dev").score(mlvu)["m_avg_ci95_low"] == m["m_avg_ci95_low"]  # seeded
    wide, narrow = m_avg_interval([(5, 10), (5, 10)]), m_avg_interval([(50, 100), (50, 100)])
    assert wide[1] - wide[0] > narrow[1] - narrow[0] > 0
