"""H2O (docs/methods.md): heavy hitters by accumulated attention plus the chunk's recent window."""

from __future__ import annotations

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.base import budget_tokens, topk_sorted
from retake.methods.h2o import with_recent


def test_recent_window_hand_example():
    s = torch.tensor([5.0, 4, 3, 2, 1, 0])
    assert topk_sorted(with_recent(s, 4, 0.5), 4).tolist() == [0, 1, 4, 5]  # 2 heavy + 2 recent
    assert topk_sorted(with_recent(s, 3, 0.5), 3).tolist() == [0, 1, 5]  # floor(1.5) = 1 recent
    assert topk_sorted(with_recent(s, 4, 0.0), 4).tolist() == [0, 1, 2, 3]  # heavy only
    assert topk_sorted(with_recent(s, 4, 1.0), 4).tolist() == [2, 3, 4, 5]  # a sliding window
    assert torch.equal(s, torch.tensor([5.0, 4, 3, 2, 1, 0]))  # the scores are not modified


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_recent_window_is_kept_in_engine(arch, adapters, sampled, share):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    budget = prompt.num_text_tokens + int(0.4 * inputs.num_tokens)
    rec = Recorder(get_method("h2o", recent_share=share))
    Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    r = rec.plan.keep_ratio
    for c, sel in rec.selected.items():
        n = rec.views[c][0].n
        k = budget_tokens(r, n)
        w = int(share * k)
        assert w >= 2
        heads = [row for idx in sel for row in idx]  # every KV head of every layer
        for row in heads:
            assert row.numel() == k  # the same count in every head and layer
            assert set(range(n - w, n)) <= set(row.tolist())  # the chunk's last tokens
        if share == 1.0:  # only the window: every head keeps the chunk's last k tokens
            assert all(row.tolist() == list(range(n - k, n)) for row in heads)
        else:  # the heavy hitters differ between heads and layers, so the scores do select
            assert len({tuple(row.tolist()) for row in heads}) > 1


def test_bad_parameters_fail_clearly():
    with pytest.raises(ValueError, match=r"recent_share must be in \[0, 1\]"):
        get_method("h2o", recent_share=1.5)
    with pytest.raises(ValueError, match="query_block must be >= 1"):
        get_method("h2o", query_block=0)
