"""The needle benchmark (``dataset=needle``, docs/synthetic.md): long synthetic videos whose
questions hang on short events; the project's offline measure of compression quality.

    python -m retake.needle --out data/needle --num-samples 64 --seed 1

The code lives with the other benchmarks, in :mod:`retake.harness.benchmarks.needle` (the
generator, the loader and the command the harness names); this module is its public name.
"""

from __future__ import annotations

from retake.harness.benchmarks.needle import (
    COLOURS,
    NEEDLE_SAMPLES,
    OPTIONS,
    QUESTION_TYPES,
    QUESTIONS,
    NeedleConfig,
    NeedleSample,
    load_needle,
    main,
    make_sample,
    max_context_for,
    question_tokens_for,
    write_benchmark,
    write_video,
)

__all__ = [
    "COLOURS", "NEEDLE_SAMPLES", "OPTIONS", "QUESTIONS", "QUESTION_TYPES", "NeedleConfig", "NeedleSample",
    "load_needle", "main", "make_sample", "max_context_for", "question_tokens_for", "write_benchmark", "write_video",
]

if __name__ == "__main__":
    raise SystemExit(main())
