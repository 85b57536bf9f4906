"""One cell = one model x method x dataset x budget x frames, run through lmms-eval's evaluator.

    python -m retake.harness.runner --config cell.yaml [key=value ...]
    torchrun --nproc_per_node 2 -m retake.harness.runner --config cell.yaml     # sharded

``run_cell(cfg)`` (also called by the Hydra entry ``retake.run``):

1. derives the cell directory from the config (:func:`cell_dir`) and returns the stored
   metrics if ``metrics.json`` is there (unless ``run.overwrite``);
2. before any data or model is read: checks that the folder takes a write, and rank 0 takes
   the cell's lock (:class:`~retake.harness.files.CellLock`: a second run of the cell waits or,
   with ``run.on_busy=exit``, stops), removes a killed write's temporaries and repairs the rank
   files' ends; the data is loaded and checked, and the budget checked against the prompts
   with the tokenizer alone (:mod:`retake.harness.preflight`);
3. builds the lmms-eval model :class:`~retake.harness.lmms_model.RetakeLMM` (per-rank
   predictions files in the cell directory, so a killed run resumes);
4. rank 0 writes ``config.yaml`` and the task folder (``task/``, :func:`tasks.write_task`);
5. runs ``lmms_eval.evaluator.simple_evaluate`` on it (sharded over ``RANK``/``WORLD_SIZE``);
6. rank 0 merges the rank files into ``predictions.jsonl`` (one line per sample, sorted by
   uid), scores them with the dataset's ``score()``, checks the result against lmms-eval's
   aggregate, and writes ``metrics.json`` last (its presence marks the cell done).

The cell directory (``docs/harness.md``)::

    <results_root>/<model>__<method>[-<m>]__<dataset>__<max_context>__<max_frames>[__reforge][__unknown][__<protocol>][__s<s>][__limit<N>]

``m``: 8 hex digits of sha1 over the method parameters that differ from the method's
defaults (sorted JSON); ``s``: the same over the sampling / engine settings that differ from
their schema defaults (:data:`SETTING_KEYS`); ``limit<N>``: a run on the first N samples only. Settings not in the
name (model dtype and RoPE scaling) are checked against the directory's ``config.yaml``: a
mismatch fails instead of mixing runs.
"""

from __future__ import annotations

from .interrupts import guard_start

guard_start(__name__)  # run as `python -m`: an interrupt from here on, imports included, is one line

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from omegaconf import DictConfig, OmegaConf  # noqa: E402

from . import tasks  # noqa: E402
from .cells import (  # noqa: E402,F401 - the cell's identity lives in cells; these names stay importable here
    SECTIONS, SETTING_KEYS, cell_dir, cell_name, changed_settings, check_same_cell, identity, method_params,
    resolve_config, setting_defaults, short_hash, typed,
)
from .files import CellLock, WriteError, check_writable, is_write_error, write_atomic, writing  # noqa: E402
from .efficiency import chance_accuracy, efficiency, throughput  # noqa: E402,F401 - importable here too
from .interrupts import CellInterrupted, sigterm_as_interrupt  # noqa: E402

PREDICTIONS = "predictions"


# -- files ----------------------------------------------------------------------------------

def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); delete it, or set run.overwrite=true to start the cell afresh") from None


def clear_cell(directory: str) -> None:
    """Remove a previous run's outputs (``run.overwrite``)."""
    from .predictions import rank_files

    for path in [os.path.join(directory, n) for n in ("metrics.json", f"{PREDICTIONS}.jsonl")] + rank_files(
            os.path.join(directory, PREDICTIONS)):
        if os.path.exists(path):
            with writing(path):
                os.remove(path)


# what write_atomic leaves if its process is killed mid-write (it removes its own on any error)
_TEMPORARY = re.compile(r"^((config\.yaml|metrics\.json|predictions\.jsonl)\.tmp|\.write_check\.)\d+$")


def tidy_cell(directory: str, log=print) -> None:
    """Rank 0, holding the cell's lock: remove the temporaries of a killed write, and repair the
    end of every rank file (a whole last record gets its newline; anything else is set aside in
    ``<file>.corrupt``, with a warning naming the file)."""
    from .predictions import rank_files, repair_tail

    for name in os.listdir(directory):
        if _TEMPORARY.match(name):
            with writing(os.path.join(directory, name)):
                os.remove(os.path.join(directory, name))
    for path in rank_files(os.path.join(directory, PREDICTIONS)):
        warning = repair_tail(path)
        if warning:
            log(f"WARNING: {warning}")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"retake": v("retake"), "torch": torch.__version__, "transformers": transformers.__version__,
            "lmms_eval": v("lmms-eval")}


# -- the run ----------------------------------------------------------------------------------

def model_args(cfg: DictConfig, max_guide_tokens: int | None, predictions: str, retry_failed: bool | None = None):
    """The lmms-eval model's arguments of a cell (:class:`~retake.harness.lmms_model.ModelArgs`:
    the cell config's own typed sections; ``model_args_string`` gives its ``--model_args`` form)."""
    from dataclasses import replace

    from .lmms_model import ModelArgs

    t = typed(cfg)
    run = t.run if retry_failed is None else replace(t.run, retry_failed=retry_failed)
    return ModelArgs(model=t.model, method=t.method.name, method_args=dict(t.method.params), sampling=t.sampling,
                     engine=replace(t.engine, max_guide_tokens=max_guide_tokens), run=run, predictions=predictions)


def saved_answers(directory: str, task: str) -> int:
    """Distinct samples of ``task`` with a line in the cell's predictions files."""
    from .predictions import read_predictions

    return sum(key[0] == task for key in read_predictions(os.path.join(directory, PREDICTIONS)))


def cell_status(metrics: dict) -> str:
    """``done`` or ``incomplete`` (more failed samples than ``run.max_failed_fraction``); a
    metrics.json written before statuses existed is done."""
    return metrics.get("status", "done")


def run_cell(cfg: Mapping | DictConfig) -> dict | None:
    """Run (or resume, or skip) one cell; returns its metrics.json content on rank 0, None on
    the other ranks. Ctrl-C / SIGTERM raise :class:`CellInterrupted` (answers so far are kept);
    a file that cannot be written raises :class:`~retake.harness.files.WriteError`; another
    process on the cell is waited for, or (``run.on_busy=exit``) raises
    :class:`~retake.harness.files.CellBusy`."""
    cfg = resolve_config(cfg)
    directory = os.path.abspath(os.path.join(cfg.run.results_root, cell_name(cfg)))
    state = {"total": None}
    try:
        with sigterm_as_interrupt():
            return _run_cell(cfg, directory, state)
    except KeyboardInterrupt as e:
        task = tasks.task_name(cfg.dataset.name)
        raise CellInterrupted(directory, saved_answers(directory, task), state["total"],
                              getattr(e, "signum", signal.SIGINT)) from None


def stored_result(cfg: DictConfig, directory: str, rank: int) -> tuple[dict | None, bool]:
    """(the stored metrics.json of a done cell, to return as it is, or None; whether failed
    samples are answered again). An incomplete cell is never taken as done."""
    retry = bool(cfg.run.retry_failed)
    metrics_path = os.path.join(directory, "metrics.json")
    if cfg.run.overwrite:
        return None, retry
    check_same_cell(cfg, directory)
    if not os.path.exists(metrics_path):
        return None, retry
    stored = read_json(metrics_path)
    if cell_status(stored) == "done" and not retry:
        log(rank, f"cell done, skipped: {directory}")
        return stored, retry
    failed = len(stored.get("failures", []))
    why = "run.retry_failed=true" if retry else f"incomplete: {failed} failed samples"
    log(rank, f"cell {directory}: {why}; answering the {failed} failed samples again")
    return None, True  # an incomplete cell is never taken as done: its failures are retried


def _run_cell(cfg: DictConfig, directory: str, state: dict) -> dict | None:
    rank = int(os.environ.get("RANK", "0"))
    stored, retry = stored_result(cfg, directory, rank)
    if stored is not None:
        return stored if rank == 0 else None
    # before any data or model is read: the folder takes writes (a read-only, forbidden or full
    # place fails now, in one line), and rank 0 holds the cell's lock (one run per cell)
    check_writable(directory)
    own = rank_file_path(directory, rank)
    if os.path.exists(own):
        with writing(own):
            open(own, "ab").close()
    lock = None
    if rank == 0:
        seen = _mtime(os.path.join(directory, "metrics.json"))
        lock = CellLock(directory)
        lock.acquire(wait=cfg.run.on_busy == "wait", log=lambda m: log(rank, m))
        if _mtime(os.path.join(directory, "metrics.json")) != seen:  # another process finished it meanwhile
            stored, retry = stored_result(cfg, directory, rank)
            if stored is not None:
                lock.release()
                return stored
    try:
        return _run_locked(cfg, directory, state, rank, retry)
    finally:
        if lock is not None:
            lock.release()


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def rank_file_path(directory: str, rank: int) -> str:
    from .predictions import rank_file

    return rank_file(os.path.join(directory, PREDICTIONS), rank)


def _run_locked(cfg: DictConfig, directory: str, state: dict, rank: int, retry: bool) -> dict | None:
    from .datasets import ensure_data, get_dataset
    from .lmms_model import RetakeLMM, model_args_string
    from .preflight import check_budget

    if rank == 0:
        if cfg.run.overwrite:
            clear_cell(directory)
        tidy_cell(directory, log=lambda m: log(rank, m))
    spec = get_dataset(cfg.dataset.name)
    ensure_data(spec, cfg.dataset.data_root, log=lambda m: log(rank, m))
    samples = spec.load(cfg.dataset.data_root)  # on every rank: bad data fails everywhere, before the model loads
    state["total"] = len(samples[: cfg.run.limit])
    ensure_model(cfg.model, log=lambda m: log(rank, m))
    check_budget(cfg, samples[: cfg.run.limit], log=lambda m: log(rank, m))  # the tokenizer only, no weights
    guide = cfg.engine.max_guide_tokens if cfg.engine.max_guide_tokens is not None else spec.max_guide_tokens
    args = model_args(cfg, guide, os.path.join(directory, PREDICTIONS), retry_failed=retry)
    lm = RetakeLMM(args=args)  # every rank; sets up the process group when WORLD_SIZE > 1
    task_dir = os.path.join(directory, "task")
    if rank == 0:
        write_atomic(os.path.join(directory, "config.yaml"), OmegaConf.to_yaml(cfg))
        with writing(task_dir):
            tasks.write_task(cfg.dataset.name, samples, task_dir, limit=cfg.run.limit,
                             max_new_tokens=cfg.engine.max_new_tokens)
        log(rank, f"cell {directory}: {state['total']} samples, {lm.world_size} process(es)")
    barrier(lm)  # the others read the task folder and the (cleared) predictions files after this
    task = tasks.task_name(cfg.dataset.name)
    start = time.perf_counter()
    results = evaluate(lm, task, task_dir, cfg, model_args_string(args))
    if rank != 0:
        return None
    # rank 0's own figures (the others' are in their predictions lines)
    timing = {"evaluate_seconds": round(time.perf_counter() - start, 3),
              "rank0_input_wait_seconds": round(lm.input_wait_seconds, 3)}
    return finalize(cfg, directory, task, spec, results, lm.world_size, timing)


def ensure_model(model_cfg, log=print) -> bool:
    """A model config with ``tiny_arch`` (the tiny random test models) whose ``pretrained``
    directory does not exist yet gets it written now (``retake tiny-model``); returns whether."""
    arch = model_cfg.get("tiny_arch")
    path = str(model_cfg.pretrained)
    if not arch or os.path.exists(path):
        return False
    from ..tiny import write_tiny_model_atomic

    log(f"model {model_cfg.name}: no checkpoint at {path}; writing it now (`retake tiny-model --arch {arch} {path}`)")
    write_tiny_model_atomic(arch, path)
    return True


def barrier(lm) -> None:
    accelerator = getattr(lm, "accelerator", None)
    if accelerator is not None:
        accelerator.wait_for_everyone()


def evaluate(lm, task: str, task_dir: str, cfg: DictConfig, model_args_str: str) -> dict | None:
    """lmms-eval's evaluator on our task: results on rank 0, None elsewhere. A write that fails
    inside it (the task's datasets cache, a predictions line) is one :class:`WriteError`."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    try:
        return simple_evaluate(
            model=lm,
            model_args=model_args_str,  # a string (0.7.3); only recorded, since model is an instance
            tasks=[task],
            task_manager=TaskManager("WARNING", include_path=[task_dir], include_defaults=False),
            limit=cfg.run.limit,
            # max_new_tokens is in the task file (write_task): gen_kwargs would override it, with a warning per cell
            bootstrap_iters=0,  # the aggregate is a whole-dataset score; no stderr resampling
            log_samples=False,
            process_docs_parallel=1,
            verbosity="WARNING",
            datetime_str=datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S_%f"),  # the default is frozen at import
        )
    except WriteError:
        raise
    except Exception as e:
        cause = _os_cause(e)
        if cause is None:
            raise
        # lmms-eval retried and wrapped it (tenacity's RetryError): say the first cause
        raise WriteError.from_os(os.path.join(task_dir, "hf_datasets_cache"), cause) from None


def _os_cause(error: BaseException) -> OSError | None:
    """The ``OSError`` behind ``error`` (itself, its causes, or a retry's last attempt) that
    refuses a write or reports no room, or None."""
    seen = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if is_write_error(e) or (isinstance(e, OSError) and "disk space" in str(e).lower()):
            return e
        attempt = getattr(e, "last_attempt", None)  # tenacity.RetryError
        if attempt is not None and hasattr(attempt, "exception"):
            todo.append(attempt.exception())
        todo += [e.__cause__, e.__context__]
    return None


def merge_predictions(prefix: str, task: str, samples: list) -> list[dict]:
    """One record per sample (sorted by uid) from all rank files: the scored fields
    (:func:`tasks.make_record`) plus what the model measured."""
    from .predictions import read_predictions

    by_uid = {key[2]: rec for key, rec in read_predictions(prefix).items() if key[0] == task}
    missing = [s.uid for s in samples if s.uid not in by_uid]
    if missing:
        raise RuntimeError(f"{len(missing)} sample(s) have no prediction in {prefix}.rank*.jsonl, e.g. {missing[:5]}")
    records = []
    for s in samples:
        raw = by_uid[s.uid]
        extra = {k: v for k, v in raw.items() if k not in ("task", "uid", "prediction", "error", "rank")}
        records.append({**tasks.make_record(s, raw.get("prediction"), raw.get("error")), **extra})
    return sorted(records, key=lambda r: r["uid"])


def finalize(cfg: DictConfig, directory: str, task: str, spec, results: dict, num_processes: int,
             timing: dict | None = None) -> dict:
    """Rank 0: predictions.jsonl, our score, the check against lmms-eval, metrics.json."""
    samples = tasks.read_task_samples(os.path.join(directory, "task"))
    records = merge_predictions(os.path.join(directory, PREDICTIONS), task, samples)
    write_atomic(os.path.join(directory, f"{PREDICTIONS}.jsonl"),
                 "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
    metrics = spec.score(records)
    theirs = (results or {}).get("results", {}).get(task, {}).get(f"{tasks.metric_name(spec.name)},none")
    ours = metrics.get(spec.primary)
    if not same_number(ours, theirs):
        log(0, f"WARNING: our {spec.primary} {ours} differs from lmms-eval's aggregate {theirs} ({task})")
    full, _ = method_params(cfg.method.name, cfg.method.params)
    failures = [{"uid": r["uid"], "error": r["error"]} for r in records if r["error"] is not None]
    failed_fraction = len(failures) / len(records) if records else 0.0
    status = "incomplete" if failed_fraction > cfg.run.max_failed_fraction else "done"
    result = {
        "status": status,
        "failed_fraction": round(failed_fraction, 6),
        "max_failed_fraction": cfg.run.max_failed_fraction,
        "cell": {
            "model": cfg.model.name, "method": cfg.method.name, "dataset": cfg.dataset.name,
            "max_context": cfg.engine.max_context, "max_frames": cfg.sampling.max_frames, "method_params": full,
            "reforge_positions": cfg.engine.reforge_positions, "rope_scaling_factor": cfg.model.rope_scaling_factor,
            "fps": cfg.sampling.fps, "question_mode": cfg.engine.question_mode, "protocol": cfg.protocol,
            # what the folder name's __s<hash> part stands for, and its limit
            "settings": changed_settings(cfg), "limit": cfg.run.limit,
        },
        "metrics": metrics,
        "primary": spec.primary,
        "chance_accuracy": chance_accuracy(samples),
        "efficiency": efficiency(records, timing),
        "failures": failures,
        # samples answered with a warning (a video whose header declares more frames than decode)
        "warnings": [{"uid": r["uid"], "warning": w} for r in records for w in (r.get("warnings") or [])],
        "versions": versions(),
        "num_processes": num_processes,
        "throughput": throughput(records, timing),
        "lmms_eval": {"task": task, "primary": theirs, "agrees": same_number(ours, theirs)},
    }
    write_atomic(os.path.join(directory, "metrics.json"), json.dumps(result, indent=2, default=str) + "\n")
    log(0, f"{cfg.dataset.name} {spec.primary} = {ours} ({metrics.get('num_samples')} samples, "
           f"{len(failures)} failed): {directory}")
    if status == "incomplete":
        log(0, f"WARNING: cell incomplete: {len(failures)} of {len(records)} samples failed (more than "
               f"run.max_failed_fraction={cfg.run.max_failed_fraction}); rerunning the same command answers them "
               f"again (errors in {os.path.join(directory, 'metrics.json')}, e.g. {failures[0]['error']})")
    return result


def same_number(a, b, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= tol


def log(rank: int, message: str) -> None:
    """Progress and result lines, rank 0 only, through the ``retake`` logger (``retake.log``:
    Hydra's job log under Hydra, ``[retake] ...`` on stderr elsewhere); ``WARNING:`` lines at
    that level."""
    if rank == 0:
        from .. import log as _log

        if message.startswith("WARNING: "):
            _log.warning(message[len("WARNING: "):])
        else:
            _log.info(message)


def main(argv: list[str] | None = None) -> int:
    """The command line; Ctrl-C / SIGTERM at any moment from here on is one line (130 / 143)."""
    from .interrupts import guarded, interrupted

    try:
        with sigterm_as_interrupt():
            parser = argparse.ArgumentParser(prog="python -m retake.harness.runner", description="Run one evaluation cell.")
            parser.add_argument("--config", required=True,
                                help="cell YAML (sections: model, method, dataset, sampling, engine, run)")
            parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. run.limit=4 engine.max_context=1024")
            args = parser.parse_args(argv)
            if not os.path.isfile(args.config):
                parser.error(f"config file not found: {args.config}")
            cfg = OmegaConf.merge(OmegaConf.load(args.config), OmegaConf.from_dotlist(args.overrides))
            result = guarded(run_cell, cfg)
    except KeyboardInterrupt as e:
        interrupted(e)
    if result is not None:
        print(json.dumps({"primary": result["primary"], "score": result["metrics"].get(result["primary"]),
                          "num_samples": result["metrics"].get("num_samples"), "failures": len(result["failures"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
