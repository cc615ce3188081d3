#!/usr/bin/env python
"""Redraw every figure from the aggregated CSVs already in results/ (make figures).

    python scripts/figures/draw_all.py [results/quick results/full ...]

With no arguments, every folder under results/ that holds a figure's CSV is drawn.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIGURES = sorted(p.stem for p in HERE.glob("fig*.py"))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folders = [Path(a) for a in argv] or sorted(
        {p.parent for p in (HERE.parents[1] / "results").glob("*/fig*.csv")})
    if not folders:
        print("no aggregated CSVs under results/: run make reproduce-paper-quick (or smoke) first")
        return 1
    sys.path.insert(0, str(HERE))
    for folder in folders:
        for fig in FIGURES:
            for path in importlib.import_module(fig).main(["--results", str(folder)]):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
