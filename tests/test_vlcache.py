"""VL-Cache (docs/methods.md): layer budgets from attention sparsity, guide-attention scores."""

from __future__ import annotations

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.allocation import proportional_ratios


def test_layer_ratios_hand_examples():
    # nothing clips: s = 0.3 * 4 / 1.5 = 0.8
    r = proportional_ratios(torch.tensor([0.1, 0.2, 0.4, 0.8]), 0.3, 0.01)
    assert r.tolist() == pytest.approx([0.08, 0.16, 0.32, 0.64])
    # two layers clip at 1; the others share the rest in proportion: (2 + 0.003 s) / 4 = 0.6
    r = proportional_ratios(torch.tensor([1.0, 0.5, 0.001, 0.002]), 0.6, 0.01)
    assert r.tolist() == pytest.approx([1.0, 1.0, 2 / 15, 4 / 15])
    # one layer clips up to the floor 0.01: (3 s + 0.01) / 4 = 0.5
    r = proportional_ratios(torch.tensor([1.0, 1.0, 1.0, 0.001]), 0.5, 0.01)
    assert r.tolist() == pytest.approx([1.99 / 3] * 3 + [0.01])
    # a mean below the floor: every layer gets the mean
    assert proportional_ratios(torch.tensor([1.0, 0.1]), 0.005, 0.01).tolist() == pytest.approx([0.005, 0.005])


def test_layer_ratios_invariants():
    torch.manual_seed(0)
    for mean in (0.02, 0.1, 0.4, 0.8):
        density = torch.rand(12) ** 3
        r = proportional_ratios(density, mean, 0.01)
        assert float(r.mean()) == pytest.approx(mean, rel=1e-9)  # renormalised to the total
        assert float(r.min()) >= 0.01 - 1e-12 and float(r.max()) <= 1 + 1e-12  # clipped
        free = (r > 0.01 + 1e-9) & (r < 1 - 1e-9)
        assert torch.allclose(r[free] / density[free].double(), (r[free] / density[free].double())[0])  # ∝ density
        assert (r[density.argsort()].diff() >= -1e-12).all()  # denser layers never get less


def sparsity_from_views(views):
    """Fraction of the visible guide -> (cache, chunk, causal guide) entries below 1 % of their
    row maximum, head-averaged, float64, from the captured q/k."""
    out = []
    for layer in sorted(views):
        v = views[layer]
        nq, nk = v.n + v.g, v.key.shape[1]
        k = v.key.double().repeat_interleave(v.query.shape[0] // v.key.shape[0], 0)
        logits = v.query[:, v.n :].double() @ k.transpose(-1, -2) * v.scaling
        visible = torch.arange(nk)[None, :] <= nk - nq + torch.arange(v.n, nq)[:, None]
        att = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1)
        sparse = (att < 0.01 * att.amax(-1, keepdim=True)) & visible
        out.append(float((sparse.sum((1, 2)) / visible.sum()).mean()))
    return torch.tensor(out, dtype=torch.float64)


def test_budgets_follow_sparsity_in_engine(arch, adapters, sampled):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    r_target = 0.3
    budget = prompt.num_text_tokens + int(r_target * inputs.num_tokens)
    rec = Recorder(get_method("vlcache"))
    Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    m, last = rec.inner, max(rec.selected)
    gamma = sparsity_from_views(rec.views[last])
    assert m.last_sparsity.tolist() == pytest.approx(gamma.tolist(), abs=2e-3)
    assert float(gamma.max() - gamma.min()) > 0.01  # the layers do differ, so the test can fail
    ratios = m.last_ratios
    assert float(ratios.mean()) == pytest.approx(m.plan.keep_ratio, rel=1e-9)
    assert float(ratios.min()) >= 0.01 - 1e-12 and float(ratios.max()) <= 1 + 1e-12
    free = (ratios > 0.01 + 1e-9) & (ratios < 1 - 1e-9)
    per_density = ratios[free] / (1 - m.last_sparsity[free])
    assert torch.allclose(per_density, per_density[0].expand_as(per_density))
    # the kept counts: round(r_l * n), denser layers keep at least as many, total within rounding
    n = rec.views[last][0].n
    counts = torch.tensor([int(s.numel()) for s in rec.selected[last]])
    assert counts.tolist() == torch.floor(ratios * n + 0.5).long().clamp(1, n).tolist()
    order = (1 - m.last_sparsity).argsort()
    assert (counts[order].diff() >= 0).all()
    assert abs(int(counts.sum()) - m.plan.keep_ratio * n * len(counts)) <= len(counts) / 2


def test_bad_parameters_fail_clearly():
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        get_method("vlcache", threshold=0)
    with pytest.raises(ValueError, match=r"min_layer_ratio must be in \(0, 1\]"):
        get_method("vlcache", min_layer_ratio=1.5)
    with pytest.raises(ValueError, match="query_block"):
        get_method("vlcache", query_block=0)
