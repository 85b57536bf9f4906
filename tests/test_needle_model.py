"""The committed needle models (checkpoints/needle_qwen2_5_vl, and the hybrid
checkpoints/needle_qwen3_5 on its 64 px videos): they load through the real loader, and replay
their recorded held-out answers (reference_answers.json, written by scripts/train_synthetic.py)
uncompressed and compressed, so the figures in docs/synthetic.md stay true of the checkpoints in
the tree."""

from __future__ import annotations

import json
import os

import pytest

from conftest import load_script
from retake.needle import NeedleConfig, write_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# checkpoint -> (its needle videos' side, the most minutes its training may have taken: the
# hybrid's torch linear-attention kernels made its 1300 steps slower than the first's 2600)
MODELS = {"needle_qwen2_5_vl": (56, 60), "needle_qwen3_5": (64, 75)}

pytestmark = pytest.mark.xdist_group("needle_model")


def trainer():
    return load_script("train_synthetic")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_is_small_and_documented(name):
    model = os.path.join(ROOT, "checkpoints", name)
    size = sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model))
    assert size <= 20 * 2**20
    log = json.load(open(os.path.join(model, "train_log.json")))
    held_out = log["held_out"]
    assert held_out["num_samples"] >= 100 and held_out["accuracy"] >= 95.0  # chance is 25 %
    assert log["train_seconds"] <= MODELS[name][1] * 60
    # docs/synthetic.md quotes this checkpoint's own figures
    doc = open(os.path.join(ROOT, "docs", "synthetic.md")).read()
    assert f"{held_out['accuracy']:.1f} %" in doc and f"{log['train_seconds'] / 60:.1f} min" in doc


@pytest.fixture(scope="module", params=sorted(MODELS))
def held_out(tmp_path_factory, request):
    t, name = trainer(), request.param
    cfg = NeedleConfig(size=MODELS[name][0])
    root = write_benchmark(str(tmp_path_factory.mktemp("needle") / "needle"), t.REFERENCE_SAMPLES, seed=1, cfg=cfg)
    return t, root, os.path.join(ROOT, "checkpoints", name)


@pytest.mark.parametrize("method", ["none", "adaretake", "uniform"])
def test_replays_its_recorded_answers(held_out, method):
    t, root, model = held_out
    ref = json.load(open(os.path.join(model, "reference_answers.json")))["results"][method]
    res = t.evaluate(model, root, method, t.REFERENCE_METHODS[method], limit=t.REFERENCE_SAMPLES)
    assert res["max_context"] == ref["max_context"]
    same = sum(a == b for a, b in zip(res["answers"], ref["answers"]))
    assert same >= len(ref["answers"]) - 1, (res["answers"], ref["answers"])  # one float-rounding flip at most
    assert abs(res["accuracy"] - ref["accuracy"]) <= 100 / len(ref["answers"]) + 1e-9
