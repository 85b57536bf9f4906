"""The command line, run as a user runs it (subprocess), on a tiny checkpoint it writes."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import pytest

from retake.video import write_test_video

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}


def retake(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "retake.cli", *map(str, args)], capture_output=True, text=True, env=ENV)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def retake_here(capsys, *args, check=True):
    """``retake`` in this process (``cli.main``): the same code, without a Python start-up."""
    from retake.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    if check:
        assert code == 0, err
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "tiny25"
    out = retake("tiny-model", "--arch", "qwen2_5_vl", d, "--seed", "3").stdout.strip()
    assert out == str(d) and os.path.exists(d / "config.json") and os.path.exists(d / "tokenizer_config.json")
    return d


def test_ask_json(cli_model, tmp_path, capsys):
    video = write_test_video(tmp_path / "v.mp4", num_frames=48, size=(90, 160), fps=8)
    r = retake("ask", video, "What moves?", "--model", cli_model, "--max-long-side", "112",
               "--chunk-frames", "4", "--max-new-tokens", "4", "--json")
    res = json.loads(r.stdout)
    for key in ("answer", "frames", "sampling_fps", "video_tokens", "text_tokens", "kv_tokens_per_layer",
                "prefill_seconds", "peak_memory_bytes"):
        assert key in res
    assert res["frames"] == 12 and res["sampling_fps"] == pytest.approx(2.0)
    assert res["video_tokens"] == 6 * 2 * 4  # 6 grid steps x (56/28 x 112/28) merged tokens
    assert res["kv_tokens_per_layer"] == [res["video_tokens"] + res["text_tokens"]] * 4
    assert res["peak_memory_bytes"] > 0 and res["prefill_seconds"] > 0
    plain = retake_here(capsys, "ask", video, "What moves?", "--model", cli_model, "--max-long-side", "112",
                        "--chunk-frames", "4", "--max-new-tokens", "4")
    assert plain.stdout.rstrip("\n") == res["answer"]


def test_ask_errors_name_the_problem(cli_model, tmp_path, capsys):
    r = retake_here(capsys, "ask", tmp_path / "nope.mp4", "q", "--model", cli_model, check=False)
    assert r.returncode == 2 and "nope.mp4" in r.stderr and "file not found" in r.stderr
    video = write_test_video(tmp_path / "v.mp4", num_frames=8)
    r = retake_here(capsys, "ask", video, "q", "--model", cli_model, "--method", "magic", check=False)
    assert r.returncode == 2 and "valid choices" in r.stderr and "none" in r.stderr
    with pytest.raises(SystemExit):  # a choice of the engine's config: argparse names the valid ones
        retake_here(capsys, "ask", video, "q", "--model", cli_model, "--question-mode", "blind", check=False)
    assert re.search(r"invalid choice.*aware.*unknown", capsys.readouterr().err)
    with pytest.raises(SystemExit):  # argparse: an unknown architecture, its choices on stderr
        retake_here(capsys, "tiny-model", "--arch", "gpt2", tmp_path / "x", check=False)
    assert "qwen2_vl" in capsys.readouterr().err


def test_model_paths_that_are_no_checkpoint_say_what_is_missing(cli_model, tmp_path, capsys):
    """A typo'd path, an empty folder, a folder without weights or tokenizer: one line naming
    the problem, exit code 2, no traceback; an unreachable hub id says it is one."""
    video = write_test_video(tmp_path / "v.mp4", num_frames=8)
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (weights_only / name).write_bytes((cli_model / name).read_bytes())
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((cli_model / "config.json").read_text())
    (tmp_path / "empty").mkdir()
    cases = {
        "/a/typo/path": "no such checkpoint directory: /a/typo/path",
        tmp_path / "empty": "has no config.json (found: it is empty)",
        no_weights: "has a config.json but no weights",
        weights_only: "has no tokenizer",
        video: "is a file, not a checkpoint directory",
        "nobody-here/no-such-model": "as a hub id it failed",
    }
    for model, message in cases.items():
        r = retake_here(capsys, "ask", video, "q", "--model", model, check=False)
        assert r.returncode == 2, (model, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (model, r.stderr)
        assert r.stderr.strip().splitlines()[-1].startswith("retake ask: error:"), r.stderr


def test_ask_with_options_asks_as_the_harness_does(cli_model, tmp_path, capsys):
    """--options letters the options and adds the instruction, exactly format_prompt's prompt;
    the answer is parsed into a letter; a JSON file of options works the same."""
    from retake.harness.samples import Sample, format_prompt, parse_answer

    video = write_test_video(tmp_path / "v.mp4", num_frames=16, size=(56, 84), fps=8)
    common = ["--model", cli_model, "--max-long-side", "84", "--chunk-frames", "4", "--max-new-tokens", "3", "--json"]
    r = retake_here(capsys, "ask", video, "What moves?", "--options", "A. a square", "B. a dot", "C. nothing", *common)
    res = json.loads(r.stdout)
    expected = format_prompt(Sample("x", str(video), "What moves?", ["a square", "a dot", "nothing"], None))
    assert res["prompt"] == expected and "\nA. a square\nB. a dot\nC. nothing\n" in expected
    assert res["parsed"] == parse_answer(res["answer"], "ABC", ["a square", "a dot", "nothing"])
    # letters optional; the same prompt from a JSON file
    (tmp_path / "opts.json").write_text(json.dumps(["a square", "a dot", "nothing"]))
    for given in (["a square", "a dot", "nothing"], [str(tmp_path / "opts.json")]):
        again = json.loads(retake_here(capsys, "ask", video, "What moves?", "--options", *given, *common).stdout)
        assert again["prompt"] == expected and again["answer"] == res["answer"]
    # without options the question is sent as it is
    bare = json.loads(retake_here(capsys, "ask", video, "What moves?", *common).stdout)
    assert "prompt" not in bare and "parsed" not in bare
    r = retake_here(capsys, "ask", video, "q", "--options", "A. x", "y", *common, check=False)
    assert r.returncode == 2 and "every option with its letter" in r.stderr
    r = retake_here(capsys, "ask", video, "q", "--options", "only one", *common, check=False)
    assert r.returncode == 2 and "2..10" in r.stderr


def test_ask_reads_a_cut_off_video_and_warns(cli_model, tmp_path, capsys):
    """An AVI whose header declares 200 frames, cut after about 56: the frames that decode are
    sampled, the --json output says declared / decoded and warns; --strict-frames refuses it."""
    from retake.video import write_test_video as wtv

    full = wtv(tmp_path / "full.avi", num_frames=200, size=(64, 96), fps=8)
    cut = tmp_path / "cut.avi"
    data = open(full, "rb").read()
    cut.write_bytes(data[: len(data) * 4 // 10])
    common = ["--model", cli_model, "--max-long-side", "96", "--chunk-frames", "4", "--max-new-tokens", "2"]
    r = retake_here(capsys, "ask", cut, "What moves?", *common, "--json")
    res = json.loads(r.stdout)
    assert res["declared_frames"] == 200 and 2 <= res["decoded_frames"] < 200
    assert res["warnings"] and "declares 200 frames" in res["warnings"][0]
    assert "warning: " in r.stderr and "declares 200 frames" in r.stderr
    r = retake_here(capsys, "ask", cut, "What moves?", *common, "--strict-frames", check=False)
    assert r.returncode == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr
