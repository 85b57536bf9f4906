"""The lmms-eval model ``retake``: every request goes through :func:`retake.pipeline.answer_question`.

    lmms-eval --model retake --model_args pretrained=DIR,method=adaretake,max_context=16384 --tasks ...

Registered through the entry-point group ``lmms_eval.models`` (``pyproject.toml``), whose value
is :func:`manifests`; ``retake.harness.runner`` passes an instance to ``simple_evaluate``.

- model_args arrive from the command line as strings (or already typed from Python) and are
  parsed into the cell config's own dataclasses (:func:`parse_model_args`: ``retake.config``'s
  ``ModelConfig``, ``SamplingConfig``, ``EngineConfig`` and the run section); every field of
  those is a model arg under its own name; unknown names fail with the valid ones. The runner
  skips the strings: it passes the typed sections (``RetakeLMM(args=ModelArgs(...))``).
- One request at a time, greedy decoding (the engine has no sampling): a task's
  ``max_new_tokens`` is honoured, ``temperature`` / ``do_sample`` / ``until`` are not.
- A failed sample (missing or corrupt video, ``sys.exit`` in a task's ``doc_to_visual``, any
  exception) is recorded with its error and answered ``""``; the run goes on.
- ``predictions=PREFIX``: each finished sample is appended (fsynced, one JSON line, whole or
  not at all) to ``PREFIX.rank<r>.jsonl``, keyed by ``(task, doc_id, uid)``; on start every
  ``PREFIX.rank*.jsonl`` is read and requests found there are answered from it, so a killed run
  resumes without duplicates even with a different number of processes. Before the first
  append the file's end is repaired (:func:`repair_tail`): a whole last record missing its
  newline is kept, anything else there is set aside in ``<file>.corrupt`` with a warning.
- Sharding is lmms-eval's (strided over ``RANK`` / ``WORLD_SIZE``); the device is
  ``cuda:LOCAL_RANK`` when CUDA is there, else CPU.
- Input pipeline (``retake.pipeline``): a process answers its requests grouped by video (in
  the order each video first appears; answers go back in lmms-eval's order), so that
  ``reuse_videos=N`` (default 1; 0: off) reuses a video's decoded inputs and vision features
  for its next questions, and ``prefetch=D`` (default 1; 0: off) decodes the next D videos in
  a background thread while the model works. Neither changes an answer.
- ``question_mode=unknown`` compresses each video without its question (guided methods read
  the chat template's tokens instead, the budget leaves ``question_tokens`` for the question);
  with ``reuse_cache=true`` (default) a video is then compressed once and every question on it
  is answered over a restored copy of that cache: the same answers as compressing it again.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from lmms_eval.api.model import lmms
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .. import log

from ..config import EngineConfig, ModelConfig, SamplingConfig, from_strings, parse_value, to_plain
from ..methods import get_method
from ..pipeline import Prefetcher, StateReuse, VideoReuse, answer_question, video_key
from .files import append_bytes, writing
from .predictions import open_for_append, rank_file, rank_files, read_predictions, repair_tail, request_key  # noqa: F401
from .schema import EngineSection, RunSection

MODEL_NAME = "retake"


@dataclass
class ModelArgs:
    """Everything the lmms-eval model takes, typed: the same dataclasses as the cell config's
    sections (``retake.config``, ``retake.harness.schema``)."""

    model: ModelConfig
    method: str
    method_args: dict
    sampling: SamplingConfig
    engine: EngineConfig
    run: RunSection  # reuse_videos, prefetch, retry_failed, reuse_cache are read
    predictions: str | None = None


# flat ``--model_args`` names -> their section; every field of the sections, so every setting is
# settable from lmms-eval's command line (``max_context=1024``, ``fast_paths=false``, ...)
RUN_ARGS = ("reuse_videos", "prefetch", "retry_failed", "reuse_cache")
SECTION_TYPES = {"model": ModelConfig, "sampling": SamplingConfig, "engine": EngineSection, "run": RunSection}
ARG_SECTIONS: dict[str, str] = {
    **{f.name: "model" for f in fields(ModelConfig)},
    **{f.name: "sampling" for f in fields(SamplingConfig)},
    **{f.name: "engine" for f in fields(EngineSection)},
    **{name: "run" for name in RUN_ARGS},
}
OTHER_ARGS = ("method", "method_args", "predictions")
# passed by lmms-eval itself (create_from_arg_string's additional config); accepted, unused
LMMS_EVAL_ARGS = ("batch_size", "max_batch_size")

# what answer_question measures that a predictions line keeps (lists are summarised)
MEASUREMENTS = (
    "frames", "sampling_fps", "declared_frames", "decoded_frames", "warnings", "video_tokens", "text_tokens",
    "full_video_tokens", "keep_ratio", "achieved_keep_ratio", "kv_cache_bytes", "recurrent_state_bytes",
    "generated_tokens", "video_reused", "input_seconds", "vision_seconds", "prefill_seconds", "decode_seconds",
    "peak_memory_bytes", "peak_memory_kind", "question_mode", "guide", "budget_text_tokens", "video_held_max",
    "peak_kv_cache_bytes", "cache_reused",
)


def parse_model_args(kwargs: dict, **sections) -> ModelArgs:
    """:class:`ModelArgs` from flat ``--model_args`` values (strings from a command line, or
    values) over optional typed ``sections`` (``model=``, ``sampling=``, ``engine=``, ``run=``:
    the cell's own). Strings are parsed here only, by the dataclasses' field types; an unknown
    name fails with the valid ones, a bad value names its key."""
    unknown = sorted(set(kwargs) - set(ARG_SECTIONS) - set(OTHER_ARGS) - set(LMMS_EVAL_ARGS))
    if unknown:
        raise ValueError(f"unknown model_args for {MODEL_NAME!r}: {', '.join(unknown)}; "
                         f"valid: {', '.join([*OTHER_ARGS, *ARG_SECTIONS])}")
    given: dict[str, dict] = {name: {} for name in SECTION_TYPES}
    for name, value in kwargs.items():
        if name in ARG_SECTIONS:
            given[ARG_SECTIONS[name]][name] = value
    built = {}
    for name, cls in SECTION_TYPES.items():
        try:
            values = {f.name: getattr(sections[name], f.name) for f in fields(cls)} if sections.get(name) else {}
            values.update(given[name])
            built[name] = from_strings(cls, values, section="model_args")
        except (TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
    method_args = kwargs.get("method_args", sections.get("method_args"))
    try:
        method_args = parse_value(dict, method_args) if method_args is not None else {}
    except (TypeError, ValueError) as e:
        raise ValueError(f"model_args method_args={method_args!r}: {e}") from None
    predictions = kwargs.get("predictions", sections.get("predictions"))
    args = ModelArgs(model=built["model"], method=str(kwargs.get("method", sections.get("method") or "none")),
                     method_args=method_args, sampling=built["sampling"], engine=built["engine"], run=built["run"],
                     predictions=parse_value(str | None, predictions))
    for name in ("reuse_videos", "prefetch"):
        if getattr(args.run, name) < 0:
            raise ValueError(f"model_args {name}={getattr(args.run, name)}: must be >= 0 (0 turns it off)")
    if not args.model.pretrained:
        raise ValueError(f"model_args for {MODEL_NAME!r} need pretrained=<checkpoint dir or hub id>")
    return args


def model_args_string(args: ModelArgs) -> str:
    """The ``--model_args`` string that :func:`parse_model_args` reads back to ``args``."""
    parts = []
    values = {"method": args.method, "method_args": args.method_args or None, "predictions": args.predictions}
    for name, section in ARG_SECTIONS.items():
        values[name] = getattr(getattr(args, section), name)
    for name, value in values.items():
        if value is None:
            continue
        text = json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else str(to_plain(value))
        parts.append(f"{name}={text}")
    return ",".join(parts)


def resolve_device(device: str | None) -> torch.device:
    """``None``/``auto``: ``cuda:LOCAL_RANK`` when CUDA is there, else CPU; ``cuda``: ``cuda:LOCAL_RANK``."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    return torch.device(device)


def init_distributed(device: torch.device):
    """An ``accelerate.Accelerator`` when ``WORLD_SIZE > 1`` (lmms-eval gathers through it), else None.

    On CPU, accelerate only sets up its gloo group (``MULTI_CPU``) when ``ACCELERATE_USE_CPU``
    is set; ``torchrun`` / ``accelerate launch --multi_gpu`` do not set it, so it is set here."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if device.type == "cpu":
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    from accelerate import Accelerator

    return Accelerator()


# -- predictions files (retake.harness.predictions: the format, without torch or lmms-eval) ------

def video_of(doc_to_visual: Callable, doc) -> str:
    """The video path of a request. ``SystemExit`` (lmms-eval's VideoMME / MLVU ``doc_to_visual``
    exit on a missing file) becomes an error of this sample, not the end of the run."""
    try:
        visuals = doc_to_visual(doc)
    except SystemExit as e:
        raise FileNotFoundError(f"the task's doc_to_visual called sys.exit({e.code}) (a missing video?)") from None
    if not visuals or not isinstance(visuals[0], (str, os.PathLike)):
        kind = type(visuals[0]).__name__ if visuals else "nothing"
        raise TypeError(f"{MODEL_NAME!r} needs a video file path from doc_to_visual, got {kind}")
    return os.fspath(visuals[0])


def measurements(result: dict) -> dict:
    """The per-sample figures a predictions line keeps from ``answer_question``'s result."""
    out = {k: result[k] for k in MEASUREMENTS if k in result}
    kv = result.get("kv_tokens_per_layer") or []
    kept = result.get("kept_video_tokens_per_layer") or []
    out["kv_tokens_mean"] = sum(kv) / len(kv) if kv else None
    heads = result.get("kv_tokens_per_layer_max_head") or []
    out["kv_tokens_max_head"] = max(heads) if heads else None  # the fullest KV head of any layer
    out["kept_video_tokens_mean"] = sum(kept) / len(kept) if kept else None
    out["kv_bytes_per_layer"] = result["kv_cache_bytes"] / len(kv) if kv and result.get("kv_cache_bytes") is not None else None
    return out


class RetakeLMM(lmms):
    """lmms-eval simple model around :func:`retake.pipeline.answer_question` (see module doc)."""

    is_simple = True

    def __init__(self, batch_size: int | str | None = 1, device: str | None = None, *, args: ModelArgs | None = None,
                 **kwargs) -> None:
        """``args``: typed (the runner's, from the cell config); else ``kwargs`` are the flat
        ``--model_args`` (strings or values, :func:`parse_model_args`)."""
        super().__init__()
        if args is None:
            args = parse_model_args({**kwargs, **({"device": device} if device is not None else {})})
        elif kwargs:
            raise TypeError(f"give RetakeLMM either args= or flat model args, not both (got {', '.join(kwargs)})")
        self.args = args
        self._device = resolve_device(args.model.device)
        self._rank = int(os.environ.get("RANK", "0"))
        self._world_size = int(os.environ.get("WORLD_SIZE", "1"))
        accelerator = init_distributed(self._device)
        if accelerator is not None:
            self.accelerator = accelerator
        if batch_size not in (None, 1, "1"):
            log.info(f"batch_size={batch_size} ignored: requests run one at a time")
        self.method_name, self.method_args = args.method, args.method_args
        get_method(self.method_name, **self.method_args)  # fail now on a bad name or parameter
        self.sampling, self.engine = args.sampling, args.engine
        self.adapter = args.model.load(device=str(self._device))
        self.prefix = args.predictions
        self._done: dict[tuple, dict] | None = None  # read lazily: the runner may clear old files first
        self._answered: set[tuple] = set()  # keys answered by this process (lmms-eval pads with repeats)
        self._out = None
        self._warned: set[str] = set()
        run = args.run
        self.reuse = VideoReuse(run.reuse_videos) if run.reuse_videos > 0 else None
        # question_mode=unknown: the last video's compressed cache, for its next questions
        self.states = StateReuse() if run.reuse_cache and self.engine.question_mode == "unknown" else None
        self.input_wait_seconds = 0.0  # time spent waiting for a video to be decoded

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return 1

    # -- lmms-eval API -------------------------------------------------------------------

    def generate_until(self, requests) -> list[str]:
        """One answer per request ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``."""
        if self._done is None:
            self._done = read_predictions(self.prefix) if self.prefix else {}
        order, videos = self._order(requests)
        prefetch = None
        if self.args.run.prefetch > 0:
            prefetch = Prefetcher(self.adapter, self.sampling, self.args.run.prefetch)
            # without reuse every question decodes its video, so every question is scheduled
            prefetch.schedule([videos[i] for i in order if videos[i] is not None], repeats=self.reuse is None)
        answers: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc=f"retake rank {self.rank}", disable=self.rank != 0, file=sys.stderr, leave=False,
                   dynamic_ncols=True)
        try:
            # log lines (a failed sample) are printed above the bar instead of through it
            with logging_redirect_tqdm(loggers=[logging.root, log.get_logger()]):
                for i in order:
                    answers[i] = self._answer(*requests[i].args, prefetch=prefetch)
                    bar.update(1)
        finally:
            bar.close()
            if prefetch is not None:
                prefetch.close()
                self.input_wait_seconds += prefetch.waited_seconds
        return answers

    def _order(self, requests) -> tuple[list[int], list[str | None]]:
        """The order to answer ``requests`` in: grouped by video, videos in order of first
        appearance (so reuse and prefetch see each video once), and each request's video
        path (None: answered from the predictions files, or no path; its error comes later)."""
        videos: list[str | None] = []
        for r in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = r.args
            path = None
            try:
                doc = self.task_dict[task][split][doc_id]
                uid = doc.get("uid") if hasattr(doc, "get") else None
                if not self._is_done(request_key(task, doc_id, uid)):
                    path = video_of(doc_to_visual, doc)
            except Exception:  # noqa: BLE001 - _answer records the error of this sample
                path = None
            videos.append(path)
        first: dict[str | None, int] = {}
        for i, v in enumerate(videos):
            first.setdefault(v, i)
        order = sorted(range(len(requests)), key=lambda i: (first[videos[i]] if videos[i] is not None else i, i))
        return order, videos

    def loglikelihood(self, requests):
        raise NotImplementedError(
            f"{MODEL_NAME!r} only generates (output_type: generate_until); "
            "loglikelihood / multiple_choice tasks are not supported"
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(
            f"{MODEL_NAME!r} answers single-turn questions only; multi-round tasks are not supported"
        )

    def clean(self) -> None:
        """lmms-eval calls this after generation and deletes nn.Module attributes; the model is
        kept (the runner may evaluate again), only caches are freed."""
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    # -- one request ---------------------------------------------------------------------

    def _answer(self, context: str, gen_kwargs: dict, doc_to_visual, doc_id: int, task: str, split: str,
                prefetch: Prefetcher | None = None) -> str:
        doc = self.task_dict[task][split][doc_id]
        uid = doc.get("uid") if hasattr(doc, "get") else None
        key = request_key(task, doc_id, uid)
        if self._is_done(key):  # resumed, or lmms-eval's padding duplicate of a request
            return self._done[key].get("prediction") or ""
        record = {"task": task, "doc_id": int(doc_id), "uid": key[2], "rank": self.rank}
        try:
            video = video_of(doc_to_visual, doc)
            prepared = None
            if prefetch is not None and (self.reuse is None or self._needs_video(video)):
                prepared = prefetch.take(video)
            result = answer_question(self.adapter, video, context, get_method(self.method_name, **self.method_args),
                                     self.sampling, self._engine_for(gen_kwargs or {}),
                                     system_prompt=self.args.model.system_prompt, reuse=self.reuse,
                                     prepared=prepared, states=self.states)
            record.update(prediction=result["answer"], error=None, video=video, **measurements(result))
            for warning in result.get("warnings", []):
                log.warning(f"{task} doc {doc_id} (uid {uid}): {warning}")
        except Exception as e:  # noqa: BLE001 - one bad sample never ends the run
            record.update(prediction=None, error=f"{type(e).__name__}: {e}")
            log.warning(f"{task} doc {doc_id} (uid {uid}) failed: {record['error']}")
            if self._device.type == "cuda":
                torch.cuda.empty_cache()
        self._save(key, record)
        return record["prediction"] or ""

    def _is_done(self, key: tuple) -> bool:
        """Answered before (a saved line; with ``retry_failed`` a failure does not count) or by
        this process already."""
        if key in self._answered:
            return True
        rec = self._done.get(key)
        return rec is not None and not (self.args.run.retry_failed and rec.get("error") is not None)

    def _needs_video(self, video: str) -> bool:
        """Whether the reuse cache lacks ``video`` at the full sampling (then it is decoded)."""
        return video_key(self.adapter, video, self.sampling, self.sampling.max_frames) not in self.reuse

    def _engine_for(self, gen_kwargs: dict) -> EngineConfig:
        """The task's ``max_new_tokens`` wins over the model arg; decoding is always greedy."""
        sampled = float(gen_kwargs.get("temperature") or 0) > 0 or gen_kwargs.get("do_sample")
        if sampled and "sampling" not in self._warned:
            self._warned.add("sampling")
            log.info("temperature / do_sample ignored: the engine decodes greedily")
        n = gen_kwargs.get("max_new_tokens")
        return replace(self.engine, max_new_tokens=int(n)) if n is not None else self.engine

    def _save(self, key: tuple, record: dict) -> None:
        """Append the record's line to this rank's file, whole or not at all (a failed write
        cuts the file back and raises :class:`~retake.harness.files.WriteError`)."""
        self._done[key] = record
        self._answered.add(key)
        if not self.prefix:
            return
        path = rank_file(self.prefix, self.rank)
        if self._out is None:
            open_for_append(path).close()  # the end repaired
            with writing(path):
                self._out = open(path, "ab", buffering=0)
        append_bytes(self._out.fileno(), path, (json.dumps(record, default=str) + "\n").encode("utf-8"))


def manifests():
    """The entry-point value for the group ``lmms_eval.models``: lmms-eval calls it and
    registers what it returns (``ModelManifest`` objects)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.RetakeLMM")]
