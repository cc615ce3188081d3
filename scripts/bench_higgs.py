#!/usr/bin/env python
"""Benchmark the HIGGS pipeline: conversion and streaming speed, peak memory, at several sizes.

    python scripts/bench_higgs.py                      # 1M and 10M rows (about 2 minutes, 4 GB of disk)
    python scripts/bench_higgs.py --rows 1000000 --gzip

For each size it writes a HIGGS-shaped text file (label + 28 features, 3 decimals like
the UCI file), converts it with amtrain's converter, then streams one training epoch
into batches of 200 torch tensors (shuffled, standardised) — each stage in its own
process, so the peak resident memory (RSS) is that stage's alone. Targets on a 2-core
machine: streaming >= 2,000,000 rows/s, peak RSS < 1 GB at 10M rows and not growing
with the file.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _args import nonnegative_int, positive_int

CONVERT = """
import json, resource, sys, time
from amtrain.data.higgs_convert import convert
t = time.perf_counter()
out = convert(sys.argv[1], sys.argv[2], test_rows=int(sys.argv[3]))
dt = time.perf_counter() - t
print(json.dumps(dict(seconds=dt, rows=out["n_train"] + out["n_test"],
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""

STREAM = """
import json, resource, sys, time, torch
from amtrain.data.higgs import HiggsStream
s = HiggsStream(sys.argv[1], standardize=True, num_workers=int(sys.argv[2]))
t = time.perf_counter()
rows = batches = 0
for x, y in s.train_batches(200, torch.Generator().manual_seed(0)):
    rows += y.shape[0]
    batches += 1
dt = time.perf_counter() - t
assert rows == s.n_train, (rows, s.n_train)
print(json.dumps(dict(seconds=dt, rows=rows, batches=batches,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def write_text(path: Path, n: int, gz: bool, template_rows: int = 200_000) -> None:
    """n rows: a random block of ``template_rows`` rows formatted once and repeated (speed does not
    depend on the values; formatting 10M rows with pandas alone would take minutes)."""
    import gzip
    import io

    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(template_rows, 28)).astype(np.float32)
    y = (x[:, :3].sum(1) > 0).astype(np.float32)
    buf = io.StringIO()
    pd.DataFrame(np.column_stack([y, x])).to_csv(buf, header=False, index=False, float_format="%.3f")
    lines = buf.getvalue().splitlines(keepends=True)
    block = "".join(lines)
    opener = gzip.open(path, "wt", compresslevel=1) if gz else open(path, "w")
    with opener as fh:
        for _ in range(n // template_rows):
            fh.write(block)
        fh.write("".join(lines[: n % template_rows]))


def stage(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=positive_int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--test-rows", type=positive_int, default=500_000)
    p.add_argument("--gzip", action="store_true", help="gzip the text file, as the UCI download is")
    p.add_argument("--workers", type=nonnegative_int, default=0, help="DataLoader workers for streaming")
    p.add_argument("--workdir", default=None, help="where to put the files (default: a temporary folder)")
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_higgs_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in args.rows:
            src = work / (f"higgs_{n}.csv.gz" if args.gzip else f"higgs_{n}.csv")
            dst = work / f"higgs_{n}.h5"
            t = time.perf_counter()
            write_text(src, n, args.gzip)
            print(f"wrote {n:,} rows of text in {time.perf_counter() - t:.1f}s ({src.stat().st_size / 1e6:,.0f} MB)",
                  file=sys.stderr)
            conv = stage(CONVERT, src, dst, min(args.test_rows, n // 2))
            stream = stage(STREAM, dst, args.workers)
            rows.append((n, conv, stream, dst.stat().st_size))
            src.unlink()
            dst.unlink()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nHIGGS pipeline benchmark ({'gzip' if args.gzip else 'plain'} text, {args.workers} stream workers, "
          "batch 200, one process per stage)")
    print(f"| {'rows':>12} | {'HDF5 MB':>8} | {'convert s':>9} | {'convert rows/s':>14} | {'convert peak RSS MB':>19} "
          f"| {'stream rows/s':>13} | {'stream peak RSS MB':>18} |")
    print("|" + "|".join("-" * (w + 2) for w in (12, 8, 9, 14, 19, 13, 18)) + "|")
    for n, conv, stream, size in rows:
        print(f"| {n:>12,} | {size / 1e6:>8,.0f} | {conv['seconds']:>9.1f} | {conv['rows'] / conv['seconds']:>14,.0f} "
              f"| {conv['peak_rss_mb']:>19,.0f} | {stream['rows'] / stream['seconds']:>13,.0f} "
              f"| {stream['peak_rss_mb']:>18,.0f} |")


if __name__ == "__main__":
    main()
