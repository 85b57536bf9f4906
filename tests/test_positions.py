"""M-RoPE position ids: Qwen's rule, and where transformers 5.x differs from it."""

from __future__ import annotations

import pytest
import torch

from conftest import make_inputs
from retake.models.qwen2_vl import qwen_position_ids


def test_qwen_rule_by_hand():
    # 2 text tokens, a video of 3 grid steps x (4x4 patches -> 2x2 merged), 2 text tokens
    pos = qwen_position_ids(2, (3, 4, 4), 2, 2, interval=1.0)
    assert pos.shape == (3, 2 + 12 + 2)
    assert pos[:, :2].tolist() == [[0, 1]] * 3
    video = pos[:, 2:14]
    assert video[0].tolist() == [2] * 4 + [3] * 4 + [4] * 4
    assert video[1].tolist() == [2, 2, 3, 3] * 3
    assert video[2].tolist() == [2, 3, 2, 3] * 3
    assert pos[:, 14:].tolist() == [[5, 6]] * 3  # max(video) + 1 = 5


def test_qwen25_temporal_interval():
    # Qwen2.5-VL: interval = tokens_per_second * temporal_patch / fps = 2 * 2 / 2 = 2; at 0.5 fps -> 8
    assert qwen_position_ids(0, (3, 2, 2), 2, 1, interval=2.0)[0].tolist() == [0, 2, 4, 5]
    assert qwen_position_ids(0, (3, 2, 2), 2, 1, interval=8.0)[0].tolist() == [0, 8, 16, 17]
    assert qwen_position_ids(0, (4, 2, 2), 2, 0, interval=1.5)[0].tolist() == [0, 1, 3, 4]  # floor(1.5 s)


def test_adapter_positions_vs_transformers(arch, adapters, sampled):
    """Prefix and video ids equal transformers' get_rope_index; text after the video starts
    at max + 1 (Qwen's rule) where transformers 5.x starts at video_start + max(h, w)."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    if prompt.position_ids.shape[0] == 1:
        pytest.skip("1-D RoPE: consecutive ids (tests/test_llava_onevision.py)")
    if arch == "qwen3_vl":
        pytest.skip("no difference: transformers' rule is Qwen3-VL's own (tests/test_qwen3_vl.py)")
    ids = prompt.input_ids[None]
    kw = {}
    if arch == "qwen2_5_vl":
        kw["second_per_grid_ts"] = torch.tensor([2 / inputs.sampling_fps])
    hf, _ = ad.model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == ad.video_token_id).long() * 2, video_grid_thw=torch.tensor([inputs.grid_thw]), **kw
    )
    hf = hf[:, 0]
    ve, vs = prompt.video_end, prompt.video_start
    assert torch.equal(prompt.position_ids[:, :ve], hf[:, :ve])
    ours_next = int(prompt.position_ids[:, vs:ve].max()) + 1
    assert prompt.position_ids[:, ve:].tolist() == [list(range(ours_next, ours_next + prompt.suffix_len))] * 3
    h, w = inputs.grid_thw[1] // 2, inputs.grid_thw[2] // 2
    assert int(hf[0, ve]) == vs + max(h, w) < ours_next  # the documented difference
