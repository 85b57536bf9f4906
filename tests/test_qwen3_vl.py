"""Qwen3-VL: the timestamped video prompt, its M-RoPE ids, DeepStack, and the engine's
exactness against the unmodified model (the arch-parametrized tests run on it too)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from conftest import make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import Method, get_method
from retake.methods.base import VideoPlan
from retake.models.base import VideoFeatures
from retake.models.qwen3_vl import Qwen3VLAdapter, qwen3_position_ids, step_times, timestamp_text
from retake.video import load_video

QUESTION = "What happens in the video? Answer briefly."


@pytest.fixture(scope="module")
def q3(adapters):
    return adapters["qwen3_vl"]


@pytest.fixture(scope="module")
def q3_outer(q3):
    """The same model with transformers >= 5.10's prompt layout (outer vision tokens kept)."""
    return Qwen3VLAdapter(q3.model, q3.tokenizer, q3.pp, q3.chat_template, outer_vision_tokens=True)


@pytest.fixture(scope="module")
def plain(tiny_dirs):
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(
        tiny_dirs["qwen3_vl"], dtype=torch.float32, attn_implementation="sdpa").eval()


@torch.no_grad()
def plain_logits(model, ad, inputs, prompt, extra_tokens=()):
    """One ordinary forward of the unmodified model over the processor-equivalent inputs."""
    ids = torch.cat([prompt.input_ids, torch.tensor(list(extra_tokens), dtype=torch.long)])
    pos = prompt.position_ids
    if extra_tokens:
        nxt = int(pos.max()) + 1
        pos = torch.cat([pos, torch.arange(nxt, nxt + len(extra_tokens)).expand(3, -1)], dim=1)
    out = model(input_ids=ids[None], pixel_values_videos=inputs.pixel_values, video_grid_thw=torch.tensor([inputs.grid_thw]),
                position_ids=pos[:, None], mm_token_type_ids=(ids == ad.video_token_id).long()[None] * 2)
    return out.logits[0, -1]


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def hf_processor():
    """transformers' Qwen3VLProcessor, only for its prompt expansion (building it whole needs
    torchvision for the image and video processors)."""
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    proc = Qwen3VLProcessor.__new__(Qwen3VLProcessor)
    proc.video_processor = Qwen3VLVideoProcessor()
    proc.vision_start_token, proc.vision_end_token, proc.video_token = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"
    return proc


# -- prompt ------------------------------------------------------------------------------------

def test_step_timestamps_as_the_processor_computes_them():
    proc = hf_processor()
    idx = [0, 6, 13, 19, 25, 32]
    assert step_times([i / 8 for i in idx], 2) == pytest.approx(proc._calculate_timestamps(idx, 8.0, 2))
    assert step_times([0.0, 1.0, 2.0], 2) == [0.5, 2.0]  # an odd last frame is repeated
    assert [timestamp_text(t) for t in (0.375, 2.0, 61.25)] == ["<0.4 seconds>", "<2.0 seconds>", "<61.2 seconds>"]


def test_prompt_equals_processor_expansion(q3, q3_outer, sampled):
    """Per grid step ``<t seconds><|vision_start|>`` + its tokens + ``<|vision_end|>``, exactly
    what transformers' Qwen3VLProcessor.replace_video_token writes for the same frame indices,
    video fps and grid; transformers 5.23 puts it in place of ``<|video_pad|>`` (outer pair
    kept), Qwen's own processor in place of the whole wrapped placeholder (our default)."""
    from transformers.video_utils import VideoMetadata

    inputs, prompt = make_inputs(q3, sampled)
    meta = VideoMetadata(total_num_frames=sampled.total_frames, fps=sampled.video_fps,
                         frames_indices=list(sampled.frame_indices), height=64, width=64)
    expansion = hf_processor().replace_video_token(
        {"video_grid_thw": torch.tensor([inputs.grid_thw]), "video_metadata": [meta]}, 0)
    assert expansion.count("seconds>") == inputs.num_steps == sampled.num_frames // 2
    chat = q3.chat_text(QUESTION)
    assert chat.count("<|vision_start|><|video_pad|><|vision_end|>") == 1
    tok = q3.tokenizer
    for ad, text in ((q3, chat.replace("<|vision_start|><|video_pad|><|vision_end|>", expansion)),
                     (q3_outer, chat.replace("<|video_pad|>", expansion))):
        p = ad.build_prompt(QUESTION, ad.prepare_video(sampled.frames, sampled.sampling_fps, sampled.timestamps))
        assert tok.decode(p.input_ids.tolist(), skip_special_tokens=False) == text
        assert p.input_ids.tolist() == tok(text, add_special_tokens=False)["input_ids"]
        assert torch.equal(p.input_ids[p.video_start : p.video_end], inputs.span_ids)
    assert prompt.num_text_tokens + 2 == q3_outer.build_prompt(QUESTION, inputs).num_text_tokens
    # the span: step s starts at its timestamp; visual_mask marks tokens_per_step grid tokens per step
    off, span = inputs.step_token_offsets, inputs.span_ids
    for s in range(inputs.num_steps):
        step = span[off[s] : off[s + 1]]
        assert tok.decode(step[: step.shape[0] - inputs.tokens_per_step - 2].tolist()).startswith("<")
        assert int(inputs.visual_mask[off[s] : off[s + 1]].sum()) == inputs.tokens_per_step
    assert inputs.max_step_tokens == max(off[s + 1] - off[s] for s in range(inputs.num_steps)) > inputs.tokens_per_step


def test_no_default_system_prompt(q3):
    assert not q3.chat_text("q").startswith("<|im_start|>system")
    assert q3.chat_text("q", system_prompt="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


# -- positions ---------------------------------------------------------------------------------

def test_qwen3_rule_by_hand():
    # 2 text, a 2x3 grid step, 2 text (end + next timestamp), a 2x3 grid step, 1 text
    visual = torch.tensor([0, 0] + [1] * 6 + [0, 0] + [1] * 6 + [0], dtype=torch.bool)
    pos = qwen3_position_ids(visual, 2, 3)
    assert pos[:, :2].tolist() == [[0, 1]] * 3
    assert pos[:, 2:8].tolist() == [[2] * 6, [2, 2, 2, 3, 3, 3], [2, 3, 4, 2, 3, 4]]
    assert pos[:, 8:10].tolist() == [[5, 6]] * 3  # resumes at start + max(h, w) = max id + 1
    assert pos[0, 10:16].tolist() == [7] * 6 and pos[2, 10:16].tolist() == [7, 8, 9, 7, 8, 9]
    assert pos[:, 16].tolist() == [10] * 3


@pytest.mark.parametrize("outer", [False, True])
def test_positions_equal_transformers_get_rope_index(q3, q3_outer, sampled, outer):
    """Unlike Qwen2-VL, transformers 5.23's rule for Qwen3-VL is the model's own: each step is
    its own one-frame grid, and text after a step resumes at max id + 1. Equal everywhere."""
    ad = q3_outer if outer else q3
    inputs = ad.prepare_video(sampled.frames, sampled.sampling_fps, sampled.timestamps)
    prompt = ad.build_prompt(QUESTION, inputs)
    ids = prompt.input_ids[None]
    hf, delta = ad.model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == ad.video_token_id).long() * 2, video_grid_thw=torch.tensor([inputs.grid_thw]))
    assert torch.equal(prompt.position_ids, hf[:, 0])
    # decoding continues at max + 1, as the model's rope delta says
    assert int(prompt.position_ids.max()) + 1 == ids.shape[1] + int(delta)


# -- exactness ---------------------------------------------------------------------------------

@pytest.mark.parametrize("outer", [False, True])
@pytest.mark.parametrize("chunk_frames", [2, 6, 64])
def test_chunked_prefill_equals_plain_forward(q3, q3_outer, plain, sampled, outer, chunk_frames):
    ad = q3_outer if outer else q3
    inputs = ad.prepare_video(sampled.frames, sampled.sampling_fps, sampled.timestamps)
    prompt = ad.build_prompt(QUESTION, inputs)
    out = Engine(ad, EngineConfig(chunk_frames=chunk_frames, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    assert rel_err(out.first_logits, plain_logits(plain, ad, inputs, prompt)) <= 1e-5
    assert out.kv_tokens_per_layer == [prompt.input_ids.shape[0]] * ad.num_layers


def test_greedy_answer_equals_plain_model(q3, plain, sampled):
    inputs, prompt = make_inputs(q3, sampled)
    out = Engine(q3, EngineConfig(chunk_frames=4, max_new_tokens=6)).run(inputs, prompt, get_method("none"))
    toks = []
    for _ in range(6):
        toks.append(int(plain_logits(plain, q3, inputs, prompt, toks).argmax()))
        if toks[-1] in q3.eos_token_ids:
            break
    assert out.tokens == toks


# -- DeepStack ---------------------------------------------------------------------------------

def test_deepstack_extras(q3, sampled):
    inputs, _ = make_inputs(q3, sampled)
    enc = q3.encode_video(inputs)
    assert isinstance(enc, VideoFeatures)
    deep, vis = enc.extras["deepstack"], enc.extras["visual"]
    n_ds = len(q3.model.config.vision_config.deepstack_visual_indexes)
    assert deep.shape == (inputs.num_tokens, n_ds, enc.embeds.shape[1]) and deep.device.type == "cpu"
    assert torch.equal(vis, inputs.visual_mask)
    assert bool((deep[vis].abs().sum(-1) > 0).all()) and not bool(deep[~vis].any())
    # text tokens of the span carry their own embeddings
    text = ~vis
    assert torch.equal(enc.embeds[text], q3.embed(inputs.span_ids[text])[0])
    # vision in batches of grid steps equals one batch
    one = q3.encode_video(inputs, batch_steps=1)
    assert torch.allclose(one.embeds, enc.embeds, atol=1e-5) and torch.allclose(one.extras["deepstack"], deep, atol=1e-5)


class ZeroDeepStack:
    """The adapter with its DeepStack features zeroed."""

    def __init__(self, ad):
        self.ad = ad

    def __getattr__(self, name):
        return getattr(self.ad, name)

    def encode_video(self, video, batch_steps=16):
        enc = self.ad.encode_video(video, batch_steps)
        return VideoFeatures(enc.embeds, dict(enc.extras, deepstack=torch.zeros_like(enc.extras["deepstack"])))


def test_deepstack_is_applied(q3, plain, sampled):
    """Zeroing the DeepStack extras changes the logits, and gives exactly the unmodified model
    with DeepStack switched off: the path is live and it is the model's own."""
    inputs, prompt = make_inputs(q3, sampled)
    cfg = EngineConfig(chunk_frames=4, max_new_tokens=1)
    with_ds = Engine(q3, cfg).run(inputs, prompt, get_method("none")).first_logits
    without = Engine(ZeroDeepStack(q3), cfg).run(inputs, prompt, get_method("none")).first_logits
    assert rel_err(without, with_ds) > 1e-3
    visual = plain.model.visual
    saved = visual.deepstack_visual_indexes
    visual.deepstack_visual_indexes = []
    try:
        ref = plain_logits(plain, q3, inputs, prompt)
    finally:
        visual.deepstack_visual_indexes = saved
    assert rel_err(without, ref) <= 1e-5


@dataclass
class DropSome(Method):
    """Drops tokens before prefill (plan.input_keep): every third span token, text or visual."""

    name = "test_drop_some"
    uses_guide = True

    def begin(self, plan):
        super().begin(plan)
        keep = torch.ones(plan.num_video_tokens, dtype=torch.bool)
        keep[::3] = False
        plan.input_keep = keep

    def select(self, chunk):
        return [None] * self.plan.num_layers


@torch.no_grad()
def test_input_keep_slices_extras_like_embeddings(q3, plain, sampled):
    """Tokens dropped before prefill take their DeepStack features with them: the engine equals
    one forward of the text model over [prefix ; kept span tokens ; suffix] at their ids, with
    the kept visual tokens' DeepStack features."""
    inputs, prompt = make_inputs(q3, sampled)
    m = DropSome()
    out = Engine(q3, EngineConfig(chunk_frames=4, max_new_tokens=1)).run(inputs, prompt, m)
    keep = m.plan.input_keep
    enc = q3.encode_video(inputs)
    ids, pos, vs, ve = prompt.input_ids, prompt.position_ids, prompt.video_start, prompt.video_end
    x = torch.cat([q3.embed(ids[:vs])[0], enc.embeds[keep], q3.embed(ids[ve:])[0]])[None]
    p = torch.cat([pos[:, :vs], pos[:, vs:ve][:, keep], pos[:, ve:]], dim=1)
    vis = torch.cat([torch.zeros(vs, dtype=torch.bool), inputs.visual_mask[keep], torch.zeros(ids.shape[0] - ve, dtype=torch.bool)])
    deep = enc.extras["deepstack"][keep][inputs.visual_mask[keep]]
    h = plain.model.language_model(inputs_embeds=x, position_ids=p[:, None], visual_pos_masks=vis[None],
                                   deepstack_visual_embeds=list(deep.unbind(1))).last_hidden_state
    ref = plain.lm_head(h[0, -1])
    assert rel_err(out.first_logits, ref) <= 1e-5


# -- preprocessing and plan --------------------------------------------------------------------

def test_preprocessing_matches_transformers(q3):
    """x/255, mean/std 0.5, Qwen's patch order with patch 16, as Qwen3VLVideoProcessor; frames
    sampled for another family (sides multiples of 28) are resized as the loader would for 32."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    frames = torch.randint(0, 256, (4, 3, 64, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = q3.prepare_video(frames, 2.0, [0.0, 0.5, 1.0, 1.5])
    x = ((frames.float() / 255 - 0.5) / 0.5)[None]
    ref, t, h, w = Qwen3VLVideoProcessor().patchify(x, patch_size=16, merge_size=2, temporal_patch_size=2)
    assert inputs.grid_thw == (t, h, w) == (2, 4, 6) and inputs.tokens_per_step == 6
    assert torch.allclose(inputs.pixel_values, ref[0], atol=1e-6)
    assert q3.size_factor == 32
    odd = q3.prepare_video(torch.zeros(2, 3, 56, 84, dtype=torch.uint8), 2.0, [0.0, 0.5])
    assert odd.grid_thw == (1, 4, 4)  # 56 x 84 -> 64 x 64, as load_video(size_factor=32, max_long_side=84)
    with pytest.raises(ValueError, match="timestamps"):
        q3.prepare_video(frames, 2.0, [0.0])


def test_plan_sees_grid_tokens_only(q3, sampled):
    """VideoPlan.grid_index / step_features leave the timestamps out (methods average and
    compare grid tokens); the span's features still cover every token."""
    inputs, prompt = make_inputs(q3, sampled)
    feats = torch.randn(inputs.num_tokens, 8)
    plan = VideoPlan(num_layers=1, chunks=[], keep_ratio=1.0, max_context=10**6, num_video_tokens=inputs.num_tokens,
                     num_text_tokens=prompt.num_text_tokens, tokens_per_step=inputs.tokens_per_step,
                     step_token_offsets=inputs.step_token_offsets, features=feats, visual_mask=inputs.visual_mask)
    grid = plan.grid_index()
    assert grid.shape == (inputs.num_steps, inputs.tokens_per_step)
    assert bool(inputs.visual_mask[grid].all())
    off = inputs.step_token_offsets
    assert all(off[s] <= int(grid[s].min()) and int(grid[s].max()) < off[s + 1] for s in range(inputs.num_steps))
    assert torch.allclose(plan.step_features(), feats[grid].mean(1))


def test_tiny_model_command(tmp_path, sampled):
    from retake.cli import main
    from retake.models import load_adapter

    assert main(["tiny-model", "--arch", "qwen3_vl", str(tmp_path / "q3"), "--seed", "2"]) == 0
    ad = load_adapter(str(tmp_path / "q3"), dtype="float32", device="cpu")
    assert isinstance(ad, Qwen3VLAdapter) and ad.pp.image_mean == (0.5, 0.5, 0.5) and ad.size_factor == 32
    v = load_video(sampled.path, fps=2.0, max_frames=8, max_long_side=84, size_factor=ad.size_factor)
    inputs, prompt = make_inputs(ad, v)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=2)).run(inputs, prompt, get_method("adaretake"))
    assert 1 <= len(out.tokens) <= 2
