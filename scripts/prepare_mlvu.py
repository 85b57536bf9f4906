#!/usr/bin/env python
"""Make the local MLVU layout (dev or test) from the official download.

    python scripts/prepare_mlvu.py --src MLVU --out datasets/mlvu_dev
    python scripts/prepare_mlvu.py --split test --src MLVU_Test --out datasets/mlvu_test

dev: ``--src`` holds ``json/<k>_<type>.json`` (or ``json/<type>.json``) for the seven
multiple-choice types and ``video/<k>_<type>/`` (or ``video/<type>/``); the generation tasks
(8_sub_scene, 9_summary) are not used. Writes ``<out>/json/<k>_<type>.json`` and links
``<out>/video/<type>/<video>``.

test: ``--src`` holds ``leaderboard/test_question.json`` (or ``test_question.json``, or give
``--questions``) and ``video/``.
Writes ``<out>/test_question.json`` and links ``<out>/video/<video>``.
"""

from __future__ import annotations

import sys

from retake.harness.benchmarks import mlvu, prepare


def main(argv=None) -> int:
    return prepare.main(mlvu.PREPARE, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
