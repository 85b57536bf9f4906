"""make demo: the whole reproduction pipeline, offline, on the project's small trained model.

Part 1, the harness on the four benchmarks' layouts: writes a small synthetic benchmark in
the official layouts of VideoMME, MLVU dev, LongVideoBench val and LVBench
(``retake.harness.benchmarks.synthetic``, real encoded videos), composes one Hydra config per
method x benchmark from ``conf/`` (as ``python -m retake.run`` does) and runs each cell with
``run_cell``: lmms-eval's own evaluator, the lmms-eval model ``retake``, the chunked-prefill
engine, the benchmark's scoring. Those videos mean nothing to the model (its answers are
near chance): the table shows that every stage runs and every method meets one KV budget.

Part 2, compression quality on the needle benchmark (``retake.needle``, held-out seed 1):
the trained model (``checkpoints/needle_qwen2_5_vl``, ``make train-synthetic``) uncompressed
at full frames, then every method at keep ratios of about 0.05, 0.1 and 0.25 of the video
tokens, the ``uniform`` frames baseline at the same budgets included, and every method once
more at r = 0.1 with the question withheld while the video is compressed (``engine.question_mode
=unknown``, the same budget: ``engine.question_tokens`` is the question's own length); a table,
plots of accuracy against keep ratio, budget, KV held and prefill time with one panel per method
family, and a Pareto plot of accuracy against prefill time at r = 0.1 (question given and
question unknown side by side; ``retake.harness.plots``); then the methods that keep a token set
per KV head (as their references) against the same methods keeping one set per layer
(``head_selection=shared``).

Part 3, streaming: the question-unknown methods at one fixed memory cap (the r = 0.1 budget of
the whole video) on the needle videos sampled to 16, 32 and 64 frames, against no compression:
accuracy and the cache's peak size, which stays flat as the video grows.

Every number is read back from the cells' ``metrics.json`` files (the files ``make tables``
reads); rerunning skips finished cells. The terminal shows one progress bar per part (the cell
running as its postfix) and the part's table; everything a cell prints itself (lmms-eval's,
transformers' and datasets' progress bars, logging, warnings) goes to its own log,
``<out>/logs/<part>/<cell>.log`` (the data and budget preparation's to ``<out>/logs/setup.log``),
and a cell that fails names its log. Usage:

    python scripts/demo.py --out demo_out [--methods none,uniform,adaretake,retake,fastv]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("videomme", "mlvu_dev", "longvideobench_val", "lvbench")
METHODS = "none,uniform,adaretake,retake,fastv,pyramiddrop,snapkv"
NEEDLE_METHODS = ("uniform,random,downsample,adaretake,retake,fastv,pyramiddrop,vlcache,fitprune,lookm,sparsevlm,snapkv,"
                  "pyramidkv,h2o,adakv,knorm,flexselect,adaptoken,vidcom2,evs,fastvid,infinipot_v,streammem")
# methods whose reference keeps a set per KV head: part 2 runs them with head_selection=shared too
HEAD_METHODS = ("snapkv", "pyramidkv", "h2o", "adakv", "knorm", "infinipot_v")
# part 2b, the hybrid needle model (Qwen3.5: 3 of 4 layers Gated DeltaNet): a subset at one budget
# (docs/synthetic.md has more: --hybrid-ratios 0.1,0.25 --hybrid-methods ...)
HYBRID_MODEL = os.path.join(ROOT, "checkpoints", "needle_qwen3_5")
HYBRID_METHODS = "uniform,adaretake,snapkv,h2o,evs,infinipot_v"
HYBRID_RATIOS = "0.1"
STREAMING_METHODS = "infinipot_v,streammem"
UNKNOWN_RATIO = 0.1  # the budget of the "question unknown" column
NEEDLE_MODEL = os.path.join(ROOT, "checkpoints", "needle_qwen2_5_vl")
KEEP_RATIOS = (0.05, 0.1, 0.25)


def quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")


def compose(overrides: list[str]):
    from retake.harness.schema import compose as compose_cell

    return compose_cell(overrides)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))


class _Switch:
    """A stream that writes to whichever stream it points at now: installed as sys.stdout /
    sys.stderr while a cell runs, pointed back at the terminal after it, so that a library that
    kept it (a logging handler, loguru's sink, a tqdm bar) never writes to a closed file."""

    def __init__(self, home):
        self.home = self.target = home

    def write(self, text):
        return self.target.write(text)

    def flush(self):
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def __getattr__(self, name):  # encoding, errors, buffer, fileno, ...
        return getattr(self.target, name)


_SWITCHES: dict[str, _Switch] = {}  # "stdout" / "stderr": one each, reused by every cell


def _switch(name: str) -> _Switch:
    current = getattr(sys, name)
    if isinstance(current, _Switch):
        return current
    switch = _SWITCHES.get(name)
    if switch is None or switch.home is not current:
        switch = _SWITCHES[name] = _Switch(current)
    return switch


def _handlers() -> list[logging.Handler]:
    """Every handler of the root logger and of every named logger."""
    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers]


@contextlib.contextmanager
def output_to(path: str):
    """Everything printed while the block runs goes to ``path`` (appended): file descriptors 1
    and 2 (C libraries, subprocesses), Python's sys.stdout / sys.stderr (prints, warnings, tqdm
    bars) and the logging handlers that wrote to them. All of it restored afterwards, whatever
    the block raised (an error, Ctrl-C)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    saved_fds = []
    try:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                saved_fds.append((fd, os.dup(fd)))
                os.dup2(log.fileno(), fd)
        before = {name: getattr(sys, name) for name in ("stdout", "stderr")}
        switches = {name: _switch(name) for name in before}
        targets = {name: s.target for name, s in switches.items()}  # (another output_to's log when nested)
        terminals = (*(s.home for s in switches.values()), sys.__stdout__, sys.__stderr__)
        moved = []  # (handler, its stream before)
        for handler in _handlers():
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                if handler.stream in terminals:
                    with contextlib.suppress(AttributeError):  # (logging's last resort: sys.stderr when it writes)
                        moved.append((handler, handler.setStream(log)))
        for name, switch in switches.items():
            switch.target = log
            setattr(sys, name, switch)
        try:
            yield
        finally:
            for name, switch in switches.items():
                with contextlib.suppress(Exception):
                    switch.flush()
                switch.target = targets[name]
                setattr(sys, name, before[name])
            for handler, stream in moved:
                with contextlib.suppress(Exception):
                    handler.setStream(stream)
    finally:
        with contextlib.suppress(Exception):
            log.flush()
        for fd, saved in reversed(saved_fds):
            os.dup2(saved, fd)
            os.close(saved)
        log.close()


def terminal():
    """A stream on the terminal that no cell's redirection reaches (fd 2 duplicated): the
    demo's own progress bars."""
    global _TERMINAL
    if _TERMINAL is None:
        try:
            _TERMINAL = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        except (AttributeError, OSError, ValueError):  # no file descriptor (a notebook): as it is
            _TERMINAL = sys.stderr
    return _TERMINAL


_TERMINAL = None


def cell_labels(cells: list[list[str]]) -> list[str]:
    """What tells each cell (its Hydra overrides) from the others of its part: the method, then
    whichever of dataset, budget, frames, question mode and head selection differ in the part."""
    def parts(overrides):
        o = dict(x.split("=", 1) for x in overrides)
        return [o.get("dataset"), f"C={o['engine.max_context']}" if "engine.max_context" in o else None,
                f"{o['model.max_frames']} frames" if "model.max_frames" in o else None,
                "question unknown" if "unknown" in (o.get("engine.question_mode"), o.get("run.question_mode")) else None,
                "shared" if o.get("method.params.head_selection") == "shared" else None], o.get("method", "?")

    described = [parts(c) for c in cells]
    varying = [i for i in range(5) if len({p[i] for p, _ in described}) > 1]
    return [" ".join([method, *(p[i] for i in varying if p[i])]) for p, method in described]


def run_cells(cells: list[list[str]], part: str, out: str) -> float:
    """Compose and run each cell (a list of Hydra overrides) under one progress bar; each cell's
    output goes to ``<out>/logs/<part>/<cell label>.log`` (:func:`output_to`). A cell that fails or
    is interrupted ends the demo (exit status 1, or 130 for Ctrl-C) with one line naming it and
    its log, which holds the traceback. Returns the seconds taken."""
    from tqdm import tqdm

    from retake.harness.runner import run_cell

    print(flush=True)
    start = time.perf_counter()
    logs = os.path.join(out, "logs", part.replace(" ", ""))
    bar = tqdm(total=len(cells), desc=part, unit="cell", file=terminal())
    try:
        for overrides, label in zip(cells, cell_labels(cells)):
            bar.set_postfix_str(label)
            path = os.path.join(logs, label.replace(" ", "_") + ".log")
            try:
                with output_to(path):
                    try:
                        result = run_cell(compose(overrides))
                    except BaseException:
                        traceback.print_exc()  # (into the cell's log)
                        raise
            except BaseException as e:
                bar.close()
                kind = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                first = (str(e).strip().splitlines() or [""])[0]
                print(f"\n{part}: cell {label} {kind}: {type(e).__name__}{': ' + first if first else ''}\n"
                      f"its output and the traceback: {path}", file=terminal())
                raise SystemExit(130 if isinstance(e, KeyboardInterrupt) else 1) from None
            failed = (result or {}).get("metrics", {}).get("num_failed") or 0
            if failed:
                bar.write(f"{part}: cell {label}: {failed} failed samples; its output: {path}", file=terminal())
            bar.update(1)
        bar.set_postfix_str("done")
    finally:
        bar.close()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--model", default=NEEDLE_MODEL, help="checkpoint directory (default: the committed needle model)")
    ap.add_argument("--methods", default=METHODS, help=f"part 1 methods (default {METHODS})")
    ap.add_argument("--datasets", default=",".join(DATASETS), help="part 1 benchmark layouts")
    ap.add_argument("--max-context", type=int, default=640, help="part 1 KV budget per layer, tokens (default 640)")
    ap.add_argument("--frames", type=int, default=64, help="part 1 frames per video, written at 2 fps (default 64)")
    ap.add_argument("--videos", type=int, default=3, help="part 1 videos per benchmark (2 questions each)")
    ap.add_argument("--needle-methods", default=NEEDLE_METHODS, help="part 2 methods ('' skips part 2)")
    ap.add_argument("--needle-samples", type=int, default=48, help="part 2 held-out questions (default 48)")
    ap.add_argument("--hybrid-model", default=HYBRID_MODEL, help="part 2b checkpoint (default: the committed hybrid needle model)")
    ap.add_argument("--hybrid-methods", default=HYBRID_METHODS, help="part 2b methods ('' skips part 2b)")
    ap.add_argument("--hybrid-ratios", default=HYBRID_RATIOS, help="part 2b keep ratios, comma-separated")
    ap.add_argument("--streaming-methods", default=STREAMING_METHODS, help="part 3 methods ('' skips part 3)")
    ap.add_argument("--streaming-frames", default="16,32,64", help="part 3 frames sampled per video")
    args = ap.parse_args()
    quiet()

    from retake.harness.benchmarks.synthetic import write_synthetic_benchmark
    from retake.harness.tables import collect, plot_accuracy
    from retake.methods import get_method

    methods, datasets = args.methods.split(","), args.datasets.split(",")
    needle_methods = [m for m in args.needle_methods.split(",") if m]
    streaming = [m for m in args.streaming_methods.split(",") if m]
    for m in methods + needle_methods + streaming:
        get_method(m)  # an unknown name fails here, listing the valid ones
    if not os.path.exists(os.path.join(args.model, "config.json")):
        print(f"no checkpoint in {args.model}: train one with `make train-synthetic`", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    setup_log = os.path.join(out, "logs", "setup.log")
    terminal()  # (the terminal's stream, before any redirection)
    print(f"retake demo under {out}: one progress bar per part, then its table; each cell's own output (lmms-eval, "
          f"transformers, datasets: progress bars, logs, warnings) goes to {os.path.join(out, 'logs', '<part>', '<cell>.log')}, "
          f"the data and budget preparation's to {setup_log}", flush=True)
    model = ["model=needle_qwen2_5_vl", f"model.pretrained={os.path.abspath(args.model)}", "model.device=cpu"]

    # -- part 1: the four benchmark layouts ---------------------------------------------------
    data_dir = os.path.join(out, "data")
    if not os.path.isdir(data_dir):
        with output_to(setup_log):
            write_synthetic_benchmark(data_dir, formats=tuple(datasets), num_videos=args.videos, questions_per_video=2,
                                      frames=args.frames, fps=2, size=(168, 224), seed=0)
    runs_root = os.path.join(out, "runs")
    cells = [[f"method={m}", f"dataset={d}", *model, f"model.max_frames={args.frames}", f"data_root={data_dir}",
              "sampling.max_long_side=224", f"engine.max_context={args.max_context}", "engine.chunk_frames=8",
              "engine.max_new_tokens=4", f"run.results_root={runs_root}", "experiment_name=demo"]
             for d in datasets for m in methods]
    elapsed = run_cells(cells, "part 1", out)
    runs = collect(runs_root)
    runs = runs[runs["max_context"] == args.max_context]
    print(f"\nretake demo, part 1: the harness on the four benchmarks' layouts ({args.frames} frames per video, "
          f"max_context = {args.max_context} tokens per layer). Accuracy in %; these videos mean nothing to the model.\n")
    rows = []
    for m in methods:
        sub = runs[runs["method"] == m].set_index("dataset")
        rows.append([m, *[f"{sub.loc[d, 'score']:.1f}" if d in sub.index else "-" for d in datasets],
                     _mean(sub, "efficiency/achieved_keep_ratio/mean", "{:.3f}"),
                     _mean(sub, "efficiency/kv_tokens_per_layer/mean", "{:.1f}"),
                     _mean(sub, "efficiency/prefill_seconds/mean", "{:.3f}"),
                     str(int(sub["num_unparsable"].sum())), str(int(sub["num_failed"].sum()))])
    print_table(["method", *datasets, "keep", "KV/layer", "prefill s", "unparsable", "failed"], rows)
    print("keep: kept video tokens / the video's, mean over layers; KV/layer: cache entries per layer after prefill; "
          "prefill s: per sample, vision included (means over the benchmarks)")
    print(f"\n{len(cells)} cells in {elapsed:.0f} s under {runs_root}")
    if not needle_methods:  # (part 2b, the hybrid model, runs without part 2)
        hybrid_part(args, out)
        return 0

    # -- part 2: the needle benchmark -----------------------------------------------------------
    from retake.needle import write_benchmark

    needle_root = os.path.join(out, "needle_data")
    with output_to(setup_log):
        if not os.path.isdir(needle_root):
            write_benchmark(os.path.join(needle_root, "needle"), args.needle_samples, seed=1)
        budgets, question_tokens = needle_budgets(args.model, os.path.join(needle_root, "needle"))
    needle_runs = os.path.join(out, "needle_runs")
    common = [*model, f"data_root={needle_root}", "dataset=needle", "engine.chunk_frames=16",
              "engine.max_new_tokens=4", f"run.results_root={needle_runs}", "experiment_name=demo_needle"]
    unknown = ["engine.question_mode=unknown", f"engine.question_tokens={question_tokens}"]
    cells = [["method=none", "engine.max_context=100000", *common]]
    cells += [[f"method={m}", f"engine.max_context={c}", *common] for c in budgets.values() for m in needle_methods]
    cells += [[f"method={m}", f"engine.max_context={budgets[UNKNOWN_RATIO]}", *common, *unknown] for m in needle_methods]
    heads = [m for m in needle_methods if m in HEAD_METHODS]
    cells += [[f"method={m}", "method.params.head_selection=shared", f"engine.max_context={c}", *common]
              for c in budgets.values() for m in heads]
    elapsed = run_cells(cells, "part 2", out)
    runs = collect(needle_runs)
    selection = runs["method_params/head_selection"] if "method_params/head_selection" in runs else None
    shared = runs[selection == "shared"] if selection is not None else runs.iloc[0:0]
    runs = runs[selection != "shared"] if selection is not None else runs
    known = runs[runs["question_mode"] != "unknown"]
    blind = runs[runs["question_mode"] == "unknown"].set_index("method")
    full = runs[runs["method"] == "none"]["score"]
    print(f"\nretake demo, part 2: the needle benchmark ({args.needle_samples} held-out questions, chance 25 %), "
          f"trained {os.path.basename(args.model)}; accuracy in % at max_context = text + keep ratio x video tokens\n")
    none = runs[runs["method"] == "none"]
    rows = [["none (all tokens)", *[x for _ in budgets for x in (f"{float(full.iloc[0]):.1f}", "1.000")],
             f"{float(full.iloc[0]):.1f}", _mean(none, "efficiency/prefill_seconds/mean", "{:.3f}")]]
    for m in needle_methods:
        sub = known[known["method"] == m].set_index("max_context")
        cols = budget_columns(sub, budgets)
        cols.append(f"{blind.loc[m, 'score']:.1f}" if m in blind.index else "-")
        rows.append([m, *cols, _mean(sub, "efficiency/prefill_seconds/mean", "{:.3f}")])
    print_table(["method", *[x for r, c in budgets.items() for x in (f"r={r} (C={c})", "keep")],
                 f"r={UNKNOWN_RATIO} unknown", "prefill s"], rows)
    print("keep: the video keep ratio achieved (whole tokens per chunk and layer; uniform: whole frames); "
          f"r={UNKNOWN_RATIO} unknown: the question withheld while the video is compressed (guided methods read the "
          "chat template's tokens instead), same budget; prefill s: per sample, mean over the budgets")
    if heads:
        print("\nper KV head (each head keeps its own tokens, as the methods' references) vs shared (one set per "
              "layer, the head-mean score); accuracy in %, the same budgets\n")
        rows = []
        for m in heads:
            per = known[known["method"] == m].set_index("max_context")["score"]
            one = shared[shared["method"] == m].set_index("max_context")["score"]
            rows.append([m, *[x for c in budgets.values() for x in
                              (f"{per[c]:.1f}" if c in per.index else "-", f"{one[c]:.1f}" if c in one.index else "-")]])
        print_table(["method", *[x for r in budgets for x in (f"r={r} per head", "shared")]], rows)
    # one panel per method family against each axis (none: the reference line); the Pareto plot at the
    # r = 0.1 budget, question given and question unknown side by side
    plot_dir = os.path.join(out, "plots")
    plots = plot_accuracy(known, plot_dir, log=lambda _: None, pareto=())
    plots += plot_accuracy(runs, plot_dir, log=lambda _: None, axes=(), pareto_at=budgets[UNKNOWN_RATIO])
    print(f"\n{len(cells)} cells in {elapsed:.0f} s under {needle_runs}; plots in {plot_dir}: "
          f"{', '.join(p.name for p in plots)}")
    print(f"tables from any runs folder: python scripts/make_tables.py --runs {needle_runs} --paper results/paper --out {out}/tables")
    hybrid_part(args, out)
    if not streaming:
        return 0

    # -- part 3: streaming at a fixed memory cap ------------------------------------------------
    frames = [int(f) for f in args.streaming_frames.split(",")]
    stream_runs = os.path.join(out, "streaming_runs")
    cap = budgets[UNKNOWN_RATIO]
    common = [*model, f"data_root={needle_root}", "dataset=needle", "engine.chunk_frames=8", "engine.max_new_tokens=4",
              f"engine.max_context={cap}", f"run.results_root={stream_runs}", "experiment_name=demo_streaming", *unknown]
    cells = [[f"method={m}", f"model.max_frames={f}", *common] for f in frames for m in ["none", *streaming]]
    elapsed = run_cells(cells, "part 3", out)
    runs = collect(stream_runs)
    print(f"\nretake demo, part 3: streaming, the question asked after the video; max_context = {cap} "
          f"(r={UNKNOWN_RATIO} of the 64-frame video), chunks of 8 frames\n")
    rows = []
    for m in ["none", *streaming]:
        sub = runs[runs["method"] == m].set_index("max_frames")
        cols = []
        for f in frames:
            if f not in sub.index:
                cols += ["-", "-"]
                continue
            cell = sub.loc[[f]]
            cols += [f"{float(cell['score'].iloc[0]):.1f}", _mean(cell, "efficiency/video_held_max/max", "{:.0f}"),
                     _mean(cell, "efficiency/peak_kv_cache_bytes/max", "{:.0f}", scale=1 / 1024)]
        rows.append([m, *cols])
    print_table(["method", *[x for f in frames for x in (f"{f} frames", "held", "peak KiB")]], rows)
    print("held: video entries a layer held after a chunk, at most; peak: the cache's largest size while the video "
          "is prefilled (prefix, held entries, one chunk), all layers: under the cap it never exceeds prefix + cap + "
          "one chunk, whatever the video's length (StreamMem's filtered frames make its chunks vary); uncompressed "
          "it grows with the video")
    print(f"\n{len(cells)} cells in {elapsed:.0f} s under {stream_runs}")
    return 0


def hybrid_part(args, out: str) -> None:
    """Part 2b: the hybrid needle model (``checkpoints/needle_qwen3_5``) on its own needle videos
    (64 px: the same 2 x 2 tokens per grid step for its 16 px patches), uncompressed and a subset of
    methods (``--hybrid-ratios``)."""
    from retake.harness.tables import collect
    from retake.needle import NeedleConfig, write_benchmark

    methods = [m for m in args.hybrid_methods.split(",") if m]
    if not methods:
        return
    if not os.path.exists(os.path.join(args.hybrid_model, "config.json")):
        print(f"\n(part 2b skipped: no hybrid checkpoint in {args.hybrid_model}; make train-synthetic ARCH=qwen3_5)")
        return
    root = os.path.join(out, "needle_data_64")
    ratios = tuple(float(r) for r in args.hybrid_ratios.split(","))
    with output_to(os.path.join(out, "logs", "setup.log")):
        if not os.path.isdir(root):
            write_benchmark(os.path.join(root, "needle"), args.needle_samples, seed=1, cfg=NeedleConfig(size=64))
        budgets, _ = needle_budgets(args.hybrid_model, os.path.join(root, "needle"), ratios)
    runs_root = os.path.join(out, "hybrid_runs")
    common = ["model=needle_qwen3_5", f"model.pretrained={os.path.abspath(args.hybrid_model)}", "model.device=cpu",
              f"data_root={root}", "dataset=needle", "engine.chunk_frames=16", "engine.max_new_tokens=4",
              f"run.results_root={runs_root}", "experiment_name=demo_hybrid"]
    cells = [["method=none", "engine.max_context=100000", *common]]
    cells += [[f"method={m}", f"engine.max_context={c}", *common] for c in budgets.values() for m in methods]
    elapsed = run_cells(cells, "part 2b", out)
    runs = collect(runs_root)
    full = float(runs[runs["method"] == "none"]["score"].iloc[0])
    print(f"\nretake demo, part 2b: the same benchmark on a hybrid model ({os.path.basename(args.hybrid_model)}: "
          "Qwen3.5, 6 Gated DeltaNet + 2 attention layers; only the attention layers hold KV), "
          f"{args.needle_samples} questions at 64 px; accuracy in %\n")
    rows = [["none (all tokens)", *[x for _ in budgets for x in (f"{full:.1f}", "1.000")]]]
    for m in methods:
        rows.append([m, *budget_columns(runs[runs["method"] == m].set_index("max_context"), budgets)])
    print_table(["method", *[x for r, c in budgets.items() for x in (f"r={r} (C={c})", "keep")]], rows)
    state = _mean(runs, "efficiency/recurrent_state_bytes/mean", "{:.0f}", scale=1 / 1024)
    print(f"the linear layers' fixed state: {state} KiB beside the KV\n\n{len(cells)} cells in {elapsed:.0f} s under {runs_root}")


def needle_budgets(model: str, data_root: str, ratios=KEEP_RATIOS) -> tuple[dict[float, int], int]:
    """max_context per keep ratio (``retake.needle.max_context_for``) and a needle question's
    tokens (``retake.needle.question_tokens_for``)."""
    from retake.harness.datasets import get_dataset
    from retake.models import load_adapter
    from retake.needle import max_context_for, question_tokens_for

    adapter = load_adapter(model, dtype="float32", device="cpu")
    first = get_dataset("needle").load(data_root)[0]
    return {r: max_context_for(adapter, first, r) for r in ratios}, question_tokens_for(adapter, first)


def budget_columns(sub, budgets: dict) -> list[str]:
    """Per budget: the accuracy and achieved keep ratio of the cell at that max_context (``sub``:
    one method's collect() rows indexed by max_context); "-" where the cell is missing."""
    cols = []
    for c in budgets.values():
        cols += [f"{sub.loc[c, 'score']:.1f}" if c in sub.index else "-",
                 _mean(sub.loc[[c]] if c in sub.index else sub.iloc[0:0], "efficiency/achieved_keep_ratio/mean", "{:.3f}")]
    return cols


def _mean(cells, column: str, fmt: str, scale: float = 1.0) -> str:
    """The mean of a metrics.json column over ``cells`` (collect() rows), formatted; "-" if absent."""
    if column not in cells or not cells[column].notna().any():
        return "-"
    return fmt.format(scale * float(cells[column].mean()))


if __name__ == "__main__":
    sys.exit(main())
