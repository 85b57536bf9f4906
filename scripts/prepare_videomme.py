#!/usr/bin/env python
"""Make the local VideoMME layout from the official download.

    python scripts/prepare_videomme.py --annotations videomme/test-00000-of-00001.parquet --videos data/ --out datasets/videomme

Reads the official annotation table (parquet, or the same rows as .json / .jsonl), checks
every row, writes ``<out>/videomme.json`` and links ``<out>/videos/<videoID>.mp4`` to each
video found under ``--videos`` (searched recursively; .mp4, .MP4, .mkv, ... accepted).
The same folder serves ``dataset=videomme`` and ``dataset=videomme_long``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

from retake.harness import datasets as D

FIELDS = ("video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id", "task_type", "question", "options", "answer")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", required=True, help="official VideoMME table: .parquet (hub download), .json or .jsonl")
    p.add_argument("--videos", required=True, help="folder holding <videoID>.mp4 files (the unzipped video archives)")
    p.add_argument("--out", required=True, help="output data_root (videomme.json + videos/)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any video is missing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not os.path.isfile(args.annotations):
            raise FileNotFoundError(f"--annotations {args.annotations!r} is not a file")
        if not os.path.isdir(args.videos):
            raise FileNotFoundError(f"--videos {args.videos!r} is not a folder")
        rows = D.read_table(args.annotations)
        samples = [D.videomme_sample(r, args.out, f"{args.annotations} row {i}") for i, r in enumerate(rows)]
        dup = [u for u, n in Counter(s.uid for s in samples).items() if n > 1]
        if dup:
            raise ValueError(f"{args.annotations}: duplicate question_id(s) {dup[:5]}")
        found = D.index_videos(args.videos)
        for video_id in sorted({s.meta["videoID"] for s in samples}):
            if video_id in found:
                D.link(found[video_id], os.path.join(args.out, "videos", f"{video_id}.mp4"))
        D.write_json(os.path.join(args.out, "videomme.json"), [{k: r[k] for k in FIELDS if k in r} for r in rows])
        per_duration = Counter(s.meta["duration"] for s in samples)
        return D.report("videomme", args.out, args.strict, {"questions per duration": dict(sorted(per_duration.items()))})
    except (OSError, ValueError) as e:
        print(f"prepare_videomme: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
