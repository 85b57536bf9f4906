"""The former name of :mod:`retake.harness.benchmarks.synthetic` (the ``synthetic`` benchmark
and the tiny copies of every layout), kept so that ``python -m retake.harness.synthetic_data``
and ``from retake.harness.synthetic_data import write_synthetic_benchmark`` still work."""

from __future__ import annotations

from retake.harness.benchmarks.synthetic import (
    BROKEN_KINDS,
    DEFAULT_FORMATS,
    FOLDERS,
    FORMATS,
    main,
    write_synthetic_benchmark,
)

__all__ = ["BROKEN_KINDS", "DEFAULT_FORMATS", "FOLDERS", "FORMATS", "main", "write_synthetic_benchmark"]

if __name__ == "__main__":
    raise SystemExit(main())
