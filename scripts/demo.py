"""make demo: offline, end to end, on tiny random checkpoints and generated videos.

Writes two tiny checkpoints (Qwen2-VL, Qwen2.5-VL) and a few videos, answers a question
about each video with the real ``retake ask`` command, and prints a table. The tiny models
are random, so the answers are noise; the point is that every stage runs. Usage:

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
    ap.add_argument("--method", default="none")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    models = {a: write_tiny_model(a, os.path.join(args.out, "models", a), seed=0) for a in TINY_ARCHS}
    videos = {
        f"clip{i}": write_test_video(os.path.join(args.out, f"clip{i}.mp4"), num_frames=n, size=(180, 320), fps=8, seed=i)
        for i, n in enumerate((48, 96, 160))
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    rows = []
    jobs = [(a, v) for a in models for v in videos]
    for arch, vid in tqdm(jobs, desc="retake ask", unit="video"):
        cmd = [sys.executable, "-m", "retake.cli", "ask", videos[vid], "What is moving in the video?",
               "--model", models[arch], "--method", args.method, "--max-long-side", "112",
               "--chunk-frames", "8", "--max-new-tokens", "8", "--json"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return r.returncode
        res = json.loads(r.stdout)
        rows.append((arch, vid, res))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump([{"model": a, "video": v, **res} for a, v, res in rows], f, indent=2)
    head = f"{'model':<11} {'video':<6} {'frames':>6} {'video tok':>9} {'text tok':>8} {'KV/layer':>8} {'prefill s':>9}  answer"
    print("\n" + head + "\n" + "-" * len(head))
    for arch, vid, res in rows:
        print(f"{arch:<11} {vid:<6} {res['frames']:>6} {res['video_tokens']:>9} {res['text_tokens']:>8} "
              f"{res['kv_tokens_per_layer'][0]:>8} {res['prefill_seconds']:>9.3f}  {res['answer']!r}")
    print(f"\n(random tiny models: answers are noise; results in {os.path.join(args.out, 'results.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
