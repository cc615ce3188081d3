#!/usr/bin/env python
"""The Elman RNN's step at the paper's size: BPTT against AM-Adam's code passes.

    python scripts/bench_rnn.py                    # T = 784, d = 15, batch 1024, every read-out
    python scripts/bench_rnn.py --steps 3 --readouts sequence --device cuda

For each read-out, interleaved in one process: one SGD step (BPTT through torch's fused
nn.RNN), and one AM-Adam step three ways: the reference code pass (``optim.fast=false``:
the read-out's and the successor's gradients apart, logits as rows), the fast pass (one
fused gradient per code step, logits as (outputs, samples)), on CUDA that pass and the
encoding replayed as captured CUDA graphs (``optim.cuda_graph``, the default there; "fast"
is the same pass launched kernel by kernel), the Jacobi variant (``optim.codes.order=jacobi``:
every step at once), and the fast pass compiled (``optim.compile=true``), on CUDA also its
compiled kernels captured as a graph. Median ms per step over ``--steps`` after one warm-up; the ratios
are to SGD's step. ``--code-iters K`` sets AM-Adam's code iterations (optim.codes.iters;
default: the config's, which conf/tuned/am_adam_rnn_release.yaml sets to 1; the release's
is 5). The warm-up's excess over the median is each way's one-off cost, for the compiled
way its compile time, for the graphed one its capture: printed below the table.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from amtrain.cli import compose
from amtrain.models import build_model
from amtrain.optim import build_trainer
from _args import add_malloc_flag, apply_malloc_flag, check_choices, device_name, positive_int

ALL_WAYS = {"sgd (BPTT)": ["optim=sgd"], "am_adam reference": ["optim=am_adam", "optim.fast=false"],
            "am_adam fast": ["optim=am_adam", "optim.cuda_graph=false"],
            "am_adam graphed": ["optim=am_adam", "optim.cuda_graph=true"],
            "am_adam compiled": ["optim=am_adam", "optim.compile=true", "optim.cuda_graph=false"],
            "am_adam compiled graphed": ["optim=am_adam", "optim.compile=true", "optim.cuda_graph=true"],
            "am_adam jacobi": ["optim=am_adam", "optim.codes.order=jacobi"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=5)
    p.add_argument("--batch", type=positive_int, default=1024)
    p.add_argument("--hidden", type=positive_int, default=15)
    p.add_argument("--readouts", default="last,sequence,mean")
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--code-iters", type=positive_int, default=None,
                   help="AM-Adam's code iterations K (optim.codes.iters)")
    add_malloc_flag(p)
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled ways (a compile: ~30 s with a cold cache)")
    a = p.parse_args(argv)
    apply_malloc_flag(a)
    check_choices(p, "--readouts", a.readouts.split(","), ["last", "sequence", "mean"])
    WAYS = {w: o for w, o in ALL_WAYS.items() if not (a.no_compile and "optim.compile=true" in o)
            and not (a.device != "cuda" and "optim.cuda_graph=true" in o)}  # graphs: CUDA only
    am_extra = [] if a.code_iters is None else [f"optim.codes.iters={a.code_iters}"]
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (a.batch,), generator=g).to(device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)  # noqa: E731
    K = compose(["model=rnn", "optim=am_adam", "dataset=mnist", *am_extra]).optim.codes.iters  # the tuned file's, or --code-iters
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.device}, T = 784, d = {a.hidden}, "
          f"batch {a.batch}, AM-Adam K = {K}, keep_freed_memory={a.keep_freed_memory}; median ms per step of "
          f"{a.steps} after one warm-up, interleaved")
    print("| read-out | " + " | ".join(WAYS) + " | " + " | ".join(f"{w} / sgd" for w in list(WAYS)[1:]) + " |")
    print("|---|" + "---|" * (2 * len(WAYS) - 1))
    warmups = []
    for readout in a.readouts.split(","):
        trainers = {}
        for way, overrides in WAYS.items():
            cfg = compose(["model=rnn", f"model.hidden={a.hidden}", f"model.readout={readout}", "dataset=mnist",
                           *overrides, *(am_extra if "optim=am_adam" in overrides else [])])
            torch.manual_seed(0)
            net = build_model(cfg.model, (1, 28, 28), 10).to(device)
            trainers[way] = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
        times = {w: [] for w in WAYS}
        for i in range(a.steps + 1):
            for way, tr in trainers.items():
                sync()
                t0 = time.perf_counter()
                tr.step(x, y)
                sync()
                times[way].append(time.perf_counter() - t0)
        ms = {w: statistics.median(v[1:]) * 1000 for w, v in times.items()}
        base = ms["sgd (BPTT)"]
        print(f"| {readout} | " + " | ".join(f"{ms[w]:.0f}" for w in WAYS) + " | "
              + " | ".join(f"{ms[w] / base:.2f}" for w in list(WAYS)[1:]) + " |", flush=True)
        warmups.append(f"{readout}: " + ", ".join(f"{w} {times[w][0] - ms[w] / 1000:.1f} s" for w in WAYS))
    print("one-off cost of the first step (its time less the median):\n" + "\n".join(warmups))


if __name__ == "__main__":
    main()
