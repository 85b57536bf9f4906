#!/usr/bin/env python
"""Make the local LVBench layout from the official download.

    python scripts/prepare_lvbench.py --meta video_info.meta.jsonl --videos videos/ --out datasets/lvbench

``--meta`` is the official annotation file (one JSON line per video: key, type, qa);
``--videos`` the folder of downloaded videos named ``<key>.<ext>`` (searched recursively).
Writes ``<out>/video_info.meta.jsonl`` and links ``<out>/videos/<key>.mp4``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

from retake.harness import datasets as D


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meta", required=True, help="official video_info.meta.jsonl")
    p.add_argument("--videos", required=True, help="folder of <key>.mp4 videos")
    p.add_argument("--out", required=True, help="output data_root")
    p.add_argument("--strict", action="store_true", help="exit 1 if any video is missing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not os.path.isfile(args.meta):
            raise FileNotFoundError(f"--meta {args.meta!r} is not a file")
        if not os.path.isdir(args.videos):
            raise FileNotFoundError(f"--videos {args.videos!r} is not a folder")
        videos = D.read_jsonl(args.meta)
        samples = [s for i, v in enumerate(videos) for s in D.lvbench_samples(v, args.out, f"{args.meta} line {i + 1}")]
        dup = [u for u, n in Counter(s.uid for s in samples).items() if n > 1]
        if dup:
            raise ValueError(f"{args.meta}: duplicate uid(s) {dup[:5]}")
        found = D.index_videos(args.videos)
        for key in sorted({str(v["key"]) for v in videos}):
            if key in found:
                D.link(found[key], os.path.join(args.out, "videos", f"{key}.mp4"))
        D.write_json(os.path.join(args.out, "video_info.meta.jsonl"), videos, lines=True)
        per_type = Counter(t for s in samples for t in s.meta["question_type"])
        return D.report("lvbench", args.out, args.strict, {"questions per type (a question may have several)": dict(per_type)})
    except (OSError, ValueError) as e:
        print(f"prepare_lvbench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
