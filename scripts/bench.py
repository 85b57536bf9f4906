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
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the suites (scripts/bench_suites/) also when this file is loaded by path
    sys.path.insert(0, HERE)

from bench_suites import engine, gpu, memory, throughput  # noqa: E402
from bench_suites import input as input_suite  # noqa: E402
from bench_suites.common import ROOT, machine  # noqa: E402

# each suite's measurement and its Markdown table, in the order of --help
RUN = {"engine": (engine.suite_engine, engine.table_engine), "memory": (memory.suite_memory, memory.table_memory),
       "input": (input_suite.suite_input, input_suite.table_input),
       "throughput": (throughput.suite_throughput, throughput.table_throughput), "gpu": (gpu.suite_gpu, gpu.table_gpu)}
SUITES = tuple(RUN)
DEFAULT_SUITES = ("engine", "memory", "input", "throughput")  # gpu: on request (--suite gpu)


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
    ap.add_argument("--engine-cases", default="7b,w256", help=f"engine suite: some of {', '.join(engine.ENGINE_CASES)}, custom "
                    "(custom: --layers / --hidden / --heads / --kv-heads / --intermediate / --frames / --size)")
    ap.add_argument("--engine-chunks", default="32,8", help="engine suite: chunk sizes in frames")
    ap.add_argument("--keep", type=float, default=0.25, help="engine suite: the methods' share of the video")
    ap.add_argument("--methods", default=",".join(engine.METHODS))
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
        print(json.dumps(memory.memory_point(args)))
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
        suite, table_of = RUN[name]
        result = suite(args)
        result["wall_seconds"] = round(time.perf_counter() - t, 1)
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump({"header": header, **result}, f, indent=2)
        table = table_of(result)
        report.append(f"## {name}\n\n{table}\n")
        print(f"\n## {name}\n\n{table}\n")
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
