"""make bench (first version): the engine at r = 1 vs one plain transformers forward.

Same random checkpoint, same frames, same position ids. Reports prefill time (median of
``--repeats``) and peak memory, and their ratios, all measured in this one run. Peak
memory of the first call, each mode in its own fresh subprocess: on CUDA the
allocator's peak above what was allocated before; on CPU the growth of the process's
peak resident memory (coarse: it includes one-time initialisation and allocator slack).

    python scripts/bench.py [--frames 128] [--size 224] [--chunk-frames 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def build(args):
    from retake.models import load_adapter
    from retake.tiny import write_tiny_model

    ckpt = os.path.join(tempfile.gettempdir(), f"retake_bench_{args.arch}_{args.layers}_{args.hidden}")
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        write_tiny_model(args.arch, ckpt, seed=0, layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads)
    ad = load_adapter(ckpt, dtype=args.dtype, device=args.device)
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (args.frames, 3, args.size, args.size), dtype=torch.uint8, generator=g)
    inputs = ad.prepare_video(frames, 2.0, [i / 2 for i in range(args.frames)])
    prompt = ad.build_prompt("Describe the video.", inputs)
    return ad, inputs, prompt


def measure(args) -> dict:
    """Runs in a subprocess: one mode, returns timings and peak memory."""
    from retake.engine import Engine, EngineConfig
    from retake.methods import get_method

    ad, inputs, prompt = build(args)
    cuda = ad.device.type == "cuda"

    def plain():
        ids = prompt.input_ids[None].to(ad.device)
        ad.model(
            input_ids=ids, pixel_values_videos=inputs.pixel_values.to(ad.device),
            video_grid_thw=torch.tensor([inputs.grid_thw], device=ad.device),
            position_ids=prompt.position_ids[:, None].to(ad.device),
            mm_token_type_ids=(ids == ad.video_token_id).long() * 2, logits_to_keep=1,
        )

    engine = Engine(ad, EngineConfig(chunk_frames=args.chunk_frames, max_context=10**9, max_new_tokens=1))

    def chunked():
        engine.run(inputs, prompt, get_method("none"))

    fn = plain if args.mode == "plain" else chunked
    if args.mode == "plain":
        # the plain model must use transformers' own SDPA path, not the engine's function
        ad.model.set_attn_implementation({"text_config": "sdpa"})
    times = []
    with torch.no_grad():
        # memory: the first call in this fresh process (on CPU, freed large blocks go back
        # to the OS, so the growth of the peak RSS over the call is the call's peak)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
        # time: the median of the following calls
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return {"mode": args.mode, "seconds": statistics.median(times), "peak_bytes": int(peak),
            "video_tokens": inputs.num_tokens, "tokens": int(prompt.input_ids.numel())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="qwen2_vl")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--chunk-frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default=None)
    ap.add_argument("--mode", choices=("plain", "engine"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(measure(args)))
        return 0
    res = {}
    for mode in ("plain", "engine"):
        cmd = [sys.executable, __file__, "--mode", mode] + [
            x for k, v in vars(args).items() if k != "mode" and v is not None for x in (f"--{k.replace('_', '-')}", str(v))
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return r.returncode
        res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    p, e = res["plain"], res["engine"]
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"model: random {args.arch}, {args.layers} layers, hidden {args.hidden}; {args.frames} frames at "
          f"{args.size}px -> {p['video_tokens']} video tokens ({p['tokens']} in all); chunk {args.chunk_frames} frames; "
          f"device {dev}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    print(f"{'':<24}{'plain forward':>15}{'engine (none)':>15}{'ratio':>8}")
    print(f"{'prefill seconds':<24}{p['seconds']:>15.4f}{e['seconds']:>15.4f}{e['seconds'] / p['seconds']:>8.3f}")
    ratio = e["peak_bytes"] / p["peak_bytes"] if p["peak_bytes"] > 0 else float("nan")
    print(f"{'peak memory MiB':<24}{p['peak_bytes'] / 2**20:>15.1f}{e['peak_bytes'] / 2**20:>15.1f}{ratio:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
