"""The engine suite: prefill of a plain transformers forward vs the chunked engine with ``none``,
``none`` with the guide and every method, split into components by the engine's part timers."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from .common import random_video, sync, tiny_checkpoint

METHODS = ("adaretake", "retake", "fastv", "pyramiddrop", "vlcache", "fitprune", "lookm", "sparsevlm", "snapkv",
           "pyramidkv", "h2o", "adakv")  # (uniform samples fewer frames before the engine: nothing to time here)

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
