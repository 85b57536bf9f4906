"""The needle benchmark generator (retake.needle): seeded, balanced, the needles where the
annotation says, real encoded videos that the harness's `needle` dataset loads."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import torch

from retake.harness.datasets import get_dataset
from retake.needle import COLOURS, OPTIONS, QUESTION_TYPES, NeedleConfig, make_sample, write_benchmark
from retake.video import load_video


def colour_mask(frames: np.ndarray, colour: str, tol: int = 12) -> np.ndarray:
    """[T, H, W] pixels within ``tol`` of the needle colour."""
    return (np.abs(frames.astype(int) - np.array(COLOURS[colour])).max(-1) <= tol)


def test_seeded_and_distinct():
    a, b = make_sample(5, seed=3), make_sample(5, seed=3)
    assert np.array_equal(a.frames, b.frames) and a.needles == b.needles and a.answer == b.answer
    assert not np.array_equal(make_sample(5, seed=4).frames, a.frames)
    assert not np.array_equal(make_sample(9, seed=3).frames, a.frames)  # same type, next sample


def test_answers_balanced_per_type():
    samples = [make_sample(i, seed=2) for i in range(64)]
    for qtype in QUESTION_TYPES:
        answers = Counter(s.answer for s in samples if s.question_type == qtype)
        assert answers == {"A": 4, "B": 4, "C": 4, "D": 4}, (qtype, answers)
    assert all(s.options == OPTIONS[s.question_type] for s in samples)


@pytest.mark.parametrize("i", range(16))
def test_needles_are_where_the_answer_says(i):
    cfg = NeedleConfig()
    s = make_sample(i, seed=0, cfg=cfg)
    letter = "ABCD".index(s.answer)
    steps = {start for start, _ in s.needles}
    assert all(start % 2 == 0 for start in steps)  # whole grid steps
    for start, colour in s.needles:  # each needle: a full square of its colour, only in its frames
        mask = colour_mask(s.frames, colour)
        inside = mask[start : start + cfg.needle_frames].sum(axis=(1, 2))
        assert (inside >= 0.8 * cfg.needle_side ** 2).all()
    flashing = {t for t in range(cfg.num_frames) if any(colour_mask(s.frames[t : t + 1], c).sum() > 50 for c in COLOURS)}
    assert flashing == {t for start in steps for t in range(start, start + cfg.needle_frames)}
    if s.question_type == "colour":
        assert s.needles[0][1] == OPTIONS["colour"][letter]
    elif s.question_type == "order":
        (t1, c1), (t2, c2) = s.needles
        assert t1 < t2 and c1 != c2 and c1 == OPTIONS["order"][letter]
    elif s.question_type == "count":
        assert len(s.needles) == letter + 1 and len({c for _, c in s.needles}) == 1
    else:
        q = cfg.num_frames // 4
        assert letter * q < s.needles[0][0] and s.needles[0][0] + cfg.needle_frames < (letter + 1) * q


def test_every_type_has_the_same_prompt_length():
    """One max_context gives every question type the same keep ratio (byte-level tokens)."""
    from retake.harness.samples import Sample, format_prompt

    lengths = {len(format_prompt(Sample("u", "v", s.question, s.options, s.answer)).encode())
               for s in (make_sample(i) for i in range(4))}
    assert len(lengths) == 1


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="num_frames"):
        NeedleConfig(num_frames=30)
    with pytest.raises(ValueError, match="needle_side"):
        NeedleConfig(needle_side=100)
    with pytest.raises(ValueError, match="num_samples"):
        write_benchmark("/tmp/never", 0)


def test_written_benchmark_loads_and_decodes(tmp_path):
    cfg = NeedleConfig(num_frames=32)
    root = write_benchmark(str(tmp_path / "needle"), 4, seed=1, cfg=cfg)
    samples = get_dataset("needle").load(root)
    assert [s.meta["question_type"] for s in samples] == list(QUESTION_TYPES)
    assert json.load(open(os.path.join(root, "needle_config.json")))["num_frames"] == 32
    s = samples[0]
    video = load_video(s.video, fps=2.0, max_frames=64, max_long_side=56)
    assert video.num_frames == 32 and tuple(video.frames.shape[-2:]) == (56, 56)
    original = torch.from_numpy(make_sample(0, seed=1, cfg=cfg).frames).permute(0, 3, 1, 2).float()
    assert float((video.frames.float() - original).abs().mean()) < 2.0  # near-lossless encoding
    start, colour = s.meta["needles"][0]
    decoded = video.frames.permute(0, 2, 3, 1).numpy()
    assert colour_mask(decoded[start : start + 2], colour, tol=30).sum() >= 0.8 * 2 * cfg.needle_side ** 2


def test_the_former_module_names_still_work(tmp_path):
    """``retake.synthetic`` (the needle benchmark's former name) is ``retake.needle``: the same
    objects and the same command line; ``retake.harness.synthetic_data`` is
    ``retake.harness.benchmarks.synthetic``."""
    import subprocess
    import sys

    import retake.needle
    import retake.synthetic
    from retake.harness import synthetic_data
    from retake.harness.benchmarks import synthetic

    assert all(getattr(retake.synthetic, n) is getattr(retake.needle, n) for n in retake.needle.__all__)
    assert synthetic_data.write_synthetic_benchmark is synthetic.write_synthetic_benchmark
    out = tmp_path / "needle"
    r = subprocess.run([sys.executable, "-m", "retake.synthetic", "--out", str(out), "--num-samples", "2",
                        "--num-frames", "16", "--size", "64"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"wrote 2 samples to {out}/samples.jsonl" in r.stdout, r.stderr[-2000:]
    assert [s.uid for s in get_dataset("needle").load(str(out))] == ["needle-1-00000", "needle-1-00001"]
    r = subprocess.run([sys.executable, "-m", "retake.harness.synthetic_data", "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "--formats" in r.stdout
