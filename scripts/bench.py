"""make bench: speed and memory of the engine and the evaluation pipeline, as ratios measured
side by side in one run.

Suites (``--suite``, comma-separated; default all):

- ``engine``: prefill of one plain transformers forward vs the chunked engine with ``none``
  (r = 1), ``none`` with the guide (what the guide costs) and every method at ``--keep`` of the
  video, each engine run split into vision / text / layers / attention / scoring / compaction /
  other by the engine's part timers (``retake.engine.profile``). Cases (``--engine-cases``):
  ``7b``, the language model at Qwen2.5-VL-7B's widths (2 layers, random weights, 64 frames:
  2048 video tokens), the headline; ``w256``, the width-256 model where scoring dominates;
  ``custom`` from the size flags. Each at every ``--engine-chunks`` size. One process, modes
  interleaved, median of ``--repeats``.
- ``memory``: peak memory and KV bytes vs frames at a fixed ``max_context``, ``none`` vs
  ``adaretake``; every (frames, method) point in its own process. Input buffers (decoded
  frames, pixel values) are allocated before the measured window and reported apart. CUDA:
  the allocator's peak; CPU: the growth of the peak resident set over the run (the kernel's
  high-water mark is reset right before it; allocations of 64 KiB and more bypass glibc's
  cache, so the resident set follows the live tensors). Writes ``memory.png``.
- ``input``: decode + sampling (+ resize and preprocessing) of long H.264 videos written here
  (10 min, 360p, 30 fps, B-frames) in frames/s: lmms-eval's ``read_video`` (PyAV) and
  ``load_video_decord`` vs ``retake.video.load_video`` with each backend, and the PyAV path
  with and without skipping unsampled non-reference pictures.
- ``throughput``: samples/hour of harness cells (lmms-eval's evaluator, the committed needle
  model) on videos with ``--questions-per-video`` questions each, with video reuse and
  prefetch off / prefetch only / both; and the time the model waited on a video.

Everything is written to ``--out`` (default ``results/bench``): ``<suite>.json``,
``report.md`` (command, machine, date, library versions and the tables) and the plots.

    python scripts/bench.py [--suite engine,memory,input,throughput] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITES = ("engine", "memory", "input", "throughput", "gpu")
DEFAULT_SUITES = ("engine", "memory", "input", "throughput")  # gpu: on request (--suite gpu)
# dense bf16 peak of the cards the gpu suite knows (vendor datasheets, TFLOP/s, no sparsity)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A6000": 155.0}
METHODS = ("adaretake", "retake", "fastv", "pyramiddrop", "vlcache", "fitprune", "lookm", "sparsevlm", "snapkv",
           "pyramidkv", "h2o", "adakv")  # (uniform samples fewer frames before the engine: nothing to time here)


# -- shared ---------------------------------------------------------------------------------

def tiny_checkpoint(args) -> str:
    from retake.tiny import write_tiny_model

    sizes = dict(layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                 intermediate=args.intermediate)
    ckpt = os.path.join(tempfile.gettempdir(), "retake_bench_" + "_".join(map(str, [args.arch, *sizes.values()])))
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        write_tiny_model(args.arch, ckpt, seed=0, **sizes)
    return ckpt


def random_video(ad, frames: int, size: int):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=g)
    inputs = ad.prepare_video(pixels, 2.0, [i / 2 for i in range(frames)])
    return pixels, inputs, ad.build_prompt("Describe the video.", inputs)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{names[0]} x {len(names)}" if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    import transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}


class Timed:
    """Wraps a method and adds up the seconds of its begin / observe / select calls."""

    def __init__(self, inner, device):
        self.inner, self.device, self.seconds = inner, device, 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _time(self, fn, *a):
        sync(self.device)
        t = time.perf_counter()
        out = fn(*a)
        sync(self.device)
        self.seconds += time.perf_counter() - t
        return out

    def begin(self, plan):
        return self._time(self.inner.begin, plan)

    def observe(self, view):
        return self._time(self.inner.observe, view)

    def select(self, chunk):
        return self._time(self.inner.select, chunk)


# -- engine -----------------------------------------------------------------------------------

# the engine suite's cases: the language model at Qwen2.5-VL-7B's widths (its per-token cost is
# what a user pays; a few layers suffice, every layer costs the same) and the width-256 model of
# the other suites, where layers cost almost nothing and scoring dominates
ENGINE_CASES = {
    "7b": {"label": "7B proportions: hidden 3584, 28 / 4 heads, MLP 18944 (Qwen2.5-VL-7B), 2 layers",
           "layers": 2, "hidden": 3584, "heads": 28, "kv_heads": 4, "intermediate": 18944, "frames": 64, "size": 224},
    "w256": {"label": "width 256, 8 layers (scoring-bound)", "layers": 8, "hidden": 256, "heads": 8, "kv_heads": 2,
             "intermediate": None, "frames": 128, "size": 224},
}
# the component split: (column, profile paths added, profile paths subtracted)
COMPONENTS = (
    ("vision", ("vision",), ()),
    ("text", ("prefix", "suffix", "decode"), ()),
    ("layers", ("chunks",), ("chunks/attention", "chunks/observe")),
    ("attention", ("chunks/attention",), ()),
    ("scoring", ("chunks/observe", "select", "begin", "scoring_pass"), ()),
    ("compaction", ("compaction",), ()),
)


def engine_case(args, name: str):
    """(label, a namespace of the model sizes and the frames) of an engine case; ``custom``: the
    command line's --layers / --hidden / --heads / --kv-heads / --intermediate / --frames / --size."""
    if name == "custom":
        spec = {"label": f"hidden {args.hidden}, {args.heads} / {args.kv_heads} heads, MLP "
                         f"{args.intermediate or 2 * args.hidden}, {args.layers} layers",
                "layers": args.layers, "hidden": args.hidden, "heads": args.heads, "kv_heads": args.kv_heads,
                "intermediate": args.intermediate, "frames": args.frames, "size": args.size}
    elif name in ENGINE_CASES:
        spec = ENGINE_CASES[name]
    else:
        raise SystemExit(f"unknown engine case {name!r}; valid: {', '.join([*ENGINE_CASES, 'custom'])}")
    return spec["label"], argparse.Namespace(**{**vars(args), **{k: v for k, v in spec.items() if k != "label"}})


def components(prof, total: float) -> dict:
    """A profiled run's seconds per :data:`COMPONENTS` column, and ``other`` (the rest of ``total``)."""
    seconds = dict(prof.seconds)
    out = {name: sum(seconds.get(k, 0.0) for k in plus) - sum(seconds.get(k, 0.0) for k in minus)
           for name, plus, minus in COMPONENTS}
    top = sum(v for k, v in seconds.items() if "/" not in k)
    out["other"] = max(0.0, total - top)
    return out


def suite_engine(args) -> dict:
    """Every case of ``--engine-cases`` at every chunk size of ``--engine-chunks``."""
    runs = []
    for name in [c for c in args.engine_cases.split(",") if c]:
        label, case = engine_case(args, name)
        for chunk in [int(c) for c in str(args.engine_chunks).split(",") if c]:
            case.chunk_frames = chunk
            print(f"  engine {name}, chunks of {chunk} frames", file=sys.stderr)
            runs.append({"case": name, "label": label, **engine_run(case)})
    return {"runs": runs}


def engine_run(args) -> dict:
    from dataclasses import dataclass

    from retake.engine import Engine, EngineConfig
    from retake.engine.profile import profiling
    from retake.methods import get_method
    from retake.methods.none import NoCompression
    from retake.models import load_adapter

    @dataclass
    class GuideOnly(NoCompression):
        """``none`` with the guide appended to every chunk (and dropped): what the guide costs."""

        name = "none + guide"
        uses_guide = True

    ad = load_adapter(tiny_checkpoint(args), dtype=args.dtype, device=args.device)
    dev = ad.device
    _, inputs, prompt = random_video(ad, args.frames, args.size)
    budget = prompt.num_text_tokens + round(args.keep * inputs.num_tokens)

    def plain():
        ids = prompt.input_ids[None].to(dev)
        ad.model.set_attn_implementation({"text_config": "sdpa"})
        try:
            ad.model(input_ids=ids, pixel_values_videos=inputs.pixel_values.to(dev),
                     video_grid_thw=torch.tensor([inputs.grid_thw], device=dev),
                     position_ids=prompt.position_ids[:, None].to(dev),
                     mm_token_type_ids=(ids == ad.video_token_id).long() * 2, logits_to_keep=1)
        finally:
            ad.model.set_attn_implementation({"text_config": "retake_sdpa"})

    def run(name, context):
        method = GuideOnly() if name == "none + guide" else get_method(name)
        engine = Engine(ad, EngineConfig(chunk_frames=args.chunk_frames, max_context=context, max_new_tokens=1))
        with profiling([dev]) as prof:
            out = engine.run(inputs, prompt, method)
        return out, prof

    modes = {"plain forward": None, "engine none (r = 1)": ("none", 10**9), "engine none + guide": ("none + guide", 10**9)}
    modes.update({f"engine {m}": (m, budget) for m in METHODS if m in args.methods})
    times = {k: [] for k in modes}
    parts = {k: [] for k in modes}
    info = {}
    with torch.no_grad():
        for rep in range(args.repeats + 1):  # the first round warms up
            for k, spec in modes.items():
                sync(dev)
                t = time.perf_counter()
                if spec is None:
                    plain()
                else:
                    out, prof = run(*spec)
                    info[k] = {"kv_tokens_mean": sum(out.kv_tokens_per_layer) / len(out.kv_tokens_per_layer)}
                sync(dev)
                if rep:
                    times[k].append(time.perf_counter() - t)
                    if spec is not None:
                        parts[k].append(components(prof, times[k][-1]))
        # the 5 % question on its own: plain and `none` alternated, nothing else in between
        pair = {"plain": [], "none": []}
        for rep in range(2 * args.repeats + 1):
            for k in ("plain", "none"):
                sync(dev)
                t = time.perf_counter()
                plain() if k == "plain" else run("none", 10**9)
                sync(dev)
                if rep:
                    pair[k].append(time.perf_counter() - t)
    paired = {k: statistics.median(v) for k, v in pair.items()}
    base = statistics.median(times["plain forward"])
    none = statistics.median(times["engine none (r = 1)"])
    rows = []
    for k in modes:
        s = statistics.median(times[k])
        split = {c: statistics.median(p[c] for p in parts[k]) for c in parts[k][0]} if parts[k] else {}
        rows.append({"mode": k, "seconds": s, "vs_plain": s / base, "vs_none": s / none,
                     "method_seconds": split.get("scoring", 0.0), "method_share": split.get("scoring", 0.0) / s,
                     "components": split, **info.get(k, {})})
    guide_tokens = prompt.input_ids.shape[0] - prompt.video_end
    steps = args.chunk_frames // inputs.frames_per_step
    chunk_tokens = inputs.step_token_offsets[min(steps, inputs.num_steps)] - inputs.step_token_offsets[0]
    guided = statistics.median(times["engine none + guide"])
    return {"frames": args.frames, "size": args.size, "video_tokens": inputs.num_tokens,
            "text_tokens": prompt.num_text_tokens, "keep": args.keep, "max_context": budget,
            "chunk_frames": args.chunk_frames, "repeats": args.repeats, "rows": rows,
            "guide": {"tokens": guide_tokens, "chunk_tokens": chunk_tokens, "token_share": guide_tokens / chunk_tokens,
                      "seconds": guided - none, "share_of_none": (guided - none) / none},
            "paired": {"plain_seconds": paired["plain"], "none_seconds": paired["none"],
                       "none_vs_plain": paired["none"] / paired["plain"], "rounds": 2 * args.repeats}}


def table_engine(r: dict) -> str:
    out = []
    for run in r["runs"]:
        g = run["guide"]
        lines = [f"### {run['label']}, chunks of {run['chunk_frames']} frames", "",
                 f"{run['frames']} frames at {run['size']} px: {run['video_tokens']} video + {run['text_tokens']} text "
                 f"tokens; methods at max_context {run['max_context']} (r = {run['keep']}); median of {run['repeats']}. "
                 f"Guide: {g['tokens']} tokens per chunk of {g['chunk_tokens']} ({100 * g['token_share']:.1f} %), "
                 f"measured {g['seconds']:.3f} s = {100 * g['share_of_none']:.1f} % of none's prefill "
                 f"(none + guide - none). Seconds per component (layers: the chunks' forward outside "
                 f"attention and the method's reading; text: prefix, suffix, decoding).", "",
                 "| mode | prefill s | / plain | / none | vision | text | layers | attention | scoring | compaction | other | scoring share |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in run["rows"]:
            c = x.get("components") or {}
            cols = " | ".join(f"{c[k]:.3f}" if k in c else "-" for k in
                              ("vision", "text", "layers", "attention", "scoring", "compaction", "other"))
            lines.append(f"| {x['mode']} | {x['seconds']:.3f} | {x['vs_plain']:.2f} | {x['vs_none']:.2f} | {cols} | "
                         f"{100 * x['method_share']:.1f} % |")
        p = run["paired"]
        lines.append(f"\nplain forward and engine none alternated alone ({p['rounds']} rounds): "
                     f"{p['plain_seconds']:.3f} s vs {p['none_seconds']:.3f} s = {p['none_vs_plain']:.3f}x")
        out.append("\n".join(lines))
    return "\n\n".join(out)


# -- memory -----------------------------------------------------------------------------------

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
            cmd = [sys.executable, __file__, "--point", "--point-frames", str(frames), "--point-method", method,
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


# -- input ------------------------------------------------------------------------------------

def long_video(path: str, seconds: int, width: int = 640, height: int = 360, fps: int = 30) -> str:
    """A moving-pattern H.264 video (x264 defaults of preset 'veryfast': B-frames, b-pyramid),
    one slice per picture as in camera and web video (frame-threaded encoding; sliced-thread
    encoding would cut every picture into one slice per thread, which slice-threaded decoding
    then parallelises unlike real files)."""
    import av

    if os.path.exists(path):
        return path
    tmp = path + ".part.mp4"
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(tmp, mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.thread_type = "FRAME"  # libx264: no sliced threads, so one slice per picture
        s.options = {"preset": "veryfast", "crf": "23"}
        for t in range(seconds * fps):
            img = np.empty((height, width, 3), dtype=np.uint8)
            img[..., 0] = (xx + 3 * t) % 256
            img[..., 1] = (yy + t) % 256
            img[..., 2] = ((xx + yy) // 4 + 2 * t) % 256
            x0, y0 = (7 * t) % (width - 80), (3 * t) % (height - 80)
            img[y0 : y0 + 80, x0 : x0 + 80] = (255, 255, 255) if (t // fps) % 2 else (0, 0, 0)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    os.replace(tmp, path)
    return path


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


def _duration(seconds: int) -> str:
    return f"{seconds // 60}-min" if seconds % 60 == 0 else f"{seconds}-s"


def table_input(r: dict) -> str:
    v = r["video"]
    lines = [f"{_duration(r['seconds_of_video'])} {v['codec']} {v['size'][0]}x{v['size'][1]} at {v['fps']:g} fps "
             f"({v['frames']} frames, B-frames); {r['sampled_frames']} frames sampled uniformly; median of "
             f"{r['repeats']}.", "",
             "| reader | s | frames | frames/s | vs lmms-eval read_video |", "|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['case']} | {x['seconds']:.2f} | {x['frames']} | {x['frames_per_second']:.0f} | "
                     f"{x['speedup_vs_read_video']:.2f}x |")
    return "\n".join(lines)


# -- throughput -------------------------------------------------------------------------------

def _questions(videos: list[tuple[str, str]], per_video: int) -> list[str]:
    """``per_video`` questions on each ``(uid, video)``: the needle templates in turn (only the
    video's own question has a meaningful answer; accuracy is not what is measured here)."""
    from retake.harness.samples import Sample
    from retake.synthetic import OPTIONS, QUESTION_TYPES, QUESTIONS

    out = []
    for k, (uid, video) in enumerate(videos):
        for q in range(per_video):
            t = QUESTION_TYPES[(k + q) % len(QUESTION_TYPES)]
            out.append(json.dumps(Sample(uid=f"{uid}-q{q:02d}", video=video, question=QUESTIONS[t], options=OPTIONS[t],
                                         answer="A", meta={"question_type": t}).to_dict()))
    return out


def longest_question(model: str, samples: list[str]) -> int:
    """The most tokens a question of ``samples`` adds to the prompt without one, on ``model``
    (``engine.question_tokens`` that makes question mode unknown budget as mode aware does)."""
    from retake.harness.samples import Sample, format_prompt
    from retake.models import load_adapter

    ad = load_adapter(model, dtype="float32", device="cpu")
    _, inputs, _ = random_video(ad, 4, 56)
    empty = ad.build_prompt("", inputs).num_text_tokens
    return max(ad.build_prompt(format_prompt(Sample.from_dict(json.loads(x))), inputs).num_text_tokens - empty
               for x in samples)


def suite_throughput(args) -> dict:
    """Harness cells (lmms-eval's evaluator, one process) with ``--questions-per-video``
    questions on every video, reuse / prefetch off and on, on two workloads:

    - ``needle``: the committed needle model on 32-s, 56-px needle videos (model-bound);
    - ``long``: the random bench model on ``--video-seconds`` long 360p H.264 videos sampled
      to ``--long-frames`` frames at 224 px (decode-bound, as hour-long LVBench videos are)."""
    from retake.harness.runner import run_cell
    from retake.synthetic import write_benchmark

    work = tempfile.mkdtemp(prefix="retake_bench_tp_")
    try:
        workloads = {}
        root = write_benchmark(os.path.join(work, "needle"), args.videos, seed=1)
        videos = [(json.loads(x)["uid"], json.loads(x)["video"]) for x in open(os.path.join(root, "samples.jsonl"))]
        workloads["needle"] = (root, os.path.join(ROOT, "checkpoints", "needle_qwen2_5_vl"),
                               {"max_frames": 512, "max_long_side": 448}, {"max_context": 270, "chunk_frames": 16})
        long_root = os.path.join(work, "long")
        os.makedirs(os.path.join(long_root, "videos"))
        source = long_video(os.path.join(tempfile.gettempdir(), "retake_bench_videos",
                                         f"long_{args.video_seconds}s_360p_1slice.mp4"), args.video_seconds)
        long_videos = []
        for k in range(args.videos):  # one file per video: entries are keyed by path
            rel = os.path.join("videos", f"long{k}.mp4")
            shutil.copy(source, os.path.join(long_root, rel))
            long_videos.append((f"long-{k}", rel))
        workloads["long"] = (long_root, tiny_checkpoint(args), {"max_frames": args.long_frames, "max_long_side": 224},
                             {"max_context": 2048, "chunk_frames": 32})
        samples = {"needle": _questions(videos, args.questions_per_video),
                   "long": _questions(long_videos, args.questions_per_video)}
        for name, (data, _, _, _) in workloads.items():
            with open(os.path.join(data, "samples.jsonl"), "w") as f:
                f.write("\n".join(samples[name]) + "\n")
        question_tokens = {name: longest_question(model, samples[name]) for name, (_, model, _, _) in workloads.items()}
        # (reuse_videos, prefetch, question_mode, reuse_cache)
        settings = {"warm-up": (0, 0, "aware", False), "reuse off, prefetch off": (0, 0, "aware", False),
                    "prefetch only": (0, 1, "aware", False), "reuse + prefetch": (1, 1, "aware", False),
                    "question unknown, prefill per question": (1, 1, "unknown", False),
                    "question unknown, compressed cache reused": (1, 1, "unknown", True)}
        rows = []
        for workload, (data, model, sampling, engine) in workloads.items():
            for name, (reuse, prefetch, mode, reuse_cache) in settings.items():  # warm-up: one-time costs, not reported
                cfg = {"model": {"name": f"bench_{workload}", "pretrained": model, "dtype": "float32",
                                 "attn_implementation": "sdpa", "rope_scaling_factor": None, "device": "cpu"},
                       "method": {"name": args.throughput_method, "params": {}},
                       "dataset": {"name": "needle", "data_root": data},
                       "sampling": {"fps": 2.0, "backend": "pyav", **sampling},
                       "engine": {"max_new_tokens": 4, "max_guide_tokens": None, "reforge_positions": False, **engine},
                       "run": {"results_root": os.path.join(work, f"runs_{workload}_{reuse}{prefetch}{mode}{reuse_cache:d}"),
                               "limit": None, "overwrite": True, "reuse_videos": reuse, "prefetch": prefetch,
                               "question_mode": mode, "reuse_cache": reuse_cache}}
                if name == "warm-up":
                    cfg["run"]["limit"] = 2
                if mode == "unknown":  # the budget the same as with the question known
                    cfg["engine"]["question_tokens"] = question_tokens[workload]
                m = run_cell(cfg)
                if m["failures"]:
                    raise RuntimeError(f"throughput {workload} / {name}: {len(m['failures'])} samples failed, "
                                       f"e.g. {m['failures'][0]['error']}")
                if name == "warm-up":
                    continue
                rows.append({"workload": workload, "setting": name, **m["throughput"], "samples": m["metrics"]["num_samples"],
                             "accuracy": m["metrics"]["accuracy"]})
                print(f"  throughput {workload} / {name}: {rows[-1]['samples_per_hour']:.0f} samples/h", file=sys.stderr)
        for r in rows:
            base = next(x for x in rows if x["workload"] == r["workload"])["samples_per_hour"]
            r["vs_off"] = r["samples_per_hour"] / base
            # without prefetch the model waits for every decode (input_seconds, in the foreground)
            waited = r["rank0_input_wait_seconds"] if r["setting"] != "reuse off, prefetch off" else r["input_seconds"]
            r["wait_share"] = waited / r["evaluate_seconds"]
            if r["setting"] == "question unknown, compressed cache reused":  # against compressing per question
                per_q = next(x for x in rows if x["workload"] == r["workload"]
                             and x["setting"] == "question unknown, prefill per question")
                r["vs_per_question"] = r["samples_per_hour"] / per_q["samples_per_hour"]
        return {"videos": args.videos, "questions_per_video": args.questions_per_video, "method": args.throughput_method,
                "video_seconds": args.video_seconds, "long_frames": args.long_frames, "rows": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table_throughput(r: dict) -> str:
    lines = [f"{r['videos']} videos x {r['questions_per_video']} questions, {r['method']}, one process, lmms-eval's "
             f"evaluator. needle: the committed needle model, 32-s 56-px videos, max_context 270. long: the random "
             f"bench model, {_duration(r['video_seconds'])} 360p H.264 videos sampled to {r['long_frames']} frames at "
             f"224 px, max_context 2048. Seconds are summed over the samples (input = decode + preprocessing in the "
             f"foreground or the prefetch thread). Question unknown: the video compressed without the "
             f"question (run.question_mode=unknown), once per question or once per video (run.reuse_cache).", "",
             "| workload | setting | samples/h | vs off | evaluate s | input s | vision s | prefill s | waited on input | caches reused |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        extra = f" ({x['vs_per_question']:.2f}x per-question)" if "vs_per_question" in x else ""
        lines.append(f"| {x['workload']} | {x['setting']} | {x['samples_per_hour']:.0f}{extra} | {x['vs_off']:.2f}x | "
                     f"{x['evaluate_seconds']:.1f} | {x['input_seconds']:.1f} | {x['vision_seconds']:.1f} | "
                     f"{x['prefill_seconds']:.1f} | {100 * x['wait_share']:.1f} % | {x.get('caches_reused', 0)} |")
    return "\n".join(lines)


# -- gpu: the full-size architecture with random weights ---------------------------------------

QWEN2_5_VL_7B = {  # Qwen/Qwen2.5-VL-7B-Instruct's config.json
    "text": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                   window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
}


def full_size_config(layers: int | None = None, vision_depth: int | None = None):
    """Qwen2.5-VL-7B's architecture with the tiny tokenizer's special-token ids (the vocabulary
    keeps the real size, so embedding and head bytes are the real ones). ``layers`` /
    ``vision_depth`` shrink only the depth (tests)."""
    from transformers import Qwen2_5_VLConfig

    from retake.tiny import SPECIAL_TOKENS, tiny_tokenizer

    tok = tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(QWEN2_5_VL_7B["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    vision = dict(QWEN2_5_VL_7B["vision"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    if layers:
        text["num_hidden_layers"] = layers
    if vision_depth:
        vision["depth"] = vision_depth
        vision["fullatt_block_indexes"] = [i for i in vision["fullatt_block_indexes"] if i < vision_depth] or [vision_depth - 1]
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    return cfg, tok


def build_random(cfg, tok, device: str, dtype: torch.dtype, workdir: str):
    """The model of ``cfg`` with transformers' random init, made on ``device`` in ``dtype``, and
    its adapter (tokenizer / preprocessor files from a tiny checkpoint in ``workdir``)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from retake.engine.attention import ATTENTION_NAME, register_attention
    from retake.models.qwen2_vl import QwenVLAdapter
    from retake.tiny import write_tiny_model

    write_tiny_model("qwen2_5_vl", workdir, seed=0)
    register_attention()
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    model.set_attn_implementation({"text_config": ATTENTION_NAME, "vision_config": "sdpa", "": "sdpa"})
    return QwenVLAdapter.from_loaded(model, tok, workdir)


def synthetic_inputs(ad, frames: int, size: int, seed: int = 0):
    """VideoInputs of ``frames`` frames at ``size`` px with random normalised pixel values, made
    directly (decoding and preprocessing are measured by the input suite, not here)."""
    from retake.models import VideoInputs

    small = ad.prepare_video(torch.zeros(2, 3, size, size, dtype=torch.uint8), 2.0, [0.0, 0.5])
    steps = frames // small.frames_per_step
    rows = small.pixel_values.shape[0]
    g = torch.Generator().manual_seed(seed)
    pixels = torch.empty(steps * rows, small.pixel_values.shape[1], dtype=torch.bfloat16)
    for a in range(0, pixels.shape[0], 1 << 16):
        pixels[a : a + (1 << 16)] = torch.randn(pixels[a : a + (1 << 16)].shape, generator=g).to(torch.bfloat16)
    tps = small.tokens_per_step
    return VideoInputs(pixel_values=pixels, grid_thw=(steps, *small.grid_thw[1:]), num_frames=frames,
                       frames_per_step=small.frames_per_step, tokens_per_step=tps,
                       step_token_offsets=[k * tps for k in range(steps + 1)], sampling_fps=2.0,
                       timestamps=[k / 2.0 for k in range(frames)])


class Recording(Timed):
    """Timed, and records what each chunk fed and kept per layer (for the FLOP count)."""

    def begin(self, plan):
        self.plan, self.fed, self.kept = plan, [], []
        return super().begin(plan)

    def select(self, chunk):
        sel = super().select(chunk)
        n = self.plan.fed(chunk)
        self.fed.append(n)
        from retake.methods import LayerKeep

        # entries per KV head (a [H_kv, k] index keeps k in every head)
        self.kept.append([n if k is None else (k if isinstance(k, LayerKeep) else LayerKeep(k)).num_entries for k in sel])
        return sel


def prefill_flops(cfg, prompt, video, rec: Recording, guide_tokens: int, fast_paths: bool = True) -> dict:
    """Matmul + attention FLOPs of one engine prefill (vision tower, prefix, every chunk with its
    guide, suffix), from the sizes and what each chunk kept in each layer. Elementwise ops,
    norms and RoPE are left out. Attention: 2 x 2 x heads x head_dim per (query, key) pair.
    ``fast_paths``: the guide's rows skip the last layer's MLP (the prefix run in the first
    chunk's forward costs the same FLOPs as run alone)."""
    t, v = cfg.text_config, cfg.vision_config
    d, hd, L = t.hidden_size, t.hidden_size // t.num_attention_heads, t.num_hidden_layers
    kv = t.num_key_value_heads * hd
    per_token = 2 * (d * (d + 2 * kv) + d * d + 3 * d * t.intermediate_size)  # qkv, o, gate/up/down
    skipped = 2 * 3 * d * t.intermediate_size * guide_tokens if fast_paths else 0  # per chunk

    def attn(q, k):  # q queries after k - q cached keys, causal among themselves
        return 4 * d * (q * (k - q) + q * (q + 1) // 2)

    llm = 0
    cache = [prompt.video_start] * L
    llm += L * per_token * prompt.video_start + sum(attn(prompt.video_start, prompt.video_start) for _ in range(L))
    for n, kept in zip(rec.fed, rec.kept):
        q = n + guide_tokens
        llm += L * per_token * q + sum(attn(q, cache[layer] + q) for layer in range(L)) - skipped
        cache = [c + k for c, k in zip(cache, kept)]
    suffix = prompt.suffix_len
    llm += L * per_token * suffix + sum(attn(suffix, cache[layer] + suffix) for layer in range(L))
    llm += 2 * d * t.vocab_size  # the first token's logits
    # vision: per grid step, P patches through `depth` blocks (window attention except the
    # full-attention blocks), then the 2x2 merger
    steps, gh, gw = video.grid_thw
    P = gh * gw
    D, F = v.hidden_size, v.intermediate_size
    window = (v.window_size // v.patch_size) ** 2
    full = len(v.fullatt_block_indexes)
    block = 2 * P * (3 * D * D + D * D + 3 * D * F)
    vis_attn = 4 * D * P * (full * P + (v.depth - full) * min(P, window))
    merger = 2 * (P // 4) * (4 * D * 4 * D + 4 * D * v.out_hidden_size)
    patch = 2 * P * (3 * v.temporal_patch_size * v.patch_size ** 2) * D
    vision = steps * (v.depth * block + vis_attn + merger + patch)
    return {"llm": llm, "vision": vision, "total": llm + vision}


def suite_gpu(args) -> dict:
    """Full-size Qwen2.5-VL-7B (random bf16 weights): time to first token and peak memory vs
    frames, ``adaretake`` at ``--gpu-context`` vs ``none``; the FLOP-floor fraction; the largest
    frame count that fits (doubling from the last that ran)."""
    from retake.engine import Engine, EngineConfig
    from retake.methods import get_method

    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    cfg, tok = full_size_config(args.gpu_layers, args.gpu_vision_depth)
    work = tempfile.mkdtemp(prefix="retake_bench_gpu_")
    t = time.perf_counter()
    ad = build_random(cfg, tok, str(dev), dtype, work)
    build_seconds = time.perf_counter() - t
    weights = sum(p.numel() * p.element_size() for p in ad.model.parameters())
    params = sum(p.numel() for p in ad.model.parameters())
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak_tflops = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)

    def one(frames: int, method: str) -> dict:
        video = synthetic_inputs(ad, frames, args.gpu_size)
        prompt = ad.build_prompt("Describe the video in detail.", video)
        context = args.gpu_context if method != "none" else 10**9
        rec = Recording(get_method(method), dev)
        row = {"frames": frames, "method": method, "video_tokens": video.num_tokens}
        try:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            out = Engine(ad, EngineConfig(chunk_frames=args.chunk_frames, max_context=context, max_new_tokens=1)).run(
                video, prompt, rec)
        except torch.OutOfMemoryError as e:
            row["error"] = f"out of memory ({str(e).splitlines()[0][:120]})"
            return row
        finally:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        g = prompt.input_ids.shape[0] - prompt.video_end if get_method(method).uses_guide else 0
        flops = prefill_flops(cfg, prompt, video, rec, g)
        row.update(ttft_seconds=out.prefill_seconds, vision_seconds=out.vision_seconds,
                   peak_bytes=out.peak_memory_bytes, kv_bytes=out.kv_cache_bytes, flops=flops["total"],
                   llm_flops=flops["llm"], vision_flops=flops["vision"], method_seconds=rec.seconds,
                   achieved_tflops=flops["total"] / out.prefill_seconds / 1e12)
        if peak_tflops:
            row["floor_fraction"] = row["achieved_tflops"] / peak_tflops
        return row

    rows = []
    for frames in args.gpu_frames:
        for method in ("adaretake", "none"):
            rows.append(one(frames, method))
            r = rows[-1]
            print(f"  gpu {method} {frames} frames: " + (r.get("error") or
                  f"TTFT {r['ttft_seconds']:.1f} s, peak {r['peak_bytes'] / 2**30 if r['peak_bytes'] else 0:.1f} GiB"),
                  file=sys.stderr)
    largest = None
    if args.gpu_search:
        frames = max([r["frames"] for r in rows if r["method"] == "adaretake" and "error" not in r], default=None)
        while frames is not None and frames * 2 <= args.gpu_search:
            r = one(frames * 2, "adaretake")
            rows.append(r)
            if "error" in r:
                break
            frames *= 2
        largest = frames
    shutil.rmtree(work, ignore_errors=True)
    return {"device_name": name, "params": params, "weight_bytes": weights, "build_seconds": build_seconds,
            "peak_tflops": peak_tflops, "context": args.gpu_context, "size": args.gpu_size,
            "chunk_frames": args.chunk_frames, "layers": cfg.text_config.num_hidden_layers,
            "vision_depth": cfg.vision_config.depth, "largest_frames": largest, "rows": rows}


def table_gpu(r: dict) -> str:
    lines = [f"Qwen2.5-VL-7B architecture ({r['layers']} LLM layers, {r['vision_depth']} vision blocks; "
             f"{r['params'] / 1e9:.2f} B parameters, {r['weight_bytes'] / 2**30:.1f} GiB), random weights, on "
             f"{r['device_name']}; frames of {r['size']} px, chunks of {r['chunk_frames']} frames; adaretake at "
             f"max_context {r['context']}. FLOP floor = counted matmul + attention FLOPs / "
             f"{r['peak_tflops'] or '?'} TFLOP/s.", "",
             "| method | frames | video tokens | TTFT s | vision s | peak GiB | KV GiB | TFLOP counted | TFLOP/s | of floor |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if "error" in x:
            lines.append(f"| {x['method']} | {x['frames']} | {x['video_tokens']} | {x['error']} | | | | | | |")
            continue
        peak = f"{x['peak_bytes'] / 2**30:.1f}" if x["peak_bytes"] else "-"
        frac = f"{100 * x['floor_fraction']:.0f} %" if "floor_fraction" in x else "-"
        lines.append(f"| {x['method']} | {x['frames']} | {x['video_tokens']} | {x['ttft_seconds']:.2f} | "
                     f"{x['vision_seconds']:.2f} | {peak} | {x['kv_bytes'] / 2**30:.2f} | {x['flops'] / 1e12:.1f} | "
                     f"{x['achieved_tflops']:.1f} | {frac} |")
    if r["largest_frames"]:
        lines.append(f"\nLargest frame count that ran (doubling): {r['largest_frames']}")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------

def common_flags(args) -> list[str]:
    keys = ("arch", "layers", "hidden", "heads", "kv_heads", "size", "chunk_frames", "dtype", "device")
    return [x for k in keys if getattr(args, k) is not None for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default=",".join(DEFAULT_SUITES), help=f"some of {', '.join(SUITES)}")
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    ap.add_argument("--arch", default="qwen2_vl")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=None, help="MLP width (default 2 x hidden)")
    ap.add_argument("--frames", type=int, default=128, help="engine suite (custom case) and memory suite: frames")
    ap.add_argument("--size", type=int, default=224, help="frame side in pixels (engine, memory)")
    ap.add_argument("--chunk-frames", type=int, default=32, help="chunk size of the memory and gpu suites")
    ap.add_argument("--engine-cases", default="7b,w256", help=f"engine suite: some of {', '.join(ENGINE_CASES)}, custom "
                    "(custom: --layers / --hidden / --heads / --kv-heads / --intermediate / --frames / --size)")
    ap.add_argument("--engine-chunks", default="32,8", help="engine suite: chunk sizes in frames")
    ap.add_argument("--keep", type=float, default=0.25, help="engine suite: the methods' share of the video")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--memory-frames", default="64,128,256,512,1024,2048")
    ap.add_argument("--context", type=int, default=2048, help="memory suite: max_context of the compressed runs")
    ap.add_argument("--video-seconds", type=int, default=600)
    ap.add_argument("--input-frames", type=int, default=256)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--questions-per-video", type=int, default=10)
    ap.add_argument("--long-frames", type=int, default=128, help="throughput suite: frames sampled from the long videos")
    ap.add_argument("--throughput-method", default="adaretake")
    ap.add_argument("--gpu-frames", default="256,1024,2048,4096")
    ap.add_argument("--gpu-size", type=int, default=448)
    ap.add_argument("--gpu-context", type=int, default=16384)
    ap.add_argument("--gpu-search", type=int, default=16384, help="gpu suite: double frames up to this (0: no search)")
    ap.add_argument("--gpu-layers", type=int, default=None, help="gpu suite: fewer LLM layers (tests)")
    ap.add_argument("--gpu-vision-depth", type=int, default=None, help="gpu suite: fewer vision blocks (tests)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="gpu suite: the card's dense bf16 peak")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default=None)
    ap.add_argument("--point", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--point-frames", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--point-method", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.methods = [m for m in args.methods.split(",") if m]
    args.memory_frames = [int(f) for f in args.memory_frames.split(",")]
    args.gpu_frames = [int(f) for f in args.gpu_frames.split(",")]
    if args.point:
        print(json.dumps(memory_point(args)))
        return 0
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(unknown)}; valid: {', '.join(SUITES)}")
    os.makedirs(args.out, exist_ok=True)
    header = {"command": "python scripts/bench.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "device": args.device, **machine()}
    report = [f"# bench report\n\n- command: `{header['command']}`\n- date: {header['date']}\n"
              f"- machine: {header['cpu']} ({header['cores']} cores), GPU: {header['gpu'] or 'none'}; device {args.device}\n"
              f"- python {header['python']}, torch {header['torch']}, transformers {header['transformers']}, "
              f"{header['threads']} threads\n- model (engine, memory): random {args.arch}, {args.layers} layers, "
              f"hidden {args.hidden}, {args.heads} / {args.kv_heads} heads, dtype {args.dtype}\n"]
    for name in suites:
        print(f"[bench] {name}", file=sys.stderr)
        t = time.perf_counter()
        result = globals()[f"suite_{name}"](args)
        result["wall_seconds"] = round(time.perf_counter() - t, 1)
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump({"header": header, **result}, f, indent=2)
        table = globals()[f"table_{name}"](result)
        report.append(f"## {name}\n\n{table}\n")
        print(f"\n## {name}\n\n{table}\n")
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
