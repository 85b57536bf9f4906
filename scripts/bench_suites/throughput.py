"""The throughput suite: samples/hour of harness cells with video reuse, prefetch and
question-unknown cache reuse off and on."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from .common import ROOT, duration, long_video, random_video, tiny_checkpoint


def _questions(videos: list[tuple[str, str]], per_video: int) -> list[str]:
    """``per_video`` questions on each ``(uid, video)``: the needle templates in turn (only the
    video's own question has a meaningful answer; accuracy is not what is measured here)."""
    from retake.harness.samples import Sample
    from retake.needle import OPTIONS, QUESTION_TYPES, QUESTIONS

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
    from retake.needle import write_benchmark

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
                       "engine": {"max_new_tokens": 4, "max_guide_tokens": None, "reforge_positions": False,
                                  "question_mode": mode, **engine},
                       "run": {"results_root": os.path.join(work, f"runs_{workload}_{reuse}{prefetch}{mode}{reuse_cache:d}"),
                               "limit": None, "overwrite": True, "reuse_videos": reuse, "prefetch": prefetch,
                               "reuse_cache": reuse_cache}}
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
             f"bench model, {duration(r['video_seconds'])} 360p H.264 videos sampled to {r['long_frames']} frames at "
             f"224 px, max_context 2048. Seconds are summed over the samples (input = decode + preprocessing in the "
             f"foreground or the prefetch thread). Question unknown: the video compressed without the "
             f"question (engine.question_mode=unknown), once per question or once per video (run.reuse_cache).", "",
             "| workload | setting | samples/h | vs off | evaluate s | input s | vision s | prefill s | waited on input | caches reused |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        extra = f" ({x['vs_per_question']:.2f}x per-question)" if "vs_per_question" in x else ""
        lines.append(f"| {x['workload']} | {x['setting']} | {x['samples_per_hour']:.0f}{extra} | {x['vs_off']:.2f}x | "
                     f"{x['evaluate_seconds']:.1f} | {x['input_seconds']:.1f} | {x['vision_seconds']:.1f} | "
                     f"{x['prefill_seconds']:.1f} | {100 * x['wait_share']:.1f} % | {x.get('caches_reused', 0)} |")
    return "\n".join(lines)
