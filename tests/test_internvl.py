"""InternVL3.5 (transformers InternVL, HF-native checkpoints): preprocessing and prompt against
transformers' processor, the engine's exactness against the unmodified model, the tiny
checkpoint on every entry point (the all-methods test runs it through every method).

Not in the suite-wide ``arch`` parametrisation (``retake.tiny.NEW_ARCHS``): this module writes
its own tiny checkpoint."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.models import load_adapter
from retake.models.internvl import INTERNVL_TOKENS, InternVLAdapter, InternVLPreprocessing, frame_label
from retake.tiny import write_tiny_model

QUESTION = "What happens in the video? Answer briefly."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model("internvl", tmp_path_factory.mktemp("internvl") / "tiny", seed=0)


@pytest.fixture(scope="module")
def ad(tiny):
    return load_adapter(tiny, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def plain(tiny):
    from transformers import InternVLForConditionalGeneration

    return InternVLForConditionalGeneration.from_pretrained(tiny, dtype=torch.float32, attn_implementation="sdpa").eval()


@torch.no_grad()
def plain_logits(model, inputs, prompt, extra_tokens=()):
    """One ordinary forward of the unmodified model: the processor's inputs (frames
    ``[T, 3, H, W]`` as ``pixel_values``, ids with the context tokens), default positions."""
    ids = torch.cat([prompt.input_ids, torch.tensor(list(extra_tokens), dtype=torch.long)])
    return model(input_ids=ids[None], pixel_values=inputs.pixel_values).logits[0, -1]


def plain_greedy(model, ad, inputs, prompt, n):
    toks = []
    for _ in range(n):
        t = int(plain_logits(model, inputs, prompt, toks).argmax())
        toks.append(t)
        if t in ad.eos_token_ids:
            break
    return toks


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def hf_processor(tokenizer, image_seq_length):
    """transformers' InternVLProcessor for its prompt expansion, its attributes read from the
    tokenizer as its ``__init__`` reads them (building it whole needs torchvision)."""
    from transformers.models.internvl.processing_internvl import InternVLProcessor

    proc = InternVLProcessor.__new__(InternVLProcessor)
    proc.image_seq_length = image_seq_length
    proc.start_image_token, proc.end_image_token = tokenizer.start_image_token, tokenizer.end_image_token
    proc.image_token, proc.video_token = tokenizer.context_image_token, tokenizer.video_token
    return proc


# -- geometry and preprocessing ----------------------------------------------------------------

def test_real_geometry_gives_256_tokens_per_frame(ad):
    """At InternVL3.5's sizes (448 px, patch 14, pixel shuffle 0.5; a model on the meta device)
    a frame is 32 x 32 patches -> 16 x 16 = 256 grid tokens, a step is its label, <img>, the
    grid and </img>."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    cfg = InternVLConfig(text_config=dict(model_type="qwen3", vocab_size=len(ad.tokenizer), hidden_size=64,
                                          intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                          num_key_value_heads=1, head_dim=32),
                         image_token_id=ad.image_token_id)
    assert cfg.vision_config.image_size == (448, 448) and cfg.image_seq_length == 256
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(cfg)
    big = InternVLAdapter(model, ad.tokenizer, InternVLPreprocessing(image_size=448))
    inputs = big.prepare_video(torch.zeros(2, 3, 252, 448, dtype=torch.uint8), 2.0, [0.0, 0.5])
    assert inputs.pixel_values.shape == (2, 3, 448, 448) and inputs.grid_thw == (2, 32, 32)
    assert inputs.tokens_per_step == 256 and inputs.token_grid == (16, 16)
    labels = [len(ad.tokenizer(frame_label(i), add_special_tokens=False)["input_ids"]) for i in range(2)]
    assert inputs.step_token_offsets == [0, labels[0] + 258, labels[0] + labels[1] + 516]


def test_preprocessing_as_transformers_computes_it(ad, sampled):
    """The video processor's arithmetic (InternVLVideoProcessor: uint8 bicubic antialiased
    resize, fused ``(x - 255 mean) / (255 std)``; re-stated here, it needs torchvision) at the
    tower's size with the checkpoint's ImageNet statistics, bit for bit; the image processor's
    PIL path gives the same values on frames at that size, within resampling rounding otherwise."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    pp = ad.pp
    assert (pp.image_size, pp.image_mean, pp.image_std) == (112, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    frames = sampled.frames[:3]
    x = torch.nn.functional.interpolate(frames, size=(112, 112), mode="bicubic", antialias=True, align_corners=False)
    mean = (torch.tensor(pp.image_mean) * (1.0 / (1 / 255))).view(3, 1, 1)
    std = (torch.tensor(pp.image_std) * (1.0 / (1 / 255))).view(3, 1, 1)
    ours = ad.prepare_video(frames, 2.0, [0.0, 0.5, 1.0]).pixel_values
    assert torch.equal(ours, x.float().sub(mean).div(std))
    pil = GotOcr2ImageProcessorPil(size={"height": 112, "width": 112}, image_mean=list(pp.image_mean),
                                   image_std=list(pp.image_std), crop_to_patches=False)
    square = torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ref = pil([f.permute(1, 2, 0).numpy() for f in square], return_tensors="pt")["pixel_values"]
    assert torch.allclose(ad.prepare_video(square, 2.0, [0.0, 0.5, 1.0]).pixel_values, ref, atol=1e-5)
    ref = pil([f.permute(1, 2, 0).numpy() for f in frames], return_tensors="pt")["pixel_values"]
    assert float((ours - ref).abs().mean()) < 0.03


def test_equals_transformers_processor_where_torchvision_runs(ad, tiny, sampled):
    """The whole processor (AutoProcessor on the tiny checkpoint's files): the same input ids
    and the same pixels, bit for bit."""
    pytest.importorskip("torchvision")
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny)
    inputs, prompt = make_inputs(ad, sampled, question=QUESTION)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    out = proc(text=text, videos=[sampled.frames], return_tensors="pt")
    assert torch.equal(out["input_ids"][0], prompt.input_ids)
    assert torch.equal(out["pixel_values"], inputs.pixel_values)


# -- prompt ------------------------------------------------------------------------------------

def test_prompt_equals_processor_expansion(ad, sampled):
    """``Frame{i}: <img>`` + tokens + ``</img>`` per frame, newline-joined, in place of the
    template's ``<video>`` (InternVLProcessor.replace_video_token's text, then tokenized whole);
    1-D consecutive positions; no default system prompt."""
    inputs, prompt = make_inputs(ad, sampled, question=QUESTION)
    T, P = inputs.num_frames, inputs.tokens_per_step
    tok = ad.tokenizer
    expansion = hf_processor(tok, P).replace_video_token({"pixel_values_videos": [inputs.pixel_values]}, 0)
    chat = ad.chat_text(QUESTION)
    assert chat == f"<|im_start|>user\n<video>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    text = chat.replace(INTERNVL_TOKENS["video_token"], expansion)
    assert prompt.input_ids.tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(prompt.input_ids.tolist(), skip_special_tokens=False) == text
    assert tok.decode(prompt.input_ids[: prompt.video_start]) == "<|im_start|>user\n"
    assert tok.decode(prompt.input_ids[prompt.video_end :]) == f"\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    assert torch.equal(prompt.position_ids, torch.arange(prompt.input_ids.shape[0])[None])
    # the span: step s is its label, <img>, P grid tokens, </img>; visual_mask marks the grid
    assert inputs.frames_per_step == 1 and inputs.num_steps == T and inputs.token_grid == (4, 4) and P == 16
    off, span = inputs.step_token_offsets, inputs.span_ids
    assert torch.equal(prompt.input_ids[prompt.video_start : prompt.video_end], span)
    for s in range(T):
        step = span[off[s] : off[s + 1]].tolist()
        assert tok.decode(step[: -P - 2]) == frame_label(s)
        assert step[-P - 2 :] == [ad.start_id] + [ad.image_token_id] * P + [ad.end_id]
        assert int(inputs.visual_mask[off[s] : off[s + 1]].sum()) == P
    assert inputs.max_step_tokens == off[-1] - off[-2] > P
    assert ad.chat_text("q", system_prompt="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_a_template_whose_text_merges_with_the_first_label_fails(ad, sampled):
    """The span is tokenized apart from the text before it; a template whose text before
    ``<video>`` would merge with "Frame1" (a merge across the boundary) is refused, not
    silently given other tokens than the processor's."""
    from transformers import Qwen2Tokenizer

    base = ad.tokenizer
    vocab = dict(base.get_vocab())
    vocab["xF"] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[("x", "F")], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=None, extra_special_tokens=dict(INTERNVL_TOKENS))
    tok.add_special_tokens({"additional_special_tokens": [t for t in base.extra_special_tokens]})
    template = base.chat_template.replace("<video>\n", "x<video>")
    odd = InternVLAdapter(ad.model, tok, ad.pp, chat_template=template)
    inputs = odd.prepare_video(sampled.frames[:2], 2.0, [0.0, 0.5])
    with pytest.raises(ValueError, match="merges with the first frame label"):
        odd.build_prompt("q", inputs)
    assert InternVLAdapter(ad.model, tok, ad.pp, base.chat_template).build_prompt("q", inputs).num_text_tokens > 0  # "\n" + "Frame1": no merge
    with pytest.raises(ValueError, match="2 video placeholders"):
        InternVLAdapter(ad.model, base, ad.pp, chat_template="{{ '<video><video>' }}").build_prompt("q", inputs)


# -- vision and language model -----------------------------------------------------------------

def test_video_features_batched_with_the_text_in_place(ad, sampled):
    """Encoding 3 frames at a time equals transformers' get_image_features on the whole video
    at the grid tokens; the labels and markers carry their own token embeddings."""
    inputs, _ = make_inputs(ad, sampled)
    feats = ad.encode_video(inputs, batch_steps=3)
    with torch.no_grad():
        ref = ad.model.model.get_image_features(pixel_values=inputs.pixel_values).pooler_output
        text = ad.embed(inputs.span_ids)[0]
    vis = inputs.visual_mask
    assert feats.shape == (inputs.num_tokens, ad.text_config.hidden_size)
    assert torch.allclose(feats[vis], ref.flatten(0, 1), atol=1e-6)
    assert torch.equal(feats[~vis], text[~vis])


@pytest.mark.parametrize("chunk_frames", [1, 3, 16])
def test_chunked_prefill_equals_plain_forward(ad, plain, sampled, chunk_frames):
    """method none: next-token logits of one forward of the unmodified model (fp32, relative
    error <= 1e-5) for chunks of 1 and 3 frames (16 frames: a 1-frame tail) and one chunk."""
    inputs, prompt = make_inputs(ad, sampled)
    assert inputs.num_frames == 16
    out = Engine(ad, EngineConfig(chunk_frames=chunk_frames, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    assert rel_err(out.first_logits, plain_logits(plain, inputs, prompt)) <= 1e-5
    assert out.kv_tokens_per_layer == [prompt.input_ids.shape[0]] * ad.num_layers


def test_greedy_answer_equals_plain_model(ad, plain, sampled):
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=6)).run(inputs, prompt, get_method("none"))
    assert out.tokens == plain_greedy(plain, ad, inputs, prompt, 6)


def test_rope_is_the_models_and_yarn_applies(tiny, ad):
    """``rope`` is the text model's rotary embedding (1-D ids); rope_scaling_factor puts YaRN on
    the Qwen3 text config."""
    pos = torch.arange(40)[None]
    like = torch.zeros(1, dtype=torch.float32)
    cos, sin = ad.rope(pos, like)
    ref_cos, ref_sin = ad.language_model.rotary_emb(like, pos)
    assert cos.shape == (40, ad.text_config.head_dim) and torch.equal(cos, ref_cos[0]) and torch.equal(sin, ref_sin[0])
    yarn = load_adapter(tiny, dtype="float32", device="cpu", rope_scaling_factor=4.0)
    assert yarn.text_config.rope_parameters["rope_type"] == "yarn"
    assert not torch.allclose(yarn.rope(pos, like)[0], cos)


def test_per_layer_device_map_and_reforging(tiny, plain, sampled):
    """Dispatched with a per-layer device map (accelerate's hooks forced, every layer on the
    CPU): still exact; adaretake with and without position reforging meets its budget."""
    from test_multi_device import dispatched

    ad = dispatched(tiny, lambda i: "cpu")
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    assert rel_err(out.first_logits, plain_logits(plain, inputs, prompt)) <= 1e-5
    budget = prompt.num_text_tokens + inputs.num_tokens // 3
    for reforge in (False, True):
        res = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=3, reforge_positions=reforge)).run(
            inputs, prompt, get_method("adaretake"))
        assert sum(res.kv_tokens_per_layer) / ad.num_layers <= budget + inputs.num_frames // 4
        assert len(set(res.kv_tokens_per_layer)) > 1 and torch.isfinite(res.first_logits).all()


# -- entry points --------------------------------------------------------------------------------

def test_tiny_model_command_and_preflight(tmp_path, sampled):
    """``retake tiny-model --arch internvl`` writes a checkpoint every loader takes; the
    weightless adapter of the harness's budget check counts the same text."""
    from retake.cli import main
    from retake.harness.preflight import text_counter, weightless_adapter

    assert main(["tiny-model", "--arch", "internvl", str(tmp_path / "m")]) == 0
    assert {"preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json"} <= set(
        os.listdir(tmp_path / "m"))
    ad = load_adapter(str(tmp_path / "m"), dtype="float32", device="cpu")
    assert ad.model.config.model_type == "internvl" and ad.text_config.model_type == "qwen3"
    inputs, prompt = make_inputs(ad, sampled, question="Why?")
    assert text_counter(weightless_adapter(str(tmp_path / "m")))("Why?") == prompt.num_text_tokens
    res = Engine(ad, EngineConfig(chunk_frames=4, max_context=prompt.num_text_tokens + 100, max_new_tokens=2)).run(
        inputs, prompt, get_method("adaretake"))
    assert res.tokens and sum(res.kv_tokens_per_layer) / ad.num_layers <= prompt.num_text_tokens + 100 + 4


def test_a_cell_through_lmms_eval(tiny, tmp_path):
    """One cell of the synthetic benchmark through lmms-eval's evaluator and the model
    ``retake`` on the tiny checkpoint: every sample answered, metrics agree with the file."""
    from retake.harness.runner import run_cell
    from retake.harness.benchmarks.synthetic import write_synthetic_benchmark
    from test_harness import cell

    data = write_synthetic_benchmark(tmp_path / "data", formats=("synthetic",), num_videos=2, questions_per_video=2)
    cfg = cell(tiny, "synthetic", data["synthetic"], tmp_path / "runs")
    cfg["model"]["name"] = "tiny_internvl"
    result = run_cell(cfg)
    assert result["failures"] == [] and result["lmms_eval"]["agrees"]
    assert result["cell"]["model"] == "tiny_internvl"
