"""make demo: offline, end to end, on tiny random checkpoints and generated videos.

Writes two tiny checkpoints (Qwen2-VL, Qwen2.5-VL) and a generated video, answers a
question about it with the real ``retake ask`` command for every method at one KV budget
(``--max-context``), and prints a table. The tiny models are random, so the answers are
noise; the point is that every stage runs and every method meets the budget. Usage:

    python scripts/demo.py --out demo_out
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from tqdm import tqdm

from retake.tiny import TINY_ARCHS, write_tiny_model
from retake.video import write_test_video


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--methods", default="none,uniform,adaretake,retake")
    ap.add_argument("--max-context", type=int, default=150)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    models = {a: write_tiny_model(a, os.path.join(args.out, "models", a), seed=0) for a in TINY_ARCHS}
    video = write_test_video(os.path.join(args.out, "clip.mp4"), num_frames=160, size=(180, 320), fps=8, seed=0)
    methods = args.methods.split(",")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    rows = []
    jobs = [(a, m) for a in models for m in methods]
    for arch, method in tqdm(jobs, desc="retake ask", unit="run"):
        cmd = [sys.executable, "-m", "retake.cli", "ask", video, "What is moving in the video?",
               "--model", models[arch], "--method", method, "--max-long-side", "112",
               "--max-context", str(args.max_context), "--chunk-frames", "8", "--max-new-tokens", "8", "--json"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return r.returncode
        res = json.loads(r.stdout)
        rows.append((arch, method, res))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump([{"model": a, **res} for a, _, res in rows], f, indent=2)
    print(f"\nmax_context = {args.max_context} tokens per layer (mean over layers)")
    head = (f"{'model':<11} {'method':<10} {'frames':>6} {'video tok':>9} {'text tok':>8} "
            f"{'KV/layer min-max':>16} {'KV mean':>7} {'prefill s':>9}  answer")
    print(head + "\n" + "-" * len(head))
    for arch, method, res in rows:
        kv = res["kv_tokens_per_layer"]
        print(f"{arch:<11} {method:<10} {res['frames']:>6} {res['video_tokens']:>9} {res['text_tokens']:>8} "
              f"{f'{min(kv)}-{max(kv)}':>16} {sum(kv) / len(kv):>7.1f} {res['prefill_seconds']:>9.3f}  {res['answer']!r}")
    print(f"\n(random tiny models: answers are noise; results in {os.path.join(args.out, 'results.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
