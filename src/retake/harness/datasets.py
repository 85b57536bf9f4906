"""The benchmark registry: ``name -> DatasetSpec(load, score, primary, ...)``.

One name everywhere: ``dataset=<name>`` in the config, the results directory, the table
column. Each benchmark is one module of :mod:`retake.harness.benchmarks`, which documents its
local layout under ``data_root`` (what ``scripts/prepare_<benchmark>.py`` makes from the
official download: annotation files with the official field names, videos as symlinks) and
holds its loader, which returns ``Sample`` objects with absolute video paths. Video files are
not checked there: a missing or unreadable video is a per-sample failure at run time.

=====================  ==========================================================
``videomme``,          :mod:`~retake.harness.benchmarks.videomme`
``videomme_long``
``mlvu_dev``,          :mod:`~retake.harness.benchmarks.mlvu`
``mlvu_test``
``longvideobench_val`` :mod:`~retake.harness.benchmarks.longvideobench`
``lvbench``            :mod:`~retake.harness.benchmarks.lvbench`
``synthetic``          :mod:`~retake.harness.benchmarks.synthetic` (generated)
``needle``             :mod:`~retake.harness.benchmarks.needle` (generated; ``retake.needle``)
=====================  ==========================================================

docs/datasets.md has the layouts, the fields read and the metrics.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from retake.harness import scoring
from retake.harness.benchmarks import longvideobench, lvbench, mlvu, needle, synthetic, videomme
from retake.harness.benchmarks.common import DatasetNotFoundError
from retake.harness.benchmarks.longvideobench import load_longvideobench_val, lvb_sample, subtitle_lines
from retake.harness.benchmarks.lvbench import load_lvbench, lvbench_type_codes, split_lettered_options
from retake.harness.benchmarks.mlvu import export_mlvu_test_submission, load_mlvu_dev, load_mlvu_test, mlvu_sample
from retake.harness.benchmarks.synthetic import load_synthetic
from retake.harness.benchmarks.videomme import load_videomme, videomme_sample
from retake.harness.samples import Sample

__all__ = [
    "DATASETS", "DatasetNotFoundError", "DatasetSpec", "ensure_data", "get_dataset", "make_command",
    # importable from here as before each benchmark had its module (tests and scripts use them)
    "export_mlvu_test_submission", "load_longvideobench_val", "load_lvbench", "load_mlvu_dev", "load_mlvu_test",
    "load_synthetic", "load_videomme", "lvb_sample", "lvbench_type_codes", "mlvu_sample", "split_lettered_options",
    "subtitle_lines", "videomme_sample",
]


@dataclass(frozen=True)
class DatasetSpec:
    """name: the registry key. load: data_root -> samples (absolute video paths).
    score: records -> metrics (``retake.harness.scoring``). primary: the key of the headline
    metric in score()'s output. max_guide_tokens: the guide (query) for query-aware
    compression is the last this many tokens of the prompt (None: the whole question).
    has_answers: False where the split has no public answers. generate: writes the benchmark
    at a data_root (generated benchmarks only: written on first use, :func:`ensure_data`).
    command: data_root -> the command that makes the layout there (:func:`make_command`)."""

    name: str
    load: Callable[[str], list[Sample]]
    score: Callable[[list[dict]], dict]
    primary: str
    max_guide_tokens: int | None = None
    has_answers: bool = True
    generate: Callable[[str], None] | None = None
    command: Callable[[str], str] | None = None


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec("synthetic", synthetic.load_synthetic, scoring.score_accuracy, "accuracy",
                    generate=synthetic.generate_synthetic, command=synthetic.command),
        # the needle benchmark (retake.needle): the same format, per question type
        DatasetSpec("needle", needle.load_needle, scoring.score_accuracy, "accuracy",
                    generate=needle.generate_needle, command=needle.command),
        DatasetSpec("videomme", videomme.load_videomme, scoring.score_videomme, "accuracy", command=videomme.command),
        DatasetSpec("videomme_long", videomme.load_videomme_long, scoring.score_videomme, "accuracy",
                    command=videomme.command),
        DatasetSpec("mlvu_dev", mlvu.load_mlvu_dev, scoring.score_mlvu_dev, "m_avg", command=mlvu.command_dev),
        DatasetSpec("mlvu_test", mlvu.load_mlvu_test, scoring.score_mlvu_test, "num_answered", has_answers=False,
                    command=mlvu.command_test),
        DatasetSpec("longvideobench_val", longvideobench.load_longvideobench_val, scoring.score_longvideobench,
                    "accuracy", max_guide_tokens=152, command=longvideobench.command),
        DatasetSpec("lvbench", lvbench.load_lvbench, scoring.score_lvbench, "accuracy", command=lvbench.command),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    return DATASETS[name]


def _command(spec: DatasetSpec, data_root) -> str:
    if spec.command is None:
        raise ValueError(f"{spec.name}: its DatasetSpec names no command that makes its layout")
    return spec.command(os.fspath(data_root))


def make_command(dataset: str, data_root: str) -> str:
    """The command that makes ``dataset``'s local layout at ``data_root`` (for "not found" messages)."""
    return _command(get_dataset(dataset), data_root)


def ensure_data(spec: DatasetSpec, data_root: str, log=print) -> bool:
    """Write a generated benchmark (``spec.generate``) at ``data_root`` when nothing is there yet
    (no folder, or an empty one); returns whether it did. A folder holding other files is left
    alone: its loader then names what is missing. Real benchmarks are never generated. Written
    into a temporary sibling and renamed, so processes starting together never see half a set."""
    if spec.generate is None or (os.path.isdir(data_root) and os.listdir(data_root)):
        return False
    log(f"{spec.name}: no data under {data_root}; writing it now (`{_command(spec, data_root)}`)")
    data_root = os.path.abspath(data_root)
    os.makedirs(os.path.dirname(data_root), exist_ok=True)
    tmp = f"{data_root}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    spec.generate(tmp)
    try:
        if os.path.isdir(data_root):
            os.rmdir(data_root)  # empty: checked above
        os.rename(tmp, data_root)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return True
