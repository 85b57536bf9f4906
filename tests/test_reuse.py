"""The input pipeline's speed-ups never change an answer: vision features given to the engine
= computed inside it; questions on one video reuse its prepared inputs and features only under
the same key (model, file, sampling); the prefetcher hands back what preparing on the spot
gives, at most ``depth`` videos ahead, and a bad video fails only its own sample."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import torch

from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.models import load_adapter
from retake.pipeline import Prefetcher, SamplingConfig, VideoReuse, answer_question, prepare_video, video_key
from retake.video import VideoDecodeError, write_test_video

from conftest import make_inputs

SAMPLING = SamplingConfig(fps=2.0, max_frames=16, max_long_side=84)
ENGINE = EngineConfig(chunk_frames=4, max_context=110, max_new_tokens=3)  # keeps about half the video of "q"
VOLATILE = ("video_reused", "input_seconds", "vision_seconds", "prefill_seconds", "decode_seconds", "peak_memory_bytes")


def stable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in VOLATILE}


@pytest.mark.parametrize("method", ["none", "adaretake", "vlcache"])
def test_given_features_equal_computed_ones(adapters, sampled, arch, method):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    engine = Engine(ad, EngineConfig(chunk_frames=4, max_context=prompt.num_text_tokens + 40, max_new_tokens=3))
    inside = engine.run(inputs, prompt, get_method(method))
    features, seconds = engine.encode(inputs)
    given = engine.run(inputs, prompt, get_method(method), features=features)
    assert torch.equal(inside.first_logits, given.first_logits)
    assert inside.tokens == given.tokens and inside.kv_tokens_per_layer == given.kv_tokens_per_layer
    assert given.vision_seconds == 0.0 and seconds > 0


def test_features_of_another_video_are_refused(adapters, sampled, arch):
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    engine = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1))
    features, _ = engine.encode(inputs)
    cut = features.embeds[:-1] if hasattr(features, "embeds") else features[:-1]
    with pytest.raises(ValueError, match="video tokens"):
        engine.run(inputs, prompt, get_method("none"), features=cut)


@pytest.mark.parametrize("method", ["adaretake", "uniform"])
def test_reuse_gives_the_same_answers(adapters, video_path, arch, method):
    ad = adapters[arch]
    # of one length: uniform fits its frame count to the text, and equal counts share a key
    questions = ["What happens in it?", "What colour is it??", "Where does it go???"]
    assert len({len(q) for q in questions}) == 1
    fresh = [answer_question(ad, video_path, q, get_method(method), SAMPLING, ENGINE) for q in questions]
    reuse = VideoReuse()
    reused = [answer_question(ad, video_path, q, get_method(method), SAMPLING, ENGINE, reuse=reuse) for q in questions]
    assert [stable(r) for r in reused] == [stable(r) for r in fresh]
    assert [r["video_reused"] for r in reused] == [False, True, True]
    assert all(r["vision_seconds"] == 0 and r["input_seconds"] == 0 for r in reused[1:])
    assert reused[0]["vision_seconds"] > 0 and not any(r["video_reused"] for r in fresh)
    assert reuse.hits == 2 and len(reuse) == 1


def test_entries_keep_features_not_pixels(adapters, video_path):
    ad = adapters["qwen2_vl"]
    reuse = VideoReuse()
    answer_question(ad, video_path, "q", get_method("none"), SAMPLING, ENGINE, reuse=reuse)
    (entry,) = reuse._entries.values()
    assert entry.inputs.pixel_values is None and entry.features is not None


def test_any_change_of_model_file_or_sampling_is_a_miss(adapters, tiny_dirs, video_path, tmp_path):
    ad = adapters["qwen2_vl"]
    base = video_key(ad, video_path, SAMPLING, 16)
    assert video_key(ad, video_path, SAMPLING, 16) == base
    other = SamplingConfig(**vars(SAMPLING))
    changes = {
        "fps": SamplingConfig(fps=1.0, max_frames=16, max_long_side=84),
        "resolution": SamplingConfig(fps=2.0, max_frames=16, max_long_side=56),
        "backend": SamplingConfig(fps=2.0, max_frames=16, max_long_side=84, backend="decord"),
        "resize kernel": SamplingConfig(fps=2.0, max_frames=16, max_long_side=84, resize="float32"),
    }
    for name, s in changes.items():
        assert video_key(ad, video_path, s, 16) != base, name
    assert video_key(ad, video_path, other, 8) != base  # frame count
    # another model object, even of the same checkpoint; another dtype
    twin = load_adapter(tiny_dirs["qwen2_vl"], dtype="float32", device="cpu")
    assert video_key(twin, video_path, SAMPLING, 16) != base
    assert video_key(adapters["qwen2_5_vl"], video_path, SAMPLING, 16) != base
    # the same path rewritten with other content, and the same content under another path
    path = tmp_path / "v.mp4"
    shutil.copy(video_path, path)
    before = video_key(ad, path, SAMPLING, 16)
    time.sleep(0.01)
    write_test_video(path, num_frames=96, size=(120, 200), fps=8, seed=2)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    assert video_key(ad, path, SAMPLING, 16) != before
    assert before != base


def test_a_changed_file_is_decoded_again(adapters, tmp_path):
    ad = adapters["qwen2_vl"]
    path = tmp_path / "v.mp4"
    write_test_video(path, num_frames=96, size=(120, 200), fps=8, seed=1)
    reuse = VideoReuse()
    first = answer_question(ad, path, "q", get_method("none"), SAMPLING, ENGINE, reuse=reuse)
    write_test_video(path, num_frames=48, size=(120, 200), fps=8, seed=3)  # 6 s: 12 frames
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    second = answer_question(ad, path, "q", get_method("none"), SAMPLING, ENGINE, reuse=reuse)
    assert not second["video_reused"] and (first["frames"], second["frames"]) == (16, 12)


def test_reuse_is_bounded(adapters, tmp_path):
    ad = adapters["qwen2_vl"]
    paths = [write_test_video(tmp_path / f"v{i}.mp4", num_frames=32, size=(56, 56), fps=8, seed=i) for i in range(3)]
    reuse = VideoReuse(max_videos=2)
    for p in paths:
        answer_question(ad, p, "q", get_method("none"), SAMPLING, ENGINE, reuse=reuse)
    assert len(reuse) == 2
    assert not answer_question(ad, paths[0], "q", get_method("none"), SAMPLING, ENGINE, reuse=reuse)["video_reused"]
    assert answer_question(ad, paths[2], "q", get_method("none"), SAMPLING, ENGINE, reuse=reuse)["video_reused"]
    with pytest.raises(ValueError, match="max_videos"):
        VideoReuse(0)


@pytest.mark.parametrize("decode_threads", [0, 1])
def test_prefetcher_gives_what_preparing_gives(adapters, tmp_path, decode_threads):
    ad = adapters["qwen2_vl"]
    paths = [write_test_video(tmp_path / f"v{i}.mp4", num_frames=32, size=(56, 56), fps=8, seed=i) for i in range(4)]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    order = [paths[0], paths[1], str(bad), paths[2], paths[3]]
    pf = Prefetcher(ad, SAMPLING, depth=2, decode_threads=decode_threads)
    try:
        pf.schedule(order)
        assert len(pf._pending) <= 2
        for p in order:
            if p == str(bad):
                with pytest.raises(VideoDecodeError):
                    pf.take(p)
                continue
            got, want = pf.take(p), prepare_video(ad, p, SAMPLING)
            assert got.key == want.key and torch.equal(got.inputs.pixel_values, want.inputs.pixel_values)
            assert len(pf._pending) <= 2
            res = answer_question(ad, p, "q", get_method("none"), SAMPLING, ENGINE, prepared=got)
            assert res == {**res, **stable(answer_question(ad, p, "q", get_method("none"), SAMPLING, ENGINE))}
        # a path that was not scheduled is prepared on the spot
        assert pf.take(paths[1]).key == video_key(ad, paths[1], SAMPLING, 16)
        # consecutive repeats: one decode, unless every question decodes its own (no reuse)
        pf.schedule([paths[0], paths[0], paths[1]])
        assert [p for p, _ in pf._pending] == [paths[0], paths[1]]
        pf.take(paths[0]), pf.take(paths[1])
        pf.schedule([paths[0], paths[0], paths[1]], repeats=True)
        assert [p for p, _ in pf._pending] == [paths[0], paths[0]]
        first, second = pf.take(paths[0]), pf.take(paths[0])
        assert first is not second and first.key == second.key and [p for p, _ in pf._pending] == [paths[1]]
    finally:
        pf.close()
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(ad, SAMPLING, depth=0)


@pytest.mark.parametrize("method", ["none", "adaretake", "retake"])
def test_offloaded_features_give_the_same_answers(adapters, sampled, arch, method):
    """engine.offload_features assembles the video's embeddings in CPU memory (every adapter's
    out_device path) and sends each chunk to the model: the same logits."""
    ad = adapters[arch]
    inputs, prompt = make_inputs(ad, sampled)
    cfg = EngineConfig(chunk_frames=4, max_context=prompt.num_text_tokens + 30, max_new_tokens=3)
    ref = Engine(ad, cfg).run(inputs, prompt, get_method(method))
    off = Engine(ad, EngineConfig(**{**vars(cfg), "offload_features": True}))
    feats, _ = off.encode(inputs)
    emb = feats.embeds if hasattr(feats, "embeds") else feats
    assert emb.device.type == "cpu"
    got = off.run(inputs, prompt, get_method(method))
    assert torch.equal(ref.first_logits, got.first_logits) and ref.tokens == got.tokens
    assert ref.kv_tokens_per_layer == got.kv_tokens_per_layer
