#!/usr/bin/env python
"""Make the local LVBench layout from the official download.

    python scripts/prepare_lvbench.py --meta video_info.meta.jsonl --videos videos/ --out datasets/lvbench

``--meta`` is the official annotation file (one JSON line per video: key, type, qa);
``--videos`` the folder of downloaded videos named ``<key>.<ext>`` (searched recursively).
Writes ``<out>/video_info.meta.jsonl`` and links ``<out>/videos/<key>.mp4``.
"""

from __future__ import annotations

import sys

from retake.harness.benchmarks import lvbench, prepare


def main(argv=None) -> int:
    return prepare.main(lvbench.PREPARE, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
