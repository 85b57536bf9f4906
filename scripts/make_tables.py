"""Tables and plots from the finished cells: `make tables`, i.e.

    python scripts/make_tables.py --runs results/runs --paper results/paper --out results

Writes <out>/table1..4.{md,csv}, <out>/ablation_grid.{md,csv} and <out>/plots/*.png, derived
only from <runs>/*/metrics.json and the paper's numbers in <paper>/table<n>.csv, and prints
the tables it wrote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retake.harness.tables import collect, plot_accuracy, write_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/runs", help="folder of run cells (each with a metrics.json)")
    parser.add_argument("--paper", default="results/paper", help="folder of the paper's table<n>.csv")
    parser.add_argument("--out", default="results", help="where the tables and plots go")
    args = parser.parse_args(argv)
    for path in write_tables(args.runs, args.paper, args.out):
        if path.suffix == ".md":
            print(f"== {path}\n{path.read_text()}")
    plots = plot_accuracy(collect(args.runs), Path(args.out) / "plots", log=lambda m: print(m, file=sys.stderr))
    for path in plots:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
