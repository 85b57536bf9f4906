#!/usr/bin/env python
"""Make the local LongVideoBench (val) layout from the official download.

    python scripts/prepare_longvideobench.py --src LongVideoBench --out datasets/longvideobench_val

``--src`` holds ``lvb_val.json`` (or give ``--annotations``: the hub's validation table,
.json / .jsonl / .parquet, with option0..option4), ``videos/`` (the untarred video
archive) and ``subtitles/``. Writes ``<out>/lvb_val.json`` and links ``<out>/videos/...``
and ``<out>/subtitles/...`` for every row.
"""

from __future__ import annotations

import sys

from retake.harness.benchmarks import longvideobench, prepare


def main(argv=None) -> int:
    return prepare.main(longvideobench.PREPARE, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
