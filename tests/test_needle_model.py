"""The committed needle model (checkpoints/needle_qwen2_5_vl): it loads through the real
loader, and replays its recorded held-out answers (reference_answers.json, written by
scripts/train_synthetic.py) uncompressed and compressed, so the figures in
docs/synthetic.md stay true of the checkpoint in the tree."""

from __future__ import annotations

import json
import os

import pytest

from conftest import load_script
from retake.synthetic import write_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "checkpoints", "needle_qwen2_5_vl")

pytestmark = pytest.mark.xdist_group("needle_model")


def trainer():
    return load_script("train_synthetic")


def test_checkpoint_is_small_and_documented():
    size = sum(os.path.getsize(os.path.join(MODEL, f)) for f in os.listdir(MODEL))
    assert size <= 20 * 2**20
    log = json.load(open(os.path.join(MODEL, "train_log.json")))
    held_out = log["held_out"]
    assert held_out["num_samples"] >= 100 and held_out["accuracy"] >= 95.0  # chance is 25 %
    assert log["train_seconds"] <= 60 * 60
    # docs/synthetic.md quotes this checkpoint's own figures
    doc = open(os.path.join(ROOT, "docs", "synthetic.md")).read()
    assert f"{held_out['accuracy']:.1f} %" in doc and f"{log['train_seconds'] / 60:.1f} min" in doc


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    t = trainer()
    return t, write_benchmark(str(tmp_path_factory.mktemp("needle") / "needle"), t.REFERENCE_SAMPLES, seed=1)


@pytest.mark.parametrize("method", ["none", "adaretake", "uniform"])
def test_replays_its_recorded_answers(held_out, method):
    t, root = held_out
    ref = json.load(open(os.path.join(MODEL, "reference_answers.json")))["results"][method]
    res = t.evaluate(MODEL, root, method, t.REFERENCE_METHODS[method], limit=t.REFERENCE_SAMPLES)
    assert res["max_context"] == ref["max_context"]
    same = sum(a == b for a, b in zip(res["answers"], ref["answers"]))
    assert same >= len(ref["answers"]) - 1, (res["answers"], ref["answers"])  # one float-rounding flip at most
    assert abs(res["accuracy"] - ref["accuracy"]) <= 100 / len(ref["answers"]) + 1e-9
