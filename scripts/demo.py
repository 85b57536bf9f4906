"""make demo: the whole reproduction pipeline, offline, on a tiny model and generated videos.

1. writes a tiny random Qwen2-VL checkpoint (``retake.tiny``) and a small synthetic benchmark
   in the four benchmarks' official layouts (VideoMME, MLVU dev, LongVideoBench val, LVBench:
   ``retake.harness.synthetic_data``, real encoded videos);
2. composes one Hydra config per cell from ``conf/`` (model x method x dataset, as
   ``python -m retake.run`` does) and runs it with ``run_cell``: lmms-eval's own evaluator,
   the lmms-eval model ``retake``, our chunked-prefill engine, the benchmark's scoring;
3. prints accuracy and the measured KV length per layer for every method x benchmark, read
   back from the cells' ``metrics.json`` files (the files ``make tables`` reads).

The model is random, so the accuracies are noise around chance; what the demo shows is that
every stage runs, every method meets the same KV budget, and rerunning is a no-op (finished
cells are skipped). Usage:

    python scripts/demo.py --out demo_out [--methods none,uniform,adaretake,retake,fastv]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("videomme", "mlvu_dev", "longvideobench_val", "lvbench")
METHODS = "none,uniform,adaretake,retake,fastv,pyramiddrop,snapkv"


def quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--methods", default=METHODS, help=f"comma-separated method names (default {METHODS})")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--max-context", type=int, default=640, help="KV budget per layer, tokens (default 640)")
    ap.add_argument("--frames", type=int, default=64, help="frames per video, written at 2 fps (default 64)")
    ap.add_argument("--videos", type=int, default=3, help="videos per benchmark (default 3, 2 questions each)")
    args = ap.parse_args()
    quiet()

    from tqdm import tqdm

    from retake.harness.runner import run_cell
    from retake.harness.synthetic_data import write_synthetic_benchmark
    from retake.harness.tables import collect
    from retake.methods import get_method
    from retake.tiny import write_tiny_model

    methods, datasets = args.methods.split(","), args.datasets.split(",")
    for m in methods:
        get_method(m)  # an unknown name fails here, listing the valid ones
    out = os.path.abspath(args.out)
    model_dir = os.path.join(out, "models", "tiny_qwen2_vl")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        write_tiny_model("qwen2_vl", model_dir, seed=0)
    data_dir = os.path.join(out, "data")
    if not os.path.isdir(data_dir):
        write_synthetic_benchmark(data_dir, formats=tuple(datasets), num_videos=args.videos, questions_per_video=2,
                                  frames=args.frames, fps=2, size=(168, 224), seed=0)
    runs_root = os.path.join(out, "runs")
    cells = [(m, d) for d in datasets for m in methods]
    start = time.perf_counter()
    bar = tqdm(cells, desc="cells", unit="cell", file=sys.stderr)
    for method, dataset in bar:
        bar.set_postfix_str(f"{method} x {dataset}")
        cfg = compose([
            "model=tiny_qwen2_vl", f"model.pretrained={model_dir}", "model.device=cpu", f"model.max_frames={args.frames}",
            f"method={method}", f"dataset={dataset}", f"data_root={data_dir}",
            "sampling.max_long_side=224", f"engine.max_context={args.max_context}", "engine.chunk_frames=8",
            "engine.max_new_tokens=4", f"run.results_root={runs_root}", "experiment_name=demo",
        ])
        run_cell(cfg)
    elapsed = time.perf_counter() - start

    runs = collect(runs_root)
    runs = runs[runs["max_context"] == args.max_context]
    print(f"\nretake demo: tiny random Qwen2-VL, {args.frames} frames per video, max_context = "
          f"{args.max_context} tokens per layer; accuracy in % (chance 20-25 %: the model is random)\n")
    header = ["method", *datasets, "KV/layer (mean)", "unparsable", "failed"]
    rows = []
    for m in methods:
        sub = runs[runs["method"] == m].set_index("dataset")
        kv = [_kv_mean(p) for p in sub["path"]]
        rows.append([m, *[f"{sub.loc[d, 'score']:.1f}" if d in sub.index else "-" for d in datasets],
                     f"{sum(kv) / len(kv):.1f}" if kv else "-",
                     str(int(sub["num_unparsable"].sum())), str(int(sub["num_failed"].sum()))])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(f"\n{len(cells)} cells in {elapsed:.0f} s; cells (config, predictions, metrics) under {runs_root}")
    print(f"tables and plots from them: python scripts/make_tables.py --runs {runs_root} --paper results/paper --out {out}/tables")
    return 0


def _kv_mean(cell_path: str) -> float:
    """Mean over samples of the per-layer KV length after prefill (text included)."""
    with open(os.path.join(cell_path, "predictions.jsonl")) as f:
        values = [r["kv_tokens_mean"] for r in map(json.loads, f) if r.get("kv_tokens_mean") is not None]
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    sys.exit(main())
