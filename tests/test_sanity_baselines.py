"""The sanity baselines the benchmark studies found strong: ``random`` (seeded, per chunk) and
``downsample`` (every frame, fewer tokens each: resized frames, or pooled tokens)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.allocation import input_budget
from retake.methods.downsample import fit_long_side, pool_window, pooled_tokens
from retake.pipeline import SamplingConfig, answer_question
from retake.video import load_video, target_size, write_test_video
from tests_helpers import plan_of


def test_random_is_seeded_per_chunk_and_meets_the_budget():
    plan = plan_of(steps=8, per_step=6, r=0.25, steps_per_chunk=2)
    picks = []
    for seed in (0, 0, 1):
        p = plan_of(steps=8, per_step=6, r=0.25, steps_per_chunk=2)
        get_method("random", seed=seed).begin(p)
        picks.append(p.input_keep)
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])
    keep = picks[0]
    assert int(keep.sum()) == input_budget(plan) == 12
    per_chunk = [int(keep[c.token_start : c.token_end].sum()) for c in plan.chunks]
    assert per_chunk == [3, 3, 3, 3]  # the budget shared by the chunks' sizes


def test_pool_window_and_means_by_hand():
    assert pool_window(4, 6, steps=2, budget=48) == 1
    assert pool_window(4, 6, steps=2, budget=12) == 2  # 2 x 2 x 3
    assert pool_window(4, 6, steps=2, budget=11) == 3  # 2 x 2 x 2
    f = torch.arange(2 * 4 * 6, dtype=torch.float32)[:, None].repeat(1, 3)  # token value = its offset
    plan = plan_of(steps=2, per_step=24, features=f, token_grid=(4, 6))
    keep, index, means = pooled_tokens(plan, 3)
    # windows of step 0: rows 0-2 x cols 0-2, rows 0-2 x cols 3-5, row 3 x cols 0-2, row 3 x cols 3-5
    assert index.tolist() == [0, 3, 18, 21, 24, 27, 42, 45]
    rows = lambda r0, r1, c0, c1: [r * 6 + c for r in range(r0, r1) for c in range(c0, c1)]  # noqa: E731
    expected = [sum(rows(0, 3, 0, 3)) / 9, sum(rows(0, 3, 3, 6)) / 9, sum(rows(3, 4, 0, 3)) / 3, sum(rows(3, 4, 3, 6)) / 3]
    assert means[:4, 0].tolist() == pytest.approx(expected)
    assert keep.sum() == 8


def test_pool_mode_feeds_every_frame_with_window_means(arch, adapters, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    # (Qwen3-VL's timestamps outnumber these tiny frames' tokens: hold at least one token per frame)
    text_per_step = inputs.max_step_tokens - inputs.tokens_per_step
    budget = prompt.num_text_tokens + max(int(0.3 * inputs.num_tokens), inputs.num_steps * (text_per_step + 1))
    m = get_method("downsample", mode="pool")
    out = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, m)
    plan = m.plan
    assert m.window > 1 and out.kv_tokens_per_layer[0] <= budget
    grid = plan.grid_index()
    fed = plan.input_keep[grid]  # [T, P]
    assert fed.any(dim=1).all()  # every frame is there
    index, means = plan.input_updates
    assert torch.equal(index, grid[fed])  # each fed grid token is a window's mean
    rows, cols = plan.token_grid
    t0 = plan.features[grid[0]].reshape(rows, cols, -1).float()
    assert torch.allclose(means[0].float(), t0[: m.window, : m.window].reshape(-1, t0.shape[-1]).mean(0), atol=1e-6)


def test_fit_long_side_by_hand():
    # 16:9 at 448 -> 448 x 252: 16 x 9 = 144 tokens per step; at 224 -> 224 x 112 (rounded): 8 x 4
    assert target_size(720, 1280, 448, 28) == (252, 448)
    assert fit_long_side(720, 1280, 448, 28, steps=10, step_text=0, room=1440) == 448
    assert fit_long_side(720, 1280, 448, 28, steps=10, step_text=0, room=1439) < 448
    side = fit_long_side(720, 1280, 448, 28, steps=10, step_text=0, room=400)
    h, w = target_size(720, 1280, side, 28)
    assert 10 * (h // 28) * (w // 28) <= 400
    h2, w2 = target_size(720, 1280, side + 28, 28)
    assert 10 * (h2 // 28) * (w2 // 28) > 400  # the largest that fits


@pytest.mark.parametrize("arch_name", ["qwen2_5_vl", "llava_onevision"])
def test_resize_mode_keeps_every_frame(adapters, tmp_path, arch_name):
    """Qwen: the frames are sampled again smaller, all of them, and fit the budget without any
    pooling; LLaVA-OneVision encodes every frame at its fixed size, so its tokens are pooled."""
    ad = adapters[arch_name]
    clip = write_test_video(tmp_path / "wide.mp4", num_frames=64, size=(180, 320), fps=8)
    sampling = SamplingConfig(fps=2.0, max_frames=16, max_long_side=224)
    full = load_video(clip, fps=2.0, max_frames=16, max_long_side=224)
    inputs, prompt = make_inputs(ad, full)
    budget = prompt.num_text_tokens + int(0.3 * inputs.num_tokens)
    m = get_method("downsample")
    res = answer_question(ad, clip, "What happens in the video? Answer briefly.", m, sampling,
                          EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1))
    assert res["frames"] == full.num_frames  # every frame
    assert sum(res["kv_tokens_per_layer"]) / len(res["kv_tokens_per_layer"]) <= budget
    assert res["full_video_tokens"] == inputs.num_tokens and res["achieved_keep_ratio"] < 0.5
    if ad.tokens_follow_resolution:
        assert max(res["frame_size"]) < 224 and m.window == 1  # resized, nothing left to pool
    else:
        assert m.window > 1


def test_a_new_method_refits_the_input_through_the_hook_alone(adapters, tmp_path):
    """A method outside the package that asks for fewer, smaller frames (``fit_input``) gets
    them: the pipeline knows the hook, not the methods (tests/test_imports.py)."""
    from dataclasses import dataclass

    from retake.methods.base import Method, Refit

    seen = []

    @dataclass
    class HalfAndSmall(Method):
        name = "half_and_small"
        uses_guide = False
        question_aware = False
        observes = False

        def fit_input(self, fit):
            seen.append(fit)
            return Refit(max_frames=fit.num_frames // 2, max_long_side=112)

        def select(self, chunk):
            return [None] * self.plan.num_layers

    ad = adapters["qwen2_5_vl"]
    clip = write_test_video(tmp_path / "wide.mp4", num_frames=64, size=(180, 320), fps=8)
    res = answer_question(ad, clip, "What happens?", HalfAndSmall(), SamplingConfig(fps=2.0, max_frames=16, max_long_side=224),
                          EngineConfig(chunk_frames=4, max_new_tokens=1))
    full = load_video(clip, fps=2.0, max_frames=16, max_long_side=224)
    assert len(seen) == 1 and seen[0].num_frames == full.num_frames and seen[0].max_long_side == 224
    assert res["frames"] == full.num_frames // 2 and max(res["frame_size"]) <= 112
    assert res["full_video_tokens"] == seen[0].num_steps * seen[0].tokens_per_step
