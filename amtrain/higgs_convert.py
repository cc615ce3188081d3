"""``amtrain-higgs-convert``: UCI HIGGS text file(s) -> the HDF5 file ``dataset=higgs`` streams."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from amtrain.data.higgs import TEST_ROWS, convert, default_path
from amtrain.errors import DataError


def main(argv=None) -> int:
    root = os.environ.get("AMTRAIN_DATA", "data")
    p = argparse.ArgumentParser(
        prog="amtrain-higgs-convert",
        description="Convert HIGGS.csv.gz (label first, 28 features; comma- or tab-separated, gzipped or "
                    "not) to HDF5. Several files are read in order as one; the last --test-rows rows are "
                    "the test set.")
    p.add_argument("sources", nargs="+", help="HIGGS text file(s), e.g. HIGGS.csv.gz")
    p.add_argument("-o", "--out", default=str(default_path(root)),
                   help="output HDF5 file (default: $AMTRAIN_DATA/HIGGS/HIGGS.h5, where dataset=higgs looks)")
    p.add_argument("--test-rows", type=int, default=TEST_ROWS, help="rows at the end kept as the test set (500000)")
    p.add_argument("--chunk-rows", type=int, default=500_000, help="rows parsed at a time (memory)")
    p.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none",
                   help="HDF5 compression (none reads fastest)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    tty = sys.stderr.isatty()

    def progress(rows: int) -> None:
        if tty:
            sys.stderr.write(f"\r{rows:,} rows, {rows / (time.perf_counter() - t0):,.0f} rows/s\x1b[K")

    try:
        summary = convert(args.sources, args.out, test_rows=args.test_rows, chunk_rows=args.chunk_rows,
                          compression=None if args.compression == "none" else args.compression, progress=progress)
    except DataError as e:
        print(f"\namtrain-higgs-convert: error: {e}" if tty else f"amtrain-higgs-convert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\namtrain-higgs-convert: interrupted; no output file was written", file=sys.stderr)
        return 130
    dt = time.perf_counter() - t0
    rows = summary["n_train"] + summary["n_test"]
    if tty:
        sys.stderr.write("\n")
    print(f"wrote {Path(summary['path'])}: {summary['n_train']:,} train + {summary['n_test']:,} test rows "
          f"in {dt:.1f}s ({rows / dt:,.0f} rows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
