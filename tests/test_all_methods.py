"""Every registered method x both tiny architectures x two budgets, through the real
engine: runs end to end, meets the budget, leaves no guide KV, decodes. A new method is
picked up from the registry with no edit here."""

from __future__ import annotations

import pytest

from conftest import make_inputs
from retake.engine import EngineConfig
from retake.methods import METHODS, get_method
from retake.pipeline import SamplingConfig, answer_question
from retake.video import load_video, write_test_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("all") / "clip.mp4", num_frames=192, size=(120, 200), fps=8, seed=7)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("video_share", [0.15, 0.5])
def test_every_method(arch, adapters, clip, name, video_share):
    ad = adapters[arch]
    sampling = SamplingConfig(fps=2.0, max_frames=48, max_long_side=84)
    full = make_inputs(ad, load_video(clip, fps=2.0, max_frames=48, max_long_side=84))
    n_text, n_video = full[1].num_text_tokens, full[0].num_tokens
    budget = n_text + int(video_share * n_video)
    res = answer_question(ad, clip, "What happens in the video? Answer briefly.", get_method(name), sampling,
                          EngineConfig(chunk_frames=8, max_context=budget, max_new_tokens=3))
    kv = res["kv_tokens_per_layer"]
    chunks = -(-res["frames"] // 8)
    if name == "none":  # the one method that ignores the budget by definition
        assert kv == [n_text + n_video] * len(kv)
    else:  # within one token per chunk of rounding
        assert sum(kv) / len(kv) <= budget + chunks
    # the cache holds exactly the kept video tokens and the text: no guide entry is left
    assert kv == [k + res["text_tokens"] for k in res["kept_video_tokens_per_layer"]]
    assert 1 <= res["generated_tokens"] <= 3
