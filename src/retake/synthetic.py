"""The former name of :mod:`retake.needle` (the needle benchmark, ``dataset=needle``), kept so
that ``python -m retake.synthetic --size 64`` and ``from retake.synthetic import ...`` still
work: the same names and the same command line. New code uses ``retake.needle``. (The
``synthetic`` benchmark, ``dataset=synthetic``, is :mod:`retake.harness.benchmarks.synthetic`.)"""

from __future__ import annotations

from retake.needle import (
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
