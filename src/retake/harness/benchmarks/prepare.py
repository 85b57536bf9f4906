"""The one skeleton of every ``scripts/prepare_<benchmark>.py``: the benchmark's own options
then ``--out`` and ``--strict``; the benchmark module's ``make`` builds the local layout from
the official download (rows checked, annotation file written with the official field names,
videos symlinked); the result is loaded with the real loader and summarised. Bad input (a
missing file, a malformed row, a duplicate id) is exit code 2 with one line naming the file,
the row and the problem; missing videos only warn unless ``--strict`` (exit 1)."""

from __future__ import annotations

import argparse
import os
import sys

from retake.harness.benchmarks.common import Preparer
from retake.harness.datasets import get_dataset
from retake.harness.samples import Sample


def main(preparer: Preparer, doc: str | None, argv=None) -> int:
    """Run one prepare script: ``doc`` (the script's docstring) is its ``--help`` text."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    preparer.arguments(p)
    p.add_argument("--out", required=True, help=preparer.out_help)
    p.add_argument("--strict", action="store_true", help="exit 1 if any video is missing")
    args = p.parse_args(argv)
    try:
        dataset, extra = preparer.make(args)
        return report(dataset, args.out, args.strict, extra)
    except (OSError, ValueError) as e:
        print(f"{preparer.prog}: error: {e}", file=sys.stderr)
        return 2


def missing_videos(samples: list[Sample]) -> list[str]:
    """The distinct video paths of ``samples`` that do not exist, sorted."""
    return sorted({s.video for s in samples if not os.path.exists(s.video)})


def report(name: str, data_root: str, strict: bool = False, extra: dict | None = None) -> int:
    """Load ``data_root`` with the real loader (validating every row), print a summary and
    return the exit code: 1 if videos are missing and ``strict``, else 0."""
    samples = get_dataset(name).load(data_root)
    missing = missing_videos(samples)
    n_videos = len({s.video for s in samples})
    print(f"{name}: {len(samples)} questions, {n_videos} videos under {os.path.abspath(data_root)}")
    for k, v in (extra or {}).items():
        print(f"  {k}: {v}")
    if missing:
        print(f"  WARNING {len(missing)} of {n_videos} videos missing (each will be a failed sample), e.g.:")
        for path in missing[:10]:
            print(f"    {path}")
    else:
        print("  all videos present")
    return 1 if missing and strict else 0
