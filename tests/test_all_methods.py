"""Every registered method x every tiny architecture (the four test ones at two budgets, the
2026 families at one) through the real engine: runs end to end, meets the budget, leaves no
guide KV, decodes from the compressed cache, keeps the top of its score. A new method is
picked up from the registry with no edit here."""

from __future__ import annotations

import pytest
import torch

from conftest import Recorder, make_inputs
from reference_scores import REFERENCE_INPUT_SCORES, REFERENCE_SCORES
from retake.engine import Engine, EngineConfig
from retake.methods import METHODS, LayerKeep, get_method
from retake.pipeline import SamplingConfig, answer_question
from retake.tiny import NEW_ARCHS, TEST_ARCHS
from retake.video import load_video, write_test_video

# (architecture, video share): the four test architectures at two budgets, the new families at
# one (Qwen3.5-MoE differs from Qwen3.5 in its MLP only: tests/test_qwen3_5.py runs it)
NEW = tuple(a for a in NEW_ARCHS if a != "qwen3_5_moe")
CASES = [(a, s) for a in TEST_ARCHS for s in (0.15, 0.5)] + [(a, 0.15) for a in NEW]
ARCHS = TEST_ARCHS + NEW


@pytest.fixture(scope="module")
def all_adapters(adapters, new_adapters):
    return {**adapters, **new_adapters}


def method(name, ad, **params):
    """The registered method; PyramidDrop's 4 stages need 4 layers holding KV (the tiny hybrids
    have 2 attention layers: one stage per layer there)."""
    if name == "pyramiddrop" and ad.num_layers < 4:
        params = {"stages": ad.num_layers, **params}
    return get_method(name, **params)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("all") / "clip.mp4", num_frames=192, size=(120, 200), fps=8, seed=7)


# the share of the video budget a method must use (default 0.9), lower where its definition
# spends the budget in coarse units (measured on these tiny inputs: budgets of 20-300 tokens)
BUDGET_USE = {
    "uniform": (0.8, "whole frames: the largest frame count that fits"),
    "downsample": (0.6, "whole resolution steps of the merged grid (or pooling factors)"),
    "fastvid": (0.7, "whole segments' salient + contextual shares rounded per frame; a frame's text counts"),
    "vidcom2": (0.75, "per-frame budgets, a frame's interleaved text counted with its first kept token"),
    "evs": (0.75, "the kept tokens' interleaved text (Qwen3-VL timestamps) counts in the budget"),
    "adakv": (0.85, "the authors' per-head budgets floor alpha * B: at B of 3-5 tokens a head's share rounds down"),
}


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("arch,video_share", CASES)
def test_every_method(arch, all_adapters, clip, name, video_share):
    ad = all_adapters[arch]
    sampling = SamplingConfig(fps=2.0, max_frames=48, max_long_side=84)
    full = make_inputs(ad, load_video(clip, fps=2.0, max_frames=48, max_long_side=84))
    n_text, n_video = full[1].num_text_tokens, full[0].num_tokens
    budget = n_text + int(video_share * n_video)
    res = answer_question(ad, clip, "What happens in the video? Answer briefly.", method(name, ad), sampling,
                          EngineConfig(chunk_frames=8, max_context=budget, max_new_tokens=3))
    kv = res["kv_tokens_per_layer"]
    chunks = -(-res["frames"] // 8)
    if name == "none":  # the one method that ignores the budget by definition
        assert kv == [n_text + n_video] * len(kv)
    else:  # within one token per chunk of rounding
        assert sum(kv) / len(kv) <= budget + chunks
        # and the budget is used (a method that keeps nothing fails here)
        kept = res["kept_video_tokens_per_layer"]
        floor, _why = BUDGET_USE.get(name, (0.9, ""))
        assert sum(kept) / len(kept) >= floor * (budget - n_text), f"{name} leaves the budget unused"
    # the cache holds exactly the kept video tokens and the text: no guide entry is left
    assert kv == [k + res["text_tokens"] for k in res["kept_video_tokens_per_layer"]]
    assert 1 <= res["generated_tokens"] <= 3


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("arch", ARCHS)
def test_decoding_continues_from_the_compressed_cache(arch, all_adapters, clip, name):
    """Greedy decoding after compression: the first token is the prefill's argmax; the second
    is the argmax of that token fed through the model over the compressed cache (taken from
    a second, identical prefill) at the next position; each decoded token adds one entry per
    layer."""
    ad = all_adapters[arch]
    inputs, prompt = make_inputs(ad, load_video(clip, fps=2.0, max_frames=48, max_long_side=84))
    cfg = dict(chunk_frames=8, max_context=prompt.num_text_tokens + int(0.15 * inputs.num_tokens))
    out = Engine(ad, EngineConfig(max_new_tokens=3, **cfg)).run(inputs, prompt, method(name, ad))
    assert out.tokens[0] == int(out.first_logits.argmax())
    assert out.kv_tokens_per_layer_final == [k + len(out.tokens) - 1 for k in out.kv_tokens_per_layer]
    pre = Engine(ad, EngineConfig(max_new_tokens=1, **cfg)).run(inputs, prompt, method(name, ad), return_cache=True)
    assert torch.equal(pre.first_logits, out.first_logits) and pre.kv_tokens_per_layer == out.kv_tokens_per_layer
    if len(out.tokens) < 2:  # the first token ended the answer
        return
    from retake.engine.engine import PLAIN

    pos = torch.full((prompt.position_ids.shape[0], 1), int(prompt.position_ids.max()) + 1, dtype=torch.long)
    with torch.no_grad():
        h = ad.forward_embeds(ad.embed(torch.tensor([out.tokens[0]])), pos, pre.cache, retake_ctx=PLAIN)
    assert out.tokens[1] == int(ad.logits(h[0, -1]).argmax())


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("arch,video_share", CASES)
def test_kept_tokens_are_top_scores(arch, all_adapters, clip, name, video_share):
    """Score-based methods: in every layer and chunk the kept tokens are exactly the top-k of
    the method's score, recomputed independently from the captured q/k (tests/reference_scores.py).
    A registered method that selects tokens but has no reference score fails here."""
    assert set(REFERENCE_SCORES) <= set(METHODS)
    ad = all_adapters[arch]
    inputs, prompt = make_inputs(ad, load_video(clip, fps=2.0, max_frames=48, max_long_side=84))
    budget = prompt.num_text_tokens + int(video_share * inputs.num_tokens)
    # StreamMem's frame filter may leave fewer tokens than its memory: every frame fed here
    rec = Recorder(method(name, ad, **({"filter_threshold": 1.0} if name == "streammem" else {})))
    Engine(ad, EngineConfig(chunk_frames=8, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    if name not in REFERENCE_SCORES:
        selects = any(k is not None for sel in rec.selected.values() for k in sel)
        assert not selects, f"{name} selects tokens: add its score to tests/reference_scores.py (docs/adding_a_method.md)"
        return
    checked = 0
    for c, sel in rec.selected.items():
        scores = REFERENCE_SCORES[name](rec.views[c], rec, c)
        for layer, (keep, score) in enumerate(zip(sel, scores)):
            if keep is None or score is None:
                continue
            keep = keep if isinstance(keep, LayerKeep) else LayerKeep(keep)
            # a per-KV-head keep is checked head by head against the score's row of that head
            assert keep.per_head == (score.dim() == 2), f"{name}: per-head keep vs score of shape {tuple(score.shape)}"
            rows = score if keep.per_head else score[None]
            for h, row in enumerate(rows):
                idx = keep.head_index(h, rows.shape[0])
                if idx.numel() == 0:  # only merged entries kept (StreamMem's prototypes, a tiny memory)
                    continue
                assert idx.tolist() == sorted(set(idx.tolist())), "kept indices must be sorted and unique"
                dropped = torch.ones(row.shape[0], dtype=torch.bool)
                dropped[idx] = False
                kept_min = float(row[idx].min())
                assert kept_min > float("-inf"), f"{name}: layer {layer} kept a token it may not keep"
                if dropped.any():
                    tol = 1e-5 * max(1.0, abs(kept_min))
                    assert float(row[dropped].max()) <= kept_min + tol, f"{name}: chunk {c} layer {layer} head {h} is not top-k"
                checked += 1
    assert checked > 0, "nothing was compressed: the budget did not bite"


@pytest.mark.parametrize("name", sorted(REFERENCE_INPUT_SCORES))
@pytest.mark.parametrize("arch,video_share", CASES)
def test_fed_tokens_are_top_scores(arch, all_adapters, clip, name, video_share):
    """Methods that select before the language model (pre-LLM pruners and the answer pass of
    two-pass methods): in every group of their definition the tokens fed are exactly the top-k of
    the score recomputed independently (tests/reference_scores.py)."""
    ad = all_adapters[arch]
    params = {"group_frames": 16} if name in ("flexselect", "adaptoken") else {}  # several groups of 48 frames
    inputs, prompt = make_inputs(ad, load_video(clip, fps=2.0, max_frames=48, max_long_side=84))
    budget = prompt.num_text_tokens + int(video_share * inputs.num_tokens)
    rec = Recorder(method(name, ad, **params))
    Engine(ad, EngineConfig(chunk_frames=8, max_context=budget, max_new_tokens=1)).run(inputs, prompt, rec)
    assert rec.input_keep is not None and not rec.input_keep.all(), "nothing was dropped: the budget did not bite"
    groups = REFERENCE_INPUT_SCORES[name](rec)
    if groups is None:
        pytest.skip(f"{name} selects nothing by score at this budget")
    checked = 0
    for tokens, score in groups:
        fed = rec.input_keep[tokens]
        if fed.all() or not fed.any():
            continue
        tol = 1e-6 * max(1.0, float(score[fed].abs().min()))
        assert float(score[~fed].max()) <= float(score[fed].min()) + tol, f"{name}: a group's fed tokens are not its top-k"
        checked += 1
    assert checked > 0, f"{name}: no group with both fed and dropped tokens"
