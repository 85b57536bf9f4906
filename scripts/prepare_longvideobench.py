#!/usr/bin/env python
"""Make the local LongVideoBench (val) layout from the official download.

    python scripts/prepare_longvideobench.py --src LongVideoBench --out datasets/longvideobench_val

``--src`` holds ``lvb_val.json`` (or give ``--annotations``: the hub's validation table,
.json / .jsonl / .parquet, with option0..option4), ``videos/`` (the untarred video
archive) and ``subtitles/``. Writes ``<out>/lvb_val.json`` and links ``<out>/videos/...``
and ``<out>/subtitles/...`` for every row.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

from retake.harness import datasets as D


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="the downloaded LongVideoBench folder (videos/, subtitles/)")
    p.add_argument("--annotations", help="validation annotations (default: <src>/lvb_val.json)")
    p.add_argument("--out", required=True, help="output data_root")
    p.add_argument("--strict", action="store_true", help="exit 1 if any video is missing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not os.path.isdir(args.src):
            raise FileNotFoundError(f"--src {args.src!r} is not a folder")
        path = args.annotations or os.path.join(args.src, "lvb_val.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"annotation file {path!r} not found (give --annotations)")
        rows = D.read_table(path)
        samples = [D.lvb_sample(r, args.out, f"{path} row {i}", None) for i, r in enumerate(rows)]
        dup = [u for u, n in Counter(s.uid for s in samples).items() if n > 1]
        if dup:
            raise ValueError(f"{path}: duplicate id(s) {dup[:5]}")
        missing_subs = set()
        for row in rows:
            for folder, key in (("videos", "video_path"), ("subtitles", "subtitle_path")):
                if not row.get(key):
                    continue
                source = os.path.join(args.src, folder, row[key])
                if os.path.exists(source):
                    D.link(source, os.path.join(args.out, folder, row[key]))
                elif folder == "subtitles":
                    missing_subs.add(row[key])
        D.write_json(os.path.join(args.out, "lvb_val.json"), rows)
        extra = {
            "questions per duration group": dict(sorted(Counter(s.meta["duration_group"] for s in samples).items(), key=lambda kv: int(kv[0]))),
            "missing subtitle files (prompt without subtitles)": len(missing_subs),
        }
        return D.report("longvideobench_val", args.out, args.strict, extra)
    except (OSError, ValueError) as e:
        print(f"prepare_longvideobench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
