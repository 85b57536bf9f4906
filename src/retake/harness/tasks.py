"""lmms-eval task files for our benchmark loaders: ``write_task`` turns a ``Sample`` list into a
task folder that lmms-eval loads with ``TaskManager(include_path=[folder], include_defaults=False)``.

    <out_dir>/samples.jsonl   one Sample.to_dict() per line (absolute video paths)
    <out_dir>/<task>.yaml     dataset_path: json, test split, generate_until, greedy, 16 new tokens
    <out_dir>/utils.py        the task's functions; each one calls into this module

Task names are ``retake_<dataset>``, never a built-in lmms-eval task's name. The functions
avoid the built-in tasks' traps: ``doc_to_visual`` returns the path without checking it (the
model records a missing video as that sample's failure; VideoMME's / MLVU's exit the process),
the prompt is :func:`format_prompt`, answers are read by :func:`parse_answer` (never a random
letter), and the aggregate is the dataset's own ``score()`` (percent, every benchmark).
"""

from __future__ import annotations

import functools
import json
import os

from .samples import Sample, format_prompt, parse_answer

TASK_PREFIX = "retake_"
SAMPLES_FILE = "samples.jsonl"
MAX_NEW_TOKENS = 16

_UTILS = '''"""lmms-eval functions of task {task} (written by retake.harness.tasks.write_task)."""

import os

from retake.harness import tasks

DATASET = {dataset!r}
HERE = os.path.dirname(os.path.abspath(__file__))


def doc_to_visual(doc):
    return tasks.doc_to_visual(doc)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return tasks.doc_to_text(HERE, doc)


def process_results(doc, results):
    return tasks.process_results(DATASET, HERE, doc, results)


def aggregate(records):
    return tasks.aggregate(DATASET, records)
'''

_YAML = """# lmms-eval task {task}: {count} samples of {dataset} (written by retake.harness.tasks.write_task)
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
  cache_dir: {cache_dir}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
  num_beams: 1
process_results: !function utils.process_results
metric_list:
  - metric: {metric}
    aggregation: !function utils.aggregate
    higher_is_better: true
metadata:
  version: 0.0
"""


def task_name(dataset_name: str) -> str:
    return TASK_PREFIX + dataset_name


def metric_name(dataset_name: str) -> str:
    """The lmms-eval metric key: ``retake_<primary>`` (not a registered lmms-eval metric name)."""
    return TASK_PREFIX + _spec(dataset_name).primary


def _spec(dataset_name: str):
    from .datasets import get_dataset  # the loaders are only needed once a task is used

    return get_dataset(dataset_name)


def _write(path: str, text: str) -> None:
    """Write atomically (no temporary left on a failure: ``files.WriteError``), and not at all
    when unchanged (keeps the datasets cache valid)."""
    from .files import write_atomic

    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == text.encode("utf-8"):
                return
    write_atomic(path, text)


def write_task(dataset_name: str, samples: list[Sample], out_dir: str | os.PathLike, limit: int | None = None,
               max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """Write the task folder for ``samples`` (the first ``limit`` of them) and return the task
    name; the task asks for ``max_new_tokens`` greedy tokens per answer."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    samples = list(samples)[:limit] if limit is not None else list(samples)
    if not samples:
        raise ValueError(f"dataset {dataset_name!r}: no samples to write")
    uids = [s.uid for s in samples]
    if len(set(uids)) != len(uids):
        dup = sorted({u for u in uids if uids.count(u) > 1})[:5]
        raise ValueError(f"dataset {dataset_name!r}: duplicate sample uids {dup}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    task = task_name(dataset_name)
    data_file = os.path.join(out_dir, SAMPLES_FILE)
    _write(data_file, "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in samples))
    _write(os.path.join(out_dir, "utils.py"), _UTILS.format(task=task, dataset=dataset_name))
    _write(os.path.join(out_dir, f"{task}.yaml"), _YAML.format(
        task=task, dataset=dataset_name, count=len(samples), data_file=json.dumps(data_file),
        cache_dir=json.dumps(os.path.join(out_dir, "hf_datasets_cache")), max_new_tokens=int(max_new_tokens),
        metric=metric_name(dataset_name),
    ))
    return task


def read_task_samples(task_dir: str | os.PathLike) -> list[Sample]:
    """The samples a task folder holds, in file order."""
    with open(os.path.join(os.fspath(task_dir), SAMPLES_FILE), encoding="utf-8") as f:
        return [Sample.from_dict(json.loads(line)) for line in f if line.strip()]


@functools.lru_cache(maxsize=8)
def _samples_by_uid(path: str, mtime_ns: int) -> dict[str, Sample]:
    return {s.uid: s for s in read_task_samples(os.path.dirname(path))}


def sample_of(task_dir: str, doc: dict) -> Sample:
    """The exact Sample behind an lmms-eval doc (the datasets library may reshape ``meta``)."""
    path = os.path.join(task_dir, SAMPLES_FILE)
    return _samples_by_uid(path, os.stat(path).st_mtime_ns)[doc["uid"]]


def make_record(sample: Sample, prediction: str | None, error: str | None = None) -> dict:
    """One sample's scored record: what every dataset's ``score()`` reads."""
    return {
        "uid": sample.uid,
        "prediction": prediction,
        "parsed": parse_answer(prediction, sample.letters, sample.options) if prediction is not None else None,
        "answer": sample.answer,
        "meta": sample.meta,
        "error": error,
    }


# -- the functions the generated utils.py calls --------------------------------------------

def doc_to_visual(doc: dict) -> list[str]:
    """``[video path]``, unchecked: a missing file is the model's per-sample failure, not an exit."""
    return [doc["video"]]


def doc_to_text(task_dir: str, doc: dict) -> str:
    return format_prompt(sample_of(task_dir, doc))


def process_results(dataset_name: str, task_dir: str, doc: dict, results: list[str]) -> dict:
    return {metric_name(dataset_name): make_record(sample_of(task_dir, doc), results[0] if results else "")}


def aggregate(dataset_name: str, records: list[dict]) -> float:
    """The dataset's headline metric (percent) from lmms-eval's collected records."""
    spec = _spec(dataset_name)
    return spec.score(list(records))[spec.primary]
