"""The input suite: decode + sampling (+ resize and preprocessing) of a long H.264 video in
frames/s, lmms-eval's readers vs ``retake.video``'s."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from .common import duration, long_video, tiny_checkpoint


def suite_input(args) -> dict:
    from lmms_eval.models.model_utils.load_video import load_video_decord, read_video

    from retake.models import load_adapter
    from retake.video import _read_decord, _read_pyav, load_video

    cache = os.path.join(tempfile.gettempdir(), "retake_bench_videos")
    os.makedirs(cache, exist_ok=True)
    path = long_video(os.path.join(cache, f"long_{args.video_seconds}s_360p_1slice.mp4"), args.video_seconds)
    ad = load_adapter(tiny_checkpoint(args), dtype="float32", device="cpu")
    n = args.input_frames
    fps = n / args.video_seconds  # so the sampling rule asks for exactly n frames
    threads = torch.get_num_threads()
    cases = {
        "lmms-eval read_video (PyAV)": lambda: read_video(path, num_frm=n),
        "lmms-eval load_video_decord": lambda: load_video_decord(path, n),
        "ours decode, decord": lambda: _read_decord(path, fps, n, 0)[0],
        "ours decode, PyAV, every frame decoded": lambda: _read_pyav(path, fps, n, 0, skip_unused=False)[0],
        "ours decode, PyAV, one decoder": lambda: _read_pyav(path, fps, n, 0, workers=1)[0],
        "ours decode, PyAV": lambda: _read_pyav(path, fps, n, 0)[0],
        "ours load_video (PyAV) + uint8 resize to 448": lambda: load_video(path, fps=fps, max_frames=n, backend="pyav").frames,
        "ours load_video (PyAV) + float32 resize to 448": lambda: load_video(
            path, fps=fps, max_frames=n, backend="pyav", resize="float32").frames,
        "ours load_video (PyAV) + resize + Qwen preprocessing": lambda: (
            lambda v: ad.prepare_video(v.frames, v.sampling_fps, v.timestamps))(
            load_video(path, fps=fps, max_frames=n, backend="pyav")),
        "ours load_video (decord) + uint8 resize to 448": lambda: load_video(path, fps=fps, max_frames=n, backend="decord").frames,
    }
    times = {k: [] for k in cases}
    frames = {}
    for rep in range(args.repeats + 1):
        for k, fn in cases.items():
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
            if rep:
                times[k].append(dt)
            frames[k] = int(out.num_frames if hasattr(out, "num_frames") else len(out))
    ref = statistics.median(times["lmms-eval read_video (PyAV)"])
    rows = [{"case": k, "seconds": statistics.median(v), "frames": frames[k],
             "frames_per_second": frames[k] / statistics.median(v), "speedup_vs_read_video": ref / statistics.median(v)}
            for k, v in times.items()]
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        info = {"codec": s.codec_context.name, "size": [s.width, s.height], "frames": s.frames,
                "fps": float(s.average_rate)}
    return {"video": info, "seconds_of_video": args.video_seconds, "sampled_frames": n, "threads": threads,
            "repeats": args.repeats, "rows": rows}


def table_input(r: dict) -> str:
    v = r["video"]
    lines = [f"{duration(r['seconds_of_video'])} {v['codec']} {v['size'][0]}x{v['size'][1]} at {v['fps']:g} fps "
             f"({v['frames']} frames, B-frames); {r['sampled_frames']} frames sampled uniformly; median of "
             f"{r['repeats']}.", "",
             "| reader | s | frames | frames/s | vs lmms-eval read_video |", "|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['case']} | {x['seconds']:.2f} | {x['frames']} | {x['frames_per_second']:.0f} | "
                     f"{x['speedup_vs_read_video']:.2f}x |")
    return "\n".join(lines)
