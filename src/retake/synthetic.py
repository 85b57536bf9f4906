"""The former name of :mod:`retake.needle` (the needle benchmark, ``dataset=needle``), kept so
that ``python -m retake.synthetic --size 64`` and ``from retake.synthetic import ...`` still
work: the same names and the same command line. New code uses ``retake.needle``. (The
``synthetic`` benchmark, ``dataset=synthetic``, is :mod:`retake.harness.benchmarks.synthetic`.)"""

from __future__ import annotations

from retake.needle import *  # noqa: F401,F403 - every public name of retake.needle
from retake.needle import __all__, main  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
