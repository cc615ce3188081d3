#!/usr/bin/env python
"""Seconds per iteration and peak memory of the full-batch methods, each in its own process.

    python scripts/bench_family.py                       # every method on 784-100-100-10, and the authors' networks
    python scripts/bench_family.py --n 20000 --reps 2 --only bcd:mlp_3x1500

One iteration of a full-batch method is one pass over the N training rows (784 features,
10 classes: MNIST's shape, generated, so no dataset is needed). For every (method, model) a
fresh process builds the trainer, runs one iteration (which allocates the per-sample state),
then times ``--reps`` more and prints the median; peak memory is the process's maximum
resident set, less what it held before the first iteration (the data and the network).
Runs are sequential: on a 2-core machine two at once would time each other.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from _args import check_choices, options, positive_int

DEFAULT = ["admm:mlp_2x100", "am_adam_off:mlp_2x100", "am_mem_off:mlp_2x100", "dladmm:mlp_2x100",
           "mdlam:mlp_2x100", "mdlam:mlp_2x100:optim.accelerate=false", "bcd:mlp_2x100",
           "dladmm:mlp_2x1000", "bcd:mlp_3x1500"]


def child(method: str, model: str, extra: list, n: int, reps: int) -> dict:
    import torch

    from amtrain.cli import compose
    from amtrain.data import build_data
    from amtrain.models import build_model
    from amtrain.optim import build_trainer

    cfg = compose(["dataset=synthetic", f"dataset.n_train={n}", "dataset.n_test=10", "dataset.n_features=784",
                   "dataset.n_classes=10", f"optim={method}", f"model={model}", "device=cpu", *extra])
    torch.manual_seed(0)
    data = build_data(cfg.dataset)
    net = build_model(cfg.model, data.in_shape, data.n_classes)
    trainer = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gen = torch.Generator().manual_seed(0)
    trainer.epoch(data, cfg.batch_size, gen)  # allocates the state
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        trainer.epoch(data, cfg.batch_size, gen)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_iter": statistics.median(times), "peak_mb": peak - before, "threads": torch.get_num_threads()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=positive_int, default=60000, help="training rows (MNIST: 60,000)")
    p.add_argument("--reps", type=positive_int, default=3, help="timed iterations after the first")
    p.add_argument("--only", default=None, help="comma-separated method:model[:override...] entries")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for entry in (a.only.split(",") if a.only else []):
        method, _, rest = entry.partition(":")
        check_choices(p, "--only (method)", [method], options("optim"))
        check_choices(p, "--only (model)", [rest.split(":")[0]], options("model"))
    if a.child:
        method, model, *extra = a.child.split(":")
        print(json.dumps(child(method, model, extra, a.n, a.reps)))
        return
    rows = []
    for entry in (a.only.split(",") if a.only else DEFAULT):
        r = subprocess.run([sys.executable, __file__, "--child", entry, "--n", str(a.n), "--reps", str(a.reps)],
                           capture_output=True, text=True)
        if r.returncode:
            print(f"{entry}: failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            continue
        rows.append((entry, json.loads(r.stdout.strip().splitlines()[-1])))
        print(f"{entry}: {rows[-1][1]}", file=sys.stderr, flush=True)
    print(f"N = {a.n:,} rows of 784 features, 10 classes; median of {a.reps} iterations after the first; "
          f"{rows[0][1]['threads'] if rows else '?'} threads")
    print("| method | model | s / iteration | peak memory (MB, state and temporaries) |")
    print("|---|---|---|---|")
    for entry, r in rows:
        method, model, *extra = entry.split(":")
        label = method + (f" ({' '.join(extra)})" if extra else "")
        print(f"| {label} | {model} | {r['s_per_iter']:.2f} | {r['peak_mb']:,.0f} |")


if __name__ == "__main__":
    main()
