"""`make bench` runs end to end at toy sizes: every suite writes its JSON, the report and the
memory plot, and the figures hang together (the same frames from every reader, budgets that
bound the KV cache, reuse that reuses). Timings themselves are not asserted."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_suites_at_toy_sizes(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--out", str(out), "--frames", "16", "--size", "56",
           "--repeats", "1", "--methods", "adaretake,vlcache", "--memory-frames", "16,32", "--context", "120",
           "--video-seconds", "6", "--input-frames", "8", "--videos", "2", "--questions-per-video", "3",
           "--long-frames", "8", "--engine-cases", "custom", "--engine-chunks", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    for suite in ("engine", "memory", "input", "throughput"):
        assert f"## {suite}" in report
    assert (out / "memory.png").stat().st_size > 0

    engine = json.loads((out / "engine.json").read_text())
    (run,) = engine["runs"]
    modes = {r["mode"]: r for r in run["rows"]}
    assert set(modes) == {"plain forward", "engine none (r = 1)", "engine none + guide", "engine adaretake",
                          "engine vlcache"}
    assert modes["engine vlcache"]["method_seconds"] > 10 * modes["engine none (r = 1)"]["method_seconds"]
    assert modes["engine adaretake"]["kv_tokens_mean"] < modes["engine none (r = 1)"]["kv_tokens_mean"]
    for name, row in modes.items():  # the component split adds up to the prefill (other: the rest)
        if name != "plain forward":
            parts = row["components"]
            assert set(parts) == {"vision", "text", "layers", "attention", "scoring", "compaction", "other"}
            assert sum(parts.values()) == pytest.approx(row["seconds"], rel=0.05) and min(parts.values()) >= 0
    none = modes["engine none (r = 1)"]
    assert none["components"]["scoring"] < 0.01 * none["seconds"]  # none scores nothing (begin / select only)
    assert run["guide"]["tokens"] > 0 and run["guide"]["token_share"] > 0

    memory = json.loads((out / "memory.json").read_text())
    pts = {(p["method"], p["frames"]): p for p in memory["points"]}
    assert pts[("none", 32)]["kv_bytes"] > pts[("none", 16)]["kv_bytes"]  # uncompressed grows with frames
    assert pts[("adaretake", 32)]["kv_bytes"] < pts[("none", 32)]["kv_bytes"]
    assert pts[("none", 32)]["input_buffer_bytes"] == 2 * pts[("none", 16)]["input_buffer_bytes"]

    inp = json.loads((out / "input.json").read_text())
    assert {r["frames"] for r in inp["rows"]} == {8} and inp["video"]["codec"] == "h264"

    tp = json.loads((out / "throughput.json").read_text())
    for workload in ("needle", "long"):
        rows = {r["setting"]: r for r in tp["rows"] if r["workload"] == workload}
        assert rows["reuse + prefetch"]["videos_reused"] == 2 * (3 - 1)
        assert rows["reuse off, prefetch off"]["videos_reused"] == 0 and rows["prefetch only"]["videos_reused"] == 0
        assert all(r["samples"] == 6 and r["samples_per_hour"] > 0 for r in rows.values())
        # question unknown: each video compressed once and reused for its other questions, same answers
        reused, per_q = rows["question unknown, compressed cache reused"], rows["question unknown, prefill per question"]
        assert reused["caches_reused"] == 2 * (3 - 1) and per_q["caches_reused"] == 0
        assert reused["accuracy"] == per_q["accuracy"] and reused["vs_per_question"] > 0


def bench_part(name: str):
    """The bench's module ``scripts/bench_suites/<name>.py`` (a package beside ``scripts/bench.py``,
    not part of ``retake``)."""
    scripts = os.path.join(ROOT, "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module(f"bench_suites.{name}")


def test_gpu_suite_builds_the_real_7b_architecture():
    """The gpu suite's model is Qwen2.5-VL-7B's shape: 8.29 B parameters (counted on the meta
    device, nothing allocated)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    cfg, _ = bench_part("fullsize").full_size_config()
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert 8.25e9 < n < 8.33e9, n
    assert len(model.model.language_model.layers) == 28 and len(model.model.visual.blocks) == 32


def test_flop_count_matches_the_attention_calls(tiny_dirs, video_path, monkeypatch):
    """prefill_flops (from sizes and what each chunk kept) = the FLOPs of the attention calls
    the engine actually made, counted at the kernel (queries, keys of every call)."""
    import torch

    import retake.engine.attention as attention
    from retake.engine import Engine, EngineConfig
    from retake.methods import get_method
    from retake.models import load_adapter
    from retake.video import load_video

    flops = bench_part("flops")
    ad = load_adapter(tiny_dirs["qwen2_5_vl"], dtype="float32", device="cpu")
    v = load_video(video_path, fps=2.0, max_frames=16, max_long_side=84)
    video = ad.prepare_video(v.frames, v.sampling_fps, v.timestamps)
    prompt = ad.build_prompt("What happens in the video?", video)
    t = ad.model.config.text_config
    d = t.hidden_size
    kv = t.num_key_value_heads * d // t.num_attention_heads
    per_token = 2 * (d * (d + 2 * kv) + d * d + 3 * d * t.intermediate_size)
    real = attention.causal_sdpa
    for method, context in (("none", 10**6), ("adaretake", prompt.num_text_tokens + 20), ("snapkv", prompt.num_text_tokens + 9)):
        calls = []

        def counting(q, k, v, scale):
            calls.append((q.shape[1] * q.shape[-1], q.shape[-2], k.shape[-2]))
            return real(q, k, v, scale)

        monkeypatch.setattr(attention, "causal_sdpa", counting)
        rec = flops.Recording(get_method(method), torch.device("cpu"))
        Engine(ad, EngineConfig(chunk_frames=4, max_context=context, max_new_tokens=1)).run(video, prompt, rec)
        monkeypatch.setattr(attention, "causal_sdpa", real)
        g = prompt.input_ids.shape[0] - prompt.video_end if rec.uses_guide else 0
        counted = flops.prefill_flops(ad.model.config, prompt, video, rec, g)["llm"] - 2 * d * t.vocab_size
        L = t.num_hidden_layers
        # forwards of L calls each: the prefix with the first chunk, the other chunks, the suffix
        assert len(calls) == L * (1 + len(rec.fed))
        at_kernel = sum(per_token * q + 4 * h * (q * (k - q) + q * (q + 1) // 2) for h, q, k in calls)
        # in every chunk's forward the guide's rows skip the last layer's MLP
        at_kernel -= len(rec.fed) * 2 * 3 * d * t.intermediate_size * g
        assert counted == at_kernel, method
        assert calls[0][1] == prompt.video_start + rec.fed[0] + g  # the prefix ran with the first chunk
