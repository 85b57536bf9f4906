"""The engine's two-pass capability (FlexSelect, AdaptToken): the scoring pass runs each group
over the prefix alone, leaks nothing into the answer pass, stops after the layers the method
needs; the answer pass is exactly an ordinary run over the tokens the method kept."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.methods.base import ChunkSpan, Method, VideoPlan, step_groups


@dataclass
class FeedOnly(Method):
    """Feeds the given tokens and compresses nothing: what a two-pass method's answer pass must equal."""

    name = "feed_only"
    uses_guide = False
    observes = False
    keep: torch.Tensor | None = None

    def begin(self, plan: VideoPlan) -> None:
        super().begin(plan)
        plan.input_keep = self.keep.clone()

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers


def budget_for(adapter, sampled, share):
    inputs, prompt = make_inputs(adapter, sampled)
    return inputs, prompt, prompt.num_text_tokens + int(share * inputs.num_tokens)


@pytest.mark.parametrize("name", ["flexselect", "adaptoken"])
def test_answer_pass_equals_an_ordinary_run_over_the_kept_tokens(arch, adapters, sampled, name):
    ad = adapters[arch]
    inputs, prompt, budget = budget_for(ad, sampled, 0.3)
    cfg = EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=3)
    rec = Recorder(get_method(name, group_frames=4))
    out = Engine(ad, cfg).run(inputs, prompt, rec)
    assert len(rec.groups) >= 2 and not rec.input_keep.all()
    # (fast_paths off: the prefix in its own forward, as a two-pass method runs it before scoring)
    ref = Engine(ad, replace(cfg, fast_paths=False)).run(inputs, prompt, FeedOnly(keep=rec.input_keep))
    assert torch.equal(out.first_logits, ref.first_logits) and out.tokens == ref.tokens
    assert out.kv_tokens_per_layer == ref.kv_tokens_per_layer
    # what was fed is the budget: text + round(r N_v) (a step's interleaved text with its tokens)
    assert out.kv_tokens_per_layer[0] <= prompt.num_text_tokens + round(rec.plan.keep_ratio * inputs.num_tokens)


def test_scoring_pass_stops_after_the_reference_layer_and_sees_only_the_prefix(arch, adapters, sampled):
    ad = adapters[arch]
    inputs, prompt, budget = budget_for(ad, sampled, 0.3)
    L = ad.num_layers
    rec = Recorder(get_method("flexselect", group_frames=4, reference_layer=1))
    Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    prefix = prompt.video_start
    for g, views in rec.scoring_views.items():
        assert sorted(views) == [0, 1] and L > 2  # layers after the reference layer are not run
        group = rec.groups[g]
        for v in views.values():
            assert v.cache_len == prefix  # the cache holds the prefix alone: no other group's tokens
            assert v.n == group.num_tokens and v.g == prompt.input_ids.shape[0] - prompt.video_end
            # the group's tokens at their own positions, the guide right after the largest
            assert torch.equal(v.positions[:, : v.n], prompt.position_ids[:, prompt.video_start + group.tokens])
            assert int(v.positions[0, v.n]) == int(v.positions[:, : v.n].max()) + 1
    assert rec.logits and all(x is None for x in rec.logits.values())  # (no logits asked for)


def test_strided_groups_cover_the_video_once():
    from tests_helpers import plan_of

    plan = plan_of(steps=10, per_step=3)
    for strided in (True, False):
        groups = step_groups(plan, 4, strided=strided)
        assert len(groups) == 3
        tokens = torch.cat([g.tokens for g in groups]).sort().values
        assert torch.equal(tokens, torch.arange(30))
    strided = step_groups(plan, 4, strided=True)
    assert strided[1].tokens.tolist() == [3, 4, 5, 12, 13, 14, 21, 22, 23]  # steps 1, 4, 7
    assert step_groups(plan, 4)[2].tokens.tolist() == list(range(24, 30))  # steps 8, 9


def test_flexselect_groups_are_64_grid_steps_on_every_family():
    """The authors' ``compress_vision_embeddings`` groups at most 64 of their "frames", each one
    grid step's tokens (``tokens_per_frame = h w / 4`` on Qwen2.5-VL): 64 steps whether a step is
    two frames (Qwen) or one (LLaVA-OneVision). ``group_frames`` given: frames, so steps differ."""
    from tests_helpers import plan_of

    plan = plan_of(steps=130, per_step=1)
    m = get_method("flexselect")
    for frames_per_step, groups_of_32_frames in ((2, 9), (1, 5)):
        plan.frames_per_step = frames_per_step
        groups = m.scoring_groups(plan)
        assert len(groups) == 3 and [g.num_tokens for g in groups] == [44, 43, 43]  # ceil(130 / 64), strided
        assert groups[0].tokens[:3].tolist() == [0, 3, 6]
        assert len(get_method("flexselect", group_frames=32).scoring_groups(plan)) == groups_of_32_frames
    with pytest.raises(ValueError):
        get_method("flexselect", group_frames=0)
