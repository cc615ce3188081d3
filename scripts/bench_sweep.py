#!/usr/bin/env python
"""Per-job time of a sweep run serially and by joblib, with and without amtrain's thread shares.

    python scripts/bench_sweep.py                 # 3 rounds, 2 jobs each, AM-Adam and SGD on 784-100-100-10
    python scripts/bench_sweep.py --rounds 5 --train 20000

Each round runs the same 2-job sweep (seeds 0 and 1) three ways, interleaved so the
machine's noise hits all of them alike:

* ``serial``: the basic launcher, one job at a time, each with every core;
* ``joblib, all threads``: ``hydra.launcher.n_jobs=2`` with ``threads=<cores>``, what
  every job did before amtrain shared the cores (each process uses every core);
* ``joblib, shared``: ``n_jobs=2`` with the default ``threads=null``: cores / 2 each.

It prints a table of the median training time per job (``train_time`` from each job's
DONE, so start-up is excluded) and the median wall time of the whole sweep. Data: a
generated 784-feature, 10-class problem, so no dataset is needed.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amtrain.cli import command
from amtrain.rundir import parse_done
from amtrain.sweep import cores
from _args import check_choices, options, positive_int


def sweep(root: Path, name: str, optim: str, train: int, launcher: list, threads) -> tuple:
    args = command() + ["-m", "dataset=synthetic", f"dataset.n_train={train}", "dataset.n_test=2000",
                        "dataset.n_features=784", "dataset.n_classes=10", f"optim={optim}", "model=mlp_2x100",
                        "epochs=1", "eval.first_epoch_batches=0", "progress=false", "device=cpu", "seed=0,1",
                        f"hydra.sweep.dir={root / name}", "resume=false"] + launcher
    if threads:
        args.append(f"threads={threads}")
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{name}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    times = [float(parse_done(p.read_text())["train_time"]) for p in (root / name).glob("*/DONE")]
    return times, wall


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=positive_int, default=3)
    p.add_argument("--train", type=positive_int, default=10000, help="training samples per job (batch 200)")
    p.add_argument("--optims", default="am_adam,sgd")
    a = p.parse_args(argv)
    check_choices(p, "--optims", a.optims.split(","), options("optim"))
    n = cores()
    ways = {"serial (basic launcher)": ([], None),
            f"joblib n_jobs=2, threads={n} each": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], n),
            f"joblib n_jobs=2, shared (threads={max(1, n // 2)} each)": (["hydra/launcher=joblib",
                                                                          "hydra.launcher.n_jobs=2"], None)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="amtrain-bench-sweep-") as tmp:
        for optim in a.optims.split(","):
            per_job = {w: [] for w in ways}
            walls = {w: [] for w in ways}
            for r in range(a.rounds):
                for i, (way, (launcher, threads)) in enumerate(ways.items()):
                    times, wall = sweep(Path(tmp), f"{optim}_{r}_{i}", optim, a.train, launcher, threads)
                    per_job[way] += times
                    walls[way].append(wall)
            base = statistics.median(per_job[next(iter(ways))])
            for way in ways:
                job = statistics.median(per_job[way])
                rows.append((optim, way, job, job / base, statistics.median(walls[way])))
    print(f"{n} cores, {a.rounds} rounds, 2 jobs of {a.train} samples (batch 200) per sweep; medians")
    print("| method | how | s per job (training) | vs serial | s per sweep (wall) |")
    print("|---|---|---|---|---|")
    for optim, way, job, ratio, wall in rows:
        print(f"| {optim} | {way} | {job:.2f} | {ratio:.2f} | {wall:.1f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
