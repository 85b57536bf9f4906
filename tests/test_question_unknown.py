"""Question-unknown compression: a video compressed once serves every question on it.

- a state answered several questions (and the first one again) gives exactly the tokens and
  logits of a fresh per-question run, and its cache is the same tensor data afterwards;
- methods that do not read the question give the same answers in both question modes at the
  same budget; guided methods in mode ``unknown`` see the proxy guide only;
- the memory cap of InfiniPot-V and StreamMem holds after every chunk, and their peak cache
  size is flat in video length;
- InfiniPot-V's and StreamMem's pieces on hand-computed cases;
- through lmms-eval: ``run.reuse_cache`` changes no answer.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from conftest import Recorder, make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import METHODS, get_method
from retake.methods.infinipot_v import infinipot_select, tar_scores
from retake.methods.streammem import filter_steps, frame_prototypes
from retake.video import load_video, write_test_video

QUESTIONS = ("What happens in the video? Answer briefly.", "Which colour is the ball?",
             "Describe the scene in one word, please, and say nothing else.")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("qu") / "clip.mp4", num_frames=192, size=(120, 200), fps=8, seed=7)


def setup(ad, clip, frames=48, share=0.25, **cfg):
    inputs, _ = make_inputs(ad, load_video(clip, fps=2.0, max_frames=frames, max_long_side=84))
    proxy = ad.build_prompt("", inputs)
    prompts = [ad.build_prompt(q, inputs) for q in QUESTIONS]
    budget = proxy.num_text_tokens + 40 + int(share * inputs.num_tokens)
    engine = Engine(ad, EngineConfig(chunk_frames=8, max_context=budget, max_new_tokens=3, question_mode="unknown",
                                     question_tokens=40, **cfg))
    return inputs, proxy, prompts, engine


def video_state(engine, inputs, proxy, prompt, method, features):
    kind, guide = engine.guide_for(method, prompt, proxy, "unknown")
    return engine.prefill_video(inputs, proxy, method, features=features, guide=guide,
                                text_tokens=engine.budget_text_tokens(prompt, proxy, "unknown"), guide_kind=kind)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_reused_state_answers_as_fresh_runs(arch, adapters, clip, name):
    ad = adapters[arch]
    inputs, proxy, prompts, engine = setup(ad, clip)
    features, _ = engine.encode(inputs)
    state = video_state(engine, inputs, proxy, prompts[0], get_method(name), features)
    before = [(lay.keys.clone(), lay.values.clone()) for lay in state.cache.layers]
    lengths = state.cache.lengths()
    outs = [engine.answer(state, p) for p in (*prompts, prompts[0])]
    fresh = [engine.run(inputs, p, get_method(name), features=features, proxy=proxy) for p in prompts]
    for out, ref in zip(outs, fresh + fresh[:1]):
        assert out.tokens == ref.tokens
        assert torch.equal(out.first_logits, ref.first_logits)
        assert out.kv_tokens_per_layer == ref.kv_tokens_per_layer
        assert out.kept_video_tokens_per_layer == ref.kept_video_tokens_per_layer
    assert [o.cache_reused for o in outs] == [False, True, True, True]
    assert not any(r.cache_reused for r in fresh)
    # nothing of a question stays: the state's entries are the same data, and the same count
    state.cache.restore(state.snapshot)
    assert state.cache.lengths() == lengths
    for (k, v), lay in zip(before, state.cache.layers):
        assert torch.equal(k, lay.keys) and torch.equal(v, lay.values)
    # the first answer reports the video's prefill (added to its suffix's); the later ones their
    # suffix only (not asserted: comparing two timings fails on a busy machine)
    assert outs[0].prefill_seconds >= state.prefill_seconds > 0


def test_a_state_refuses_a_prompt_on_another_video(adapters, clip):
    ad = adapters["qwen2_vl"]
    inputs, proxy, prompts, engine = setup(ad, clip)
    state = video_state(engine, inputs, proxy, prompts[0], get_method("retake"), None)
    other, _ = make_inputs(ad, load_video(clip, fps=2.0, max_frames=24, max_long_side=84))
    with pytest.raises(ValueError, match="differ from the compressed video"):
        engine.answer(state, ad.build_prompt(QUESTIONS[0], other))
    with pytest.raises(ValueError, match="differ from the compressed video"):
        engine.answer(state, ad.build_prompt(QUESTIONS[0], inputs, system_prompt="You are terse."))


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if not m.question_aware))
def test_question_unknown_methods_answer_the_same_in_both_modes(arch, adapters, clip, name):
    """At the same budget (question_tokens = the question's own tokens) a method that does not
    read the question gives the same tokens and logits whether the question is known or not."""
    ad = adapters[arch]
    inputs, proxy, prompts, _ = setup(ad, clip)
    prompt = prompts[1]
    budget = prompt.num_text_tokens + int(0.25 * inputs.num_tokens)
    q = prompt.num_text_tokens - proxy.num_text_tokens
    aware = Engine(ad, EngineConfig(chunk_frames=8, max_context=budget, max_new_tokens=3)).run(
        inputs, prompt, get_method(name))
    unknown = Engine(ad, EngineConfig(chunk_frames=8, max_context=budget, max_new_tokens=3, question_mode="unknown",
                                      question_tokens=q)).run(inputs, prompt, get_method(name), proxy=proxy)
    assert aware.tokens == unknown.tokens and torch.equal(aware.first_logits, unknown.first_logits)
    assert aware.guide == unknown.guide == ("proxy" if METHODS[name].proxy_guide else "none")


@pytest.mark.parametrize("name", ["snapkv", "adaretake", "sparsevlm", "flexselect"])
def test_guided_methods_see_the_proxy_when_the_question_is_unknown(adapters, clip, name):
    """Mode unknown: every guide query the method is shown is the proxy's (the chat template's
    tokens after the video), and two questions give the same compressed cache."""
    ad = adapters["qwen2_vl"]
    inputs, proxy, prompts, engine = setup(ad, clip)
    params = {"group_frames": 16} if name == "flexselect" else {}
    states = []
    for p in prompts[:2]:
        rec = Recorder(get_method(name, **params))
        states.append(video_state(engine, inputs, proxy, p, rec, None))
        g = proxy.input_ids.shape[0] - proxy.video_end
        views = [v for c in rec.views.values() for v in c.values()] + \
                [v for c in rec.scoring_views.values() for v in c.values()]
        # (a two-pass method's answer pass may run without a guide)
        assert views and all(v.g in (g, 0) for v in views) and any(v.g == g for v in views)
        assert states[-1].guide == "proxy"
    for a, b in zip(states[0].cache.layers, states[1].cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    # and in mode aware the question is the guide (the state differs)
    aware = Engine(ad, EngineConfig(chunk_frames=8, max_context=engine.config.max_context, max_new_tokens=1))
    rec = Recorder(get_method(name, **params))
    aware.run(inputs, prompts[1], rec)
    g = prompts[1].input_ids.shape[0] - prompts[1].video_end
    views = [v for c in (*rec.views.values(), *rec.scoring_views.values()) for v in c.values()]
    assert all(v.g in (g, 0) for v in views) and any(v.g == g for v in views)


@pytest.mark.parametrize("name", ["infinipot_v", "streammem"])
def test_the_memory_cap_holds_after_every_chunk(arch, adapters, clip, name):
    ad = adapters[arch]
    inputs, proxy, prompts, engine = setup(ad, clip, share=0.2)
    rec = Recorder(get_method(name, **({"filter_threshold": 1.0} if name == "streammem" else {})))
    state = video_state(engine, inputs, proxy, prompts[0], rec, None)
    cap = engine.config.max_context - state.text_tokens
    held = {l: [] for l in range(ad.num_layers)}
    for c in sorted(rec.views):
        for l, v in rec.views[c].items():
            held[l].append(v.cache_len - v.video_start)  # what earlier chunks left
    for l in held:
        held[l].append(state.cache.layer_length(l) - state.video_start)
        assert max(held[l]) <= cap
        assert held[l][-1] == cap  # the cap bit (the video holds more than it)
    assert max(state.held_max) == cap and inputs.num_tokens > cap
    if name == "streammem":  # the merged entries are the chunk's frame prototypes, by hand
        c = max(c for c, sel in rec.selected.items() if sel[0] is not None)
        v, keep = rec.views[c][0], rec.selected[c][0]
        s = v.attention(v.query[:, v.n :], v.video_keys).mean((0, 1))
        m = v.video_keys.shape[1] - v.n
        span = rec.plan.chunks[c]
        frame = torch.searchsorted(torch.tensor(rec.plan.step_token_offsets), torch.arange(span.token_start, span.token_end),
                                   right=True) - 1
        for j, f in enumerate(frame.unique().tolist()):
            sel = (frame == f).nonzero().squeeze(1)
            w = s[m + sel] / s[m + sel].sum()
            k = (v.video_keys[:, m + sel].double() * w[None, :, None]).sum(1)
            assert torch.allclose(keep.extra_keys[:, j].double(), k, atol=1e-5)
        assert keep.num_entries == cap


@pytest.mark.parametrize("name", ["infinipot_v", "streammem"])
def test_peak_cache_is_flat_in_video_length(adapters, clip, name):
    """At one max_context, longer videos leave the cache's largest size unchanged (the cap plus
    one chunk), where without compression it grows with the video."""
    ad = adapters["qwen2_vl"]
    peaks, none = [], []
    params = {"filter_threshold": 1.0} if name == "streammem" else {}
    for frames in (24, 36, 48):
        inputs, _ = make_inputs(ad, load_video(clip, fps=2.0, max_frames=frames, max_long_side=84))
        proxy = ad.build_prompt("", inputs)
        prompt = ad.build_prompt(QUESTIONS[0], inputs)
        cfg = EngineConfig(chunk_frames=4, max_context=proxy.num_text_tokens + 40 + 60, max_new_tokens=1,
                           question_mode="unknown", question_tokens=40)
        out = Engine(ad, cfg).run(inputs, prompt, get_method(name, **params), proxy=proxy)
        peaks.append(out.peak_kv_cache_bytes)
        assert max(out.video_held_max_per_layer) == 60
        none.append(Engine(ad, cfg).run(inputs, prompt, get_method("none"), proxy=proxy).peak_kv_cache_bytes)
    assert peaks[0] == peaks[1] == peaks[2]
    assert none[0] < none[1] < none[2] and peaks[0] < none[2]


# -- hand-computed cases ------------------------------------------------------------------------

def test_tar_scores_by_hand():
    # 3 steps x 2 grid positions, one head, d = 2; the query is step 2: (1,0) at p0, (0,1) at p1
    keys = torch.tensor([[[1.0, 0], [1, 1], [0, 1], [0, -1], [1, 0], [0, 1]]])
    pos = torch.tensor([0, 1, 0, 1, 0, 1])
    query = torch.tensor([False, False, False, False, True, True])
    s = tar_scores(keys, pos, query, 2)
    assert s[:4].tolist() == pytest.approx([-1.0, -math.sqrt(0.5), 0.0, 1.0], abs=1e-6)
    assert s[4:].tolist() == [float("-inf")] * 2  # query entries are kept, not scored


def test_infinipot_select_by_hand():
    # 4 steps x 2 positions; cap 6: query = the newest max(1, int(0.25 * 8 / 2)) = 1 step (entries
    # 6, 7); tar_budget = 6 - round(3) = 3, so one more by TaR: entry 2 (cos -1 with the query at
    # its position); then the value norms fill the other 3: entries 0 (5), 3 (4), 4 (3)
    keys = torch.tensor([[[1.0, 0], [0, 1], [-1, 0], [1, 1], [0, 1], [1, 0], [1, 0], [0, 1]]])
    norms = torch.tensor([5.0, 1, 0.5, 4, 3, 2, 0.1, 0.2])
    values = torch.stack([norms, torch.zeros(8)], -1)[None]
    steps, pos = torch.arange(8) // 2, torch.arange(8) % 2
    assert infinipot_select(keys, values, steps, pos, 2, 6, 0.5, 0.25).tolist() == [0, 2, 3, 4, 6, 7]
    # value norm alone (tar_ratio 0): the 6 largest norms
    assert infinipot_select(keys, values, steps, pos, 2, 6, 0.0, 0.25).tolist() == [0, 1, 2, 3, 4, 5]
    # a cap below the query: its best by value norm (cap 1: round(0.5) = 0, tar_budget 1)
    assert infinipot_select(keys, values, steps, pos, 2, 1, 0.5, 0.25).tolist() == [7]


def test_streammem_filter_and_prototypes_by_hand():
    f = torch.tensor([[1.0, 0], [1, 0.1], [1, 0.2], [0, 1], [0.05, 1]])
    # cos with the last kept step f0: 0.995 (f1), 0.981 (f2), then with f2 or f3 as they are kept
    assert filter_steps(f, 0.99).tolist() == [True, False, True, True, False]
    assert filter_steps(f, 0.97).tolist() == [True, False, False, True, False]
    assert filter_steps(f, 1.0).all()
    keys = torch.tensor([[[1.0, 0], [0, 1], [2, 2]]])
    values = torch.tensor([[[1.0], [3.0], [5.0]]])
    s = torch.tensor([0.25, 0.75, 0.5])
    k, v, total = frame_prototypes(keys, values, s, torch.tensor([4, 4, 5]))
    assert k[0].tolist() == [[0.25, 0.75], [2.0, 2.0]] and v[0, :, 0].tolist() == [2.5, 5.0]
    assert total.tolist() == [1.0, 0.5]


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="tar_ratio"):
        get_method("infinipot_v", tar_ratio=1.5)
    with pytest.raises(ValueError, match="cap"):
        get_method("infinipot_v", cap=0)
    with pytest.raises(ValueError, match="filter_threshold"):
        get_method("streammem", filter_threshold=0)
    with pytest.raises(ValueError, match="engine.question_mode: .blind. is not a valid choice; valid: aware, unknown"):
        EngineConfig(question_mode="blind")


def test_reforging_refuses_a_whole_video_selection(adapters, clip):
    ad = adapters["qwen2_vl"]
    inputs, proxy, prompts, _ = setup(ad, clip)
    cfg = EngineConfig(chunk_frames=8, max_context=prompts[0].num_text_tokens + 30, reforge_positions=True)
    with pytest.raises(ValueError, match="reforge_positions=false"):
        Engine(ad, cfg).run(inputs, prompts[0], get_method("infinipot_v"))


# -- through lmms-eval ---------------------------------------------------------------------------

@pytest.mark.xdist_group("harness")
def test_reusing_the_compressed_cache_changes_no_answer(tmp_path):
    from retake.harness.runner import cell_name, resolve_config, run_cell
    from retake.harness.benchmarks.synthetic import write_synthetic_benchmark
    from retake.tiny import write_tiny_model

    tiny = write_tiny_model("qwen2_vl", tmp_path / "tiny", seed=0)
    data = write_synthetic_benchmark(tmp_path / "data", formats=("synthetic",), num_videos=2, questions_per_video=3)

    def cell(reuse: bool, method: str) -> list[dict]:
        cfg = {"model": {"name": "tiny_qwen2_vl", "pretrained": tiny, "dtype": "float32", "attn_implementation": "sdpa",
                         "rope_scaling_factor": None, "device": "cpu"},
               "method": {"name": method, "params": {}},
               "dataset": {"name": "synthetic", "data_root": data["synthetic"]},
               "sampling": {"fps": 2.0, "max_frames": 8, "max_long_side": 56, "backend": "decord"},
               "engine": {"max_context": 200, "chunk_frames": 4, "max_new_tokens": 3, "question_tokens": 64,
                          "question_mode": "unknown"},
               "run": {"results_root": str(tmp_path / f"runs{int(reuse)}"), "reuse_cache": reuse}}
        m = run_cell(cfg)
        name = cell_name(resolve_config(cfg))
        assert name.endswith("__unknown__s" + name.rsplit("__s", 1)[1]) and m["cell"]["question_mode"] == "unknown"
        with open(os.path.join(cfg["run"]["results_root"], name, "predictions.jsonl")) as f:
            return [json.loads(line) for line in f], m

    for method in ("infinipot_v", "snapkv"):
        (on, m_on), (off, m_off) = cell(True, method), cell(False, method)
        assert sum(r["cache_reused"] for r in on) == 4 and not any(r["cache_reused"] for r in off)  # 2 videos x 3
        keys = ("uid", "prediction", "kv_tokens_mean", "kept_video_tokens_mean", "guide", "budget_text_tokens")
        assert [{k: r[k] for k in keys} for r in on] == [{k: r[k] for k in keys} for r in off]
        assert {r["guide"] for r in on} == {"none" if method == "infinipot_v" else "proxy"}
        assert m_on["throughput"]["caches_reused"] == 4 and m_off["throughput"]["caches_reused"] == 0
