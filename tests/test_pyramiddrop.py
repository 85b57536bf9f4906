"""PyramidDrop (docs/methods.md): equal layer stages, stage s keeps lam**s of stage 0's count,
nested sets, mean over layers r * n."""

from __future__ import annotations

import pytest

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.allocation import pyramiddrop_counts, stage_starts


def run(adapter, sampled, method, share=0.3, max_context=None):
    inputs, prompt = make_inputs(adapter, sampled)
    budget = max_context or prompt.num_text_tokens + int(share * inputs.num_tokens)
    rec = Recorder(method)
    out = Engine(adapter, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=4)).run(inputs, prompt, rec)
    return rec, out


def test_stage_starts():
    assert stage_starts(32, 4) == [0, 8, 16, 24]  # PyramidDrop's layers 8, 16, 24 on LLaVA-1.5
    assert stage_starts(28, 4) == [0, 7, 14, 21]
    assert stage_starts(4, 4) == [0, 1, 2, 3]
    assert stage_starts(30, 4) == [0, 7, 15, 22]
    with pytest.raises(ValueError, match=r"stages must be in \[1, 4\]"):
        stage_starts(4, 5)


def test_counts_follow_lambda():
    # 28 layers, 4 stages of 7: mean weight (1 + .5 + .25 + .125) / 4 = 0.46875, so
    # c_0 = 0.1 * 1000 / 0.46875 = 213.33 and c_s = c_0 * 0.5**s, rounded half-up
    assert pyramiddrop_counts(28, 4, 0.5, 0.1, 1000).tolist() == [213, 107, 53, 27]
    # lam = 0.25: mean weight (1 + 1/4 + 1/16 + 1/64) / 4 = 0.33203125; c_0 = 150.59
    assert pyramiddrop_counts(28, 4, 0.25, 0.05, 1000).tolist() == [151, 38, 9, 2]
    assert pyramiddrop_counts(28, 4, 1.0, 0.3, 1000).tolist() == [300] * 4  # lam = 1: even
    for r in (0.01, 0.1, 0.3, 0.6, 0.95):
        c = pyramiddrop_counts(28, 4, 0.5, r, 200)
        assert c.tolist() == sorted(c.tolist(), reverse=True) and int(c.min()) >= 1 and int(c.max()) <= 200
        assert float(c.double().mean()) == pytest.approx(r * 200, abs=0.5)  # 4 equal stages
    # stage 0 would exceed n (r > 0.46875): it keeps n, the later stages take the rest
    c = pyramiddrop_counts(28, 4, 0.5, 0.6, 200)
    assert c[0] == 200 and c[1] < 200 and float(c.double().mean()) == pytest.approx(120, abs=0.5)


@pytest.mark.parametrize("stages,lam", [(4, 0.5), (2, 0.5), (4, 0.7)])
def test_nested_stage_sets_in_engine(arch, adapters, sampled, stages, lam):
    rec, out = run(adapters[arch], sampled, get_method("pyramiddrop", stages=stages, lam=lam))
    L, r = rec.plan.num_layers, rec.plan.keep_ratio
    starts = stage_starts(L, stages) + [L]
    assert len(rec.selected) >= 3
    for c, sel in rec.selected.items():
        n = rec.views[c][0].n
        counts = pyramiddrop_counts(L, stages, lam, r, n)
        prev = set(range(n))
        for s in range(stages):
            a, b = starts[s], starts[s + 1]
            stage_set = sel[a].tolist()
            assert all(sel[l].tolist() == stage_set for l in range(a, b)), "layers of a stage share one set"
            assert len(stage_set) == int(counts[s])
            assert set(stage_set) <= prev, f"chunk {c}: stage {s} is not inside stage {s - 1}"
            prev = set(stage_set)
        assert len(sel[-1]) < len(sel[0])  # the pyramid drops tokens
        mean = sum(len(k) for k in sel) / L
        assert mean == pytest.approx(r * n, abs=0.5 + 1e-9)
    # whole run: within half a token per chunk of the budget r * N_v
    kept = out.kept_video_tokens_per_layer
    assert sum(kept) / L == pytest.approx(r * out.video_tokens, abs=0.5 * len(rec.selected))


def test_bad_parameters(adapters, sampled):
    with pytest.raises(ValueError, match=r"stages must be >= 1"):
        get_method("pyramiddrop", stages=0)
    for lam in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"lam must be in \(0, 1\]"):
            get_method("pyramiddrop", lam=lam)
    with pytest.raises(ValueError, match=r"stages must be in \[1, 4\] for a 4-layer model"):
        run(adapters["qwen2_vl"], sampled, get_method("pyramiddrop", stages=5))
