"""The memory suite: peak memory and KV bytes vs frames, ``none`` vs ``adaretake``, every
(frames, method) point in its own process (``scripts/bench.py --point``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from .common import BENCH, random_video, sync, tiny_checkpoint


def common_flags(args) -> list[str]:
    keys = ("arch", "layers", "hidden", "heads", "kv_heads", "size", "chunk_frames", "dtype", "device")
    return [x for k in keys if getattr(args, k) is not None for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def _hwm_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_point(args) -> dict:
    """One (frames, method) point, in this fresh process."""
    from retake.engine import Engine, EngineConfig
    from retake.methods import get_method
    from retake.models import load_adapter

    ad = load_adapter(tiny_checkpoint(args), dtype=args.dtype, device=args.device)
    dev = ad.device
    pixels, inputs, prompt = random_video(ad, args.point_frames, args.size)
    buffers = pixels.numel() * pixels.element_size() + inputs.pixel_values.numel() * inputs.pixel_values.element_size()
    context = args.context if args.point_method != "none" else 10**9
    engine = Engine(ad, EngineConfig(chunk_frames=args.chunk_frames, max_context=context, max_new_tokens=1))
    with torch.no_grad():
        # a first, small run pays one-time costs (kernels, thread pools); the second is measured
        _, w_inputs, w_prompt = random_video(ad, 2 * args.chunk_frames, args.size)
        engine.run(w_inputs, w_prompt, get_method(args.point_method))
        if dev.type == "cuda":
            sync(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
        else:
            before = _status_kib("VmRSS") * 1024
            _hwm_reset()
        t = time.perf_counter()
        out = engine.run(inputs, prompt, get_method(args.point_method))
        sync(dev)
        seconds = time.perf_counter() - t
        peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _status_kib("VmHWM") * 1024) - before
    hidden = ad.model.config.text_config.hidden_size
    return {"frames": args.point_frames, "method": args.point_method, "video_tokens": out.video_tokens,
            "kv_bytes": out.kv_cache_bytes, "peak_bytes": int(peak), "input_buffer_bytes": int(buffers),
            "features_bytes": out.video_tokens * hidden * torch.finfo(ad.dtype).bits // 8,
            "prefill_seconds": out.prefill_seconds, "seconds": seconds,
            "kind": "cuda allocator peak" if dev.type == "cuda" else "CPU peak RSS growth"}


def suite_memory(args) -> dict:
    points = []
    for method in ("none", "adaretake"):
        for frames in args.memory_frames:
            cmd = [sys.executable, BENCH, "--point", "--point-frames", str(frames), "--point-method", method,
                   "--context", str(args.context)] + common_flags(args)
            # allocations of 64 KiB and more are mapped and unmapped one by one, so the resident
            # set follows the live tensors (no allocator cache) and its high-water mark is the peak
            env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "MALLOC_MMAP_THRESHOLD_": "65536"}
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode:
                points.append({"frames": frames, "method": method, "error": r.stderr.strip().splitlines()[-1:]})
                continue
            points.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"  memory {method} {frames} frames: {points[-1]['peak_bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    plot_memory(points, os.path.join(args.out, "memory.png"))
    return {"context": args.context, "size": args.size, "chunk_frames": args.chunk_frames, "points": points}


def plot_memory(points, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, style in (("none", "o-"), ("adaretake", "s-")):
        pts = [p for p in points if p["method"] == method and "error" not in p]
        if not pts:
            continue
        x = [p["frames"] for p in pts]
        ax.plot(x, [p["peak_bytes"] / 2**20 for p in pts], style, label=f"{method}: peak")
        ax.plot(x, [p["kv_bytes"] / 2**20 for p in pts], style, alpha=0.4, label=f"{method}: KV cache")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("frames")
    ax.set_ylabel("MiB")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table_memory(r: dict) -> str:
    lines = [f"max_context {r['context']} for adaretake (none keeps everything); frames of {r['size']} px; "
             f"chunks of {r['chunk_frames']} frames. Input buffers = decoded frames + pixel values, allocated "
             "before the measured window.", "",
             "| method | frames | video tokens | KV MiB | features MiB | peak MiB | input buffers MiB | prefill s |",
             "|---|---|---|---|---|---|---|---|"]
    for p in r["points"]:
        if "error" in p:
            lines.append(f"| {p['method']} | {p['frames']} | failed: {' '.join(p['error'])} | | | | | |")
            continue
        lines.append(f"| {p['method']} | {p['frames']} | {p['video_tokens']} | {p['kv_bytes'] / 2**20:.1f} | "
                     f"{p['features_bytes'] / 2**20:.1f} | {p['peak_bytes'] / 2**20:.1f} | "
                     f"{p['input_buffer_bytes'] / 2**20:.1f} | {p['prefill_seconds']:.2f} |")
    for method in ("none", "adaretake"):
        pts = {p["frames"]: p for p in r["points"] if p["method"] == method and "error" not in p}
        if 256 in pts and max(pts) > 256:
            hi = max(pts)
            lines.append(f"\n{method}: peak at {hi} / at 256 frames = "
                         f"{pts[hi]['peak_bytes'] / max(1, pts[256]['peak_bytes']):.2f}")
    return "\n".join(lines)
