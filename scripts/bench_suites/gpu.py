"""The gpu suite: full-size Qwen2.5-VL-7B (random bf16 weights), time to first token and peak
memory vs frames, the FLOP-floor fraction and the largest frame count that fits."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time

import torch

from .flops import Recording, prefill_flops
from .fullsize import build_random, full_size_config, synthetic_inputs

# dense bf16 peak of the cards the gpu suite knows (vendor datasheets, TFLOP/s, no sparsity)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A6000": 155.0}


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
