#!/usr/bin/env python
"""Make the local VideoMME layout from the official download.

    python scripts/prepare_videomme.py --annotations videomme/test-00000-of-00001.parquet --videos data/ --out datasets/videomme

Reads the official annotation table (parquet, or the same rows as .json / .jsonl), checks
every row, writes ``<out>/videomme.json`` and links ``<out>/videos/<videoID>.mp4`` to each
video found under ``--videos`` (searched recursively; .mp4, .MP4, .mkv, ... accepted).
The same folder serves ``dataset=videomme`` and ``dataset=videomme_long``.
"""

from __future__ import annotations

import sys

from retake.harness.benchmarks import prepare, videomme


def main(argv=None) -> int:
    return prepare.main(videomme.PREPARE, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
