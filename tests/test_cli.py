"""The command line, run as a user runs it (subprocess), on a tiny checkpoint it writes."""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "tiny25"
    out = retake("tiny-model", "--arch", "qwen2_5_vl", d, "--seed", "3").stdout.strip()
    assert out == str(d) and os.path.exists(d / "config.json") and os.path.exists(d / "tokenizer_config.json")
    return d


def test_ask_json(cli_model, tmp_path):
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
    plain = retake("ask", video, "What moves?", "--model", cli_model, "--max-long-side", "112",
                   "--chunk-frames", "4", "--max-new-tokens", "4")
    assert plain.stdout.rstrip("\n") == res["answer"]


def test_ask_errors_name_the_problem(cli_model, tmp_path):
    r = retake("ask", tmp_path / "nope.mp4", "q", "--model", cli_model, check=False)
    assert r.returncode == 2 and "nope.mp4" in r.stderr and "file not found" in r.stderr
    video = write_test_video(tmp_path / "v.mp4", num_frames=8)
    r = retake("ask", video, "q", "--model", cli_model, "--method", "magic", check=False)
    assert r.returncode == 2 and "valid choices" in r.stderr and "none" in r.stderr
    r = retake("tiny-model", "--arch", "gpt2", tmp_path / "x", check=False)
    assert r.returncode != 0 and "qwen2_vl" in r.stderr
