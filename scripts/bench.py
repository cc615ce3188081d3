#!/usr/bin/env python
"""Time one training step of every method on every model, side by side, in one process.

    python scripts/bench.py                       # CPU (and CUDA when available), release-mode defaults
    python scripts/bench.py --models mlp_2x100 --steps 300 --mode paper

Online methods: median milliseconds per mini-batch step (batch 200) after warm-up,
interleaved round-robin so that every method sees the same machine state; the ratio
is to Adam's median on the same model and device. Full-batch methods (offline AM,
ADMM): median seconds per epoch (= one iteration) over ``--offline-rows`` samples.
Data is generated in each model's shapes, so the benchmark runs anywhere. Peak memory:
CUDA peak allocated per method; on CPU the process's peak RSS is printed once.

``--sync`` prints only the clock table: the same steps with a host sync after each (how
the training loop timed steps before) and without (how it runs on CUDA now); on the CPU
the two are the same by construction.

``--seeds`` prints only the seed-axis table (amtrain.seeds): S = 1, 2, 5, 10 copies of a
model trained in one step on stacked weights, against S separate single-seed steps (``--models
rnn``: AM-Adam on Figure 6's RNN, batch 1024, when named). It
reports ms per seed-step (the stacked step / S) and the speed-up (single-seed step / that),
every configuration timed in the same interleaved rounds. Beside each, the floor under
the stacked step: its matrix products and convolutions (recorded from the step itself,
:class:`Products`) replayed alone on fresh tensors of the same shapes, plus what its other
operations cost with almost no data (the same step at 4 samples a seed, less its own
products): the price of running those operations at all. The bound is S single-seed
steps over that floor; where it is under a target, these operations cannot meet it on
this machine, however well each is batched: only less arithmetic per seed raises it.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from amtrain.cli import compose
from amtrain.data.base import TensorData
from amtrain.errors import ConfigError
from amtrain.models import build_model
from amtrain.models.stacked import stack
from amtrain.optim import build_trainer
from amtrain.optim.am import memory
from _args import add_malloc_flag, apply_malloc_flag, check_choices, device_name, nonnegative_int, positive_int

ONLINE = ["adam", "sgd", "am_adam", "am_mem"]
OFFLINE = ["am_adam_off", "am_mem_off", "admm"]
SHAPES = {"mlp_2x100": ((1, 28, 28), 10), "mlp_2x500": ((1, 28, 28), 10), "higgs_mlp": ((28,), 2),
          "lenet5": ((1, 28, 28), 10), "rnn": ((1, 28, 28), 10)}
SEED_MODELS = {"mlp_2x100": ((1, 28, 28), 10), "mlp_2x500": ((1, 28, 28), 10), "higgs_mlp": ((28,), 2),
               "binary_mlp": ((1, 28, 28), 10), "lenet5": ((1, 28, 28), 10), "rnn": ((1, 28, 28), 10)}
# The seed-axis table's RNN is Figure 6's: the whole sequence read out, AM-Adam only (BPTT has no seed axis)
SEED_OVERRIDES = {"rnn": ["model.readout=sequence"]}
# The RNN (T = 784 steps, d = 15) runs at the paper's batch 1024 and for fewer steps: one
# AM-Adam step is about half a second on a 2-core CPU.
RNN_BATCH = 1024


def make(optim: str, model: str, mode: str, device, seed: int = 0):
    cfg = compose([f"optim={optim}", f"model={model}", f"mode={mode}", "dataset=synthetic", "device=cpu"])
    in_shape, n_classes = SHAPES[model]
    torch.manual_seed(seed)
    net = build_model(cfg.model, in_shape, n_classes).to(device)
    return build_trainer(cfg.optim, cfg.mu, cfg.mode, net), cfg


def batch(model: str, n: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    in_shape, n_classes = SHAPES[model]
    return torch.randn((n,) + in_shape, generator=g).to(device), torch.randint(0, n_classes, (n,), generator=g).to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns, steps, warmup, device):
    """Call every fn(round) once per round, round-robin so that all see the same machine
    state; median ms of each over the rounds after the warm-up ones."""
    times = {k: [] for k in fns}
    for i in range(warmup + steps):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn(i)
            sync(device)
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def buildable(methods, model, mode, device):
    """The trainers a model supports (AM-mem and ADMM need Linear layers): name -> trainer or None."""
    out = {}
    for m in methods:
        try:
            out[m] = make(m, model, mode, device)[0]
        except ConfigError:
            out[m] = None
    return out


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def bench_online(model, mode, device, steps, warmup, batch_size):
    if model == "rnn":
        batch_size, steps, warmup = RNN_BATCH, max(3, steps // 40), 2
    built = buildable(ONLINE, model, mode, device)
    trainers = {m: t for m, t in built.items() if t is not None}
    batches = [batch(model, batch_size, device, seed=s) for s in range(8)]
    median = interleaved({m: (lambda i, tr=tr: tr.step(*batches[i % len(batches)])) for m, tr in trainers.items()},
                         steps, warmup, device)
    peak = {}
    if device.type == "cuda":
        for m, tr in trainers.items():
            torch.cuda.reset_peak_memory_stats(device)
            tr.step(*batches[0])
            sync(device)
            peak[m] = torch.cuda.max_memory_allocated(device) / 2**20
    ms = {m: median.get(m) for m in ONLINE}
    return ms, {m: peak.get(m) for m in ONLINE} if peak else {}


def bench_offline(model, mode, device, rows, epochs, batch_size):
    x, y = batch(model, rows, device, seed=1)
    data = TensorData(x, y, x[:10], y[:10], SHAPES[model][1])
    out = {}
    for m, tr in buildable(OFFLINE + ["adam"], model, mode, device).items():
        if tr is None:
            out[m] = None
            continue
        times = []
        for e in range(epochs + 1):
            sync(device)
            t0 = time.perf_counter()
            if tr.full_batch:
                tr.epoch(data, batch_size, torch.Generator().manual_seed(e))
            else:  # one epoch of Adam mini-batch steps, for scale
                for s in range(0, rows, batch_size):
                    tr.step(x[s:s + batch_size], y[s:s + batch_size])
            sync(device)
            if e:
                times.append(time.perf_counter() - t0)
        out[m] = statistics.median(times)
    return out


def weight_update_streams(model, mode, device, steps, warmup, batch_size):
    """AM-Adam's weight update (Alg. 2.3) two ways on CUDA: one backward through the sum of
    the layers' local losses (amtrain's step), or every layer's local problem on its own
    CUDA stream (the paper's layer parallelism). Median ms of the update alone."""
    tr, _ = make("am_adam", model, mode, device)
    x, y = batch(model, batch_size, device)
    mu = tr.mu.value
    c = tr.update_codes(tr.encode(x), y, mu)
    a = tr.net.activations(x, c)
    L = tr.net.L
    groups = [list(b.parameters()) for b in tr.net.blocks] + [list(tr.net.head.parameters())]
    streams = [torch.cuda.Stream(device) for _ in groups]

    def fused():
        tr.update_weights(a, c, y, mu)

    def concurrent():
        tr.opt.zero_grad(set_to_none=True)
        main_stream = torch.cuda.current_stream(device)
        for l, st in enumerate(streams):
            st.wait_stream(main_stream)
            with torch.cuda.stream(st):
                loss = tr.output_loss(a[L], y) if l == L else tr.local_loss(l, a[l], c[l], mu)
                loss.backward()
        for st in streams:
            main_stream.wait_stream(st)
        tr.optimizer_step()

    return interleaved({"fused": lambda i: fused(), "streams": lambda i: concurrent()}, steps, warmup, device)


def am_mem_products(model, mode, device, steps, warmup, batch_size):
    """AM-mem's dense products alone, back to back with nothing else between them:
    the encoding's, K - 1 forward and K backward products per code solve (the first step
    reuses the encoding's), the output layer's two, and per hidden layer the memory update
    and the BCD sweep exactly as AMMem runs them (CoActivationMemory.update, memory.bcd).
    A floor for AM-mem's step on this machine. Median ms of those, of AM-mem's step and of
    Adam's, interleaved."""
    am, cfg = make("am_mem", model, mode, device)
    adam, _ = make("adam", model, mode, device)
    layers = [b.linear() for b in am.net.blocks] + [am.net.head]
    widths = [layers[0].in_features] + [lin.out_features for lin in layers]
    K, N = cfg.optim.codes.iters, batch_size
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    W = [rand(m, n) / n ** 0.5 for n, m in zip(widths[:-1], widths[1:])]
    a = [rand(N, n).relu() for n in widths[:-1]]  # a_0 .. a_L
    d = [rand(N, m) for m in widths[1:]]  # upstream gradients / codes, per layer
    mems = [memory.CoActivationMemory(n, m, bias=True, forget=cfg.optim.forget, device=device)
            for n, m in zip(widths[:-2], widths[1:-1])]
    W_aug = [rand(m, n + 1) / n ** 0.5 for n, m in zip(widths[:-2], widths[1:-1])]

    def products():
        for l in range(len(W)):
            torch.mm(a[l], W[l].T)  # encodeInput
        for l in range(1, len(W)):  # the code solves through f_{l+1} (the head for the top code)
            for _ in range(K - 1):
                torch.mm(a[l], W[l].T)
            for _ in range(K):
                torch.mm(d[l], W[l])
        torch.mm(a[-1], W[-1].T), torch.mm(d[-1].T, a[-1])  # output layer: forward, dW
        for l, mem in enumerate(mems):  # updateMemory and the BCD sweep of eq. 7
            mem.update(a[l], d[l])
            memory.bcd(W_aug[l], mem.A_low, mem.B, cfg.optim.bcd_sweeps, cfg.optim.ridge)

    x, y = batch(model, batch_size, device)
    return interleaved({"adam": lambda i: adam.step(x, y), "am_mem": lambda i: am.step(x, y),
                        "products": lambda i: products()}, steps, warmup, device)


class Products(TorchDispatchMode):
    """Records the matrix products and convolutions a piece of code runs (below autograd, so a
    backward's too), as (op, args, kwargs) with every tensor replaced by a fresh random one of
    the same shape, strides, dtype and device; :meth:`replay` runs them back to back."""

    OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default, torch.ops.aten.mm.out, torch.ops.aten.addmm.out, torch.ops.aten.bmm.out,
           torch.ops.aten.baddbmm.out, torch.ops.aten.convolution.default,
           torch.ops.aten.convolution_backward.default}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.OPS:
            def fresh(t):
                if not isinstance(t, torch.Tensor):
                    return t
                if 0 in t.stride():  # a broadcast (expanded) operand: fresh values along its real axes only
                    real = [1 if st == 0 else n for n, st in zip(t.shape, t.stride())]
                    return torch.randn(real, dtype=t.dtype, device=t.device).expand(t.shape)
                return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).normal_()
            self.calls.append((func, tree_map(fresh, args), tree_map(fresh, kwargs)))
        return func(*args, **kwargs)

    @classmethod
    def of(cls, fn) -> "Products":
        with cls() as rec:
            fn()
        return rec

    def replay(self) -> None:
        for func, args, kwargs in self.calls:
            func(*args, **kwargs)


TINY_BATCH = 4  # samples a seed for the floor's "almost no data" (BatchNorm needs 2)


def seed_batches(model, device, S, batch_size, n):
    """n batches of S seeds' samples each, x (S, batch, ...) and y (S, batch), generated."""
    in_shape, n_classes = SEED_MODELS[model]
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn((S, batch_size) + in_shape, generator=g).to(device) for _ in range(n)]
    ys = [torch.randint(0, n_classes, (S, batch_size), generator=g).to(device) for _ in range(n)]
    return xs, ys


def seed_trainers(m, model, mode, device, counts):
    """{S: trainer} for method m: S = 0 a single-seed trainer on seed 0's net, else S stacked copies
    of seeds 0..S-1 (each net built after its own manual_seed). Raises ConfigError where m cannot
    train the model (AM-mem: Linear layers without BatchNorm only)."""
    in_shape, n_classes = SEED_MODELS[model]
    cfg = compose([f"optim={m}", f"model={model}", f"mode={mode}", "dataset=synthetic", "device=cpu",
                   *SEED_OVERRIDES.get(model, [])])
    nets = []
    for s in range(max(counts, default=1)):
        torch.manual_seed(s)
        nets.append(build_model(cfg.model, in_shape, n_classes).to(device))
    out = {0: build_trainer(cfg.optim, cfg.mu, cfg.mode, nets[0])}
    for S in counts:
        out[S] = build_trainer(cfg.optim, cfg.mu, cfg.mode, stack(nets[:S], in_shape).to(device))
    return out


def replayer(step):
    """A timed fn replaying the products of one call of ``step`` (one more step: all are warmed up alike)."""
    rec = Products.of(lambda: step(0))
    return lambda i: rec.replay()


def bench_seeds(model, mode, device, steps, warmup, batch_size, counts, methods=ONLINE):
    """{method: {S: ms per stacked step}} with S = 0 for the single-seed step, and ("floor", S)
    for the S-stacked step's floor (the module's docstring), all timed interleaved."""
    fns = {}
    xs, ys = seed_batches(model, device, max(counts), batch_size, 4)
    xt, yt = seed_batches(model, device, max(counts), TINY_BATCH, 4)
    for m in methods:
        try:
            trainers = seed_trainers(m, model, mode, device, counts)
        except ConfigError:
            continue
        fns[(m, 0)] = lambda i, tr=trainers[0]: tr.step(xs[i % 4][0], ys[i % 4][0])
        tiny = seed_trainers(m, model, mode, device, counts)
        for S in counts:
            fns[(m, S)] = lambda i, tr=trainers[S], S=S: tr.step(xs[i % 4][:S], ys[i % 4][:S])
            fns[(m, S, "tiny")] = lambda i, tr=tiny[S], S=S: tr.step(xt[i % 4][:S], yt[i % 4][:S])
            fns[(m, S, "products")] = replayer(fns[(m, S)])
            fns[(m, S, "tiny products")] = replayer(fns[(m, S, "tiny")])
    median = interleaved(fns, steps, warmup, device)
    out = {}
    for key, ms in median.items():
        m, S = key[:2]
        if len(key) == 2:
            out.setdefault(m, {})[S] = ms
    for m in out:
        for S in counts:
            out[m][("floor", S)] = (median[(m, S, "products")] + median[(m, S, "tiny")]
                                    - median[(m, S, "tiny products")])
    return out


def main_seeds(args):
    counts = [int(c) for c in args.seed_counts]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, mode={args.mode}, "
          f"keep_freed_memory={args.keep_freed_memory}, batch {args.batch_size} per seed, median of {args.steps} "
          f"steps after {args.warmup} warm-up, interleaved")
    print("ms per seed-step: a step of S stacked copies / S; speed-up: one single-seed step / that; "
          "bound: S single-seed steps / the stacked step's floor (its products alone + its other operations at "
          f"{TINY_BATCH} samples a seed)\n")
    cols = " | ".join(f"S={S} ms/seed | x | bound" for S in counts)
    print(f"| device | model | method | single ms | {cols} |")
    print("|" + "---|" * (4 + 3 * len(counts)))
    for dev in args.devices:
        for model in args.models:
            if model not in SEED_MODELS:
                continue
            if model == "rnn":  # a step is seconds on a CPU at Figure 6's batch
                res = bench_seeds(model, args.mode, torch.device(dev), max(3, args.steps // 40), 2, RNN_BATCH, counts,
                                  methods=("am_adam",))
                model = f"rnn (batch {RNN_BATCH}, T 784, sequence read-out)"
            else:
                res = bench_seeds(model, args.mode, torch.device(dev), args.steps, args.warmup, args.batch_size,
                                  counts)
            for m, t in res.items():
                cells = " | ".join(f"{t[S] / S:.2f} | {t[0] / (t[S] / S):.2f} | {S * t[0] / t[('floor', S)]:.2f}"
                                   for S in counts)
                print(f"| {dev} | {model} | {m} | {t[0]:.2f} | {cells} |", flush=True)
    print(f"\nprocess peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def bench_sync(model, mode, device, steps, rounds, batch_size, counts, methods=("sgd", "adam", "am_adam")):
    """{(method, S): (ms per step with a host sync after every step, ms per step without)}.

    The second is how the training loop runs on CUDA (``amtrain.train.TrainClock``): steps
    are queued and the host waits for the device only at evaluation points, here at the end
    of each window of ``steps`` steps. The first is how it timed every step before. The two
    windows alternate for ``rounds`` rounds (after one warm-up window each); medians."""
    (x,), (y,) = seed_batches(model, device, max(counts), batch_size, 1)
    out = {}
    for m in methods:
        trainers = seed_trainers(m, model, mode, device, [S for S in counts if S > 1])
        for S in counts:
            tr = trainers[0 if S == 1 else S]  # S = 1: a plain single-seed step, as a run without a seed axis
            xb, yb = (x[0], y[0]) if S == 1 else (x[:S], y[:S])

            def window(each: bool) -> float:
                sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    tr.step(xb, yb)
                    if each:
                        sync(device)
                sync(device)
                return (time.perf_counter() - t0) / steps * 1000

            times = {True: [], False: []}
            for r in range(rounds + 1):
                for each in (True, False):
                    t = window(each)
                    if r:
                        times[each].append(t)
            out[(m, S)] = (statistics.median(times[True]), statistics.median(times[False]))
    return out


def main_sync(args):
    counts = [int(c) for c in args.seed_counts]
    print(f"torch {torch.__version__}, mode={args.mode}, batch {args.batch_size} per seed, windows of "
          f"{args.steps} steps, median of {args.rounds} rounds, the two ways alternated")
    print("ms per step: with a host sync after every step (the old clock) and without (the training loop's "
          "clock on CUDA: a sync at evaluation points only)\n")
    print("| device | model | method | seeds | sync every step | no sync | ratio |")
    print("|---|---|---|---|---|---|---|")
    for dev in args.devices:
        for model in args.models:
            if model not in SEED_MODELS or model == "lenet5":
                continue
            res = bench_sync(model, args.mode, torch.device(dev), args.steps, args.rounds, args.batch_size, counts)
            for (m, S), (each, none) in res.items():
                print(f"| {dev} | {model} | {m} | {S} | {each:.3f} | {none:.3f} | {each / none:.2f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(SHAPES))
    p.add_argument("--devices", nargs="+", type=device_name,
                   default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--mode", default="release", choices=["release", "paper"])
    p.add_argument("--steps", type=positive_int, default=200)
    p.add_argument("--warmup", type=nonnegative_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=200)
    p.add_argument("--offline-rows", type=positive_int, default=10000)
    p.add_argument("--offline-epochs", type=positive_int, default=3)
    p.add_argument("--no-offline", action="store_true")
    p.add_argument("--no-streams", action="store_true", help="skip the CUDA layer-concurrency measurement")
    p.add_argument("--no-floor", action="store_true", help="skip timing AM-mem's dense products alone")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's choice)")
    add_malloc_flag(p)
    p.add_argument("--seeds", action="store_true", help="only the seed-axis table (S stacked copies per step)")
    p.add_argument("--seed-counts", nargs="+", type=positive_int, default=[1, 2, 5, 10],
                   help="the S of the --seeds table")
    p.add_argument("--sync", action="store_true",
                   help="only the clock table: steps with a host sync after each against none (CUDA's training "
                        "loop); --seed-counts default to 1 5 here")
    p.add_argument("--rounds", type=positive_int, default=5, help="--sync: windows of --steps steps per way")
    args = p.parse_args()
    apply_malloc_flag(args)
    choices = list(SEED_MODELS if args.seeds else SHAPES)
    if args.sync:  # the clock table's methods are the MLPs' (the RNN's SGD and Adam have no seed axis)
        choices = [m for m in SEED_MODELS if m != "rnn"]
    check_choices(p, "--models", args.models, choices)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sync:
        if args.models == list(SHAPES):
            args.models = ["mlp_2x100", "mlp_2x500"]
        if args.seed_counts == [1, 2, 5, 10]:
            args.seed_counts = [1, 5]
        return main_sync(args)
    if args.seeds:
        if args.models == list(SHAPES):  # the RNN when named: its steps are seconds each on a CPU
            args.models = [m for m in SEED_MODELS if m != "rnn"]
        return main_seeds(args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, mode={args.mode}, "
          f"keep_freed_memory={args.keep_freed_memory}, batch {args.batch_size}, median of {args.steps} steps "
          f"after {args.warmup} warm-up, interleaved")
    print(f"\n| device | model | {' | '.join(f'{m} ms/step' for m in ONLINE)} | {' | '.join(f'{m}/adam' for m in ONLINE[1:])} |")
    print("|" + "---|" * (2 + 2 * len(ONLINE) - 1))
    peaks = []
    for dev in args.devices:
        device = torch.device(dev)
        for model in args.models:
            ms, peak = bench_online(model, args.mode, device, args.steps, args.warmup, args.batch_size)
            ratios = " | ".join(fmt(None if ms[m] is None else ms[m] / ms["adam"], ".2f") for m in ONLINE[1:])
            label = f"{model} (batch {RNN_BATCH}, T 784)" if model == "rnn" else model
            print(f"| {dev} | {label} | {' | '.join(fmt(ms[m], '.2f') for m in ONLINE)} | {ratios} |", flush=True)
            if peak:
                peaks.append((dev, model, peak))
    if peaks:
        print(f"\n| device | model | {' | '.join(f'{m} peak MiB' for m in ONLINE)} |")
        print("|" + "---|" * (2 + len(ONLINE)))
        for dev, model, peak in peaks:
            print(f"| {dev} | {model} | {' | '.join(fmt(peak[m], '.1f') for m in ONLINE)} |")
    if not args.no_floor:
        print("\nAM-mem's dense products alone (encoding, code solves, output layer, memories, BCD), "
              "beside its whole step and Adam's: median ms")
        print("| device | model | adam | am_mem | products alone | am_mem/adam | products alone/adam |")
        print("|---|---|---|---|---|---|---|")
        for dev in args.devices:
            for model in args.models:
                if model not in ("mlp_2x100", "mlp_2x500", "higgs_mlp"):
                    continue  # AM-mem needs Linear layers; the RNN has no AM-mem
                t = am_mem_products(model, args.mode, torch.device(dev), args.steps, args.warmup, args.batch_size)
                print(f"| {dev} | {model} | {t['adam']:.2f} | {t['am_mem']:.2f} | {t['products']:.2f} | "
                      f"{t['am_mem'] / t['adam']:.2f} | {t['products'] / t['adam']:.2f} |", flush=True)
    if "cuda" in args.devices and not args.no_streams:
        print("\nAM-Adam weight update on CUDA: one fused backward vs each layer on its own stream (ms)")
        print("| model | fused | streams | streams/fused |\n|---|---|---|---|")
        for model in args.models:
            if model == "rnn":
                continue  # shared weights: one local problem, nothing to run concurrently
            t = weight_update_streams(model, args.mode, torch.device("cuda"), args.steps, args.warmup,
                                      args.batch_size)
            print(f"| {model} | {t['fused']:.3f} | {t['streams']:.3f} | {t['streams'] / t['fused']:.2f} |", flush=True)
    if not args.no_offline:
        print(f"\nFull-batch methods: median seconds per epoch over {args.offline_rows:,} generated samples "
              f"(adam: one epoch of mini-batch steps, for scale)")
        print(f"| device | model | {' | '.join(OFFLINE + ['adam'])} |")
        print("|" + "---|" * (3 + len(OFFLINE)))
        for dev in args.devices:
            for model in args.models:
                if model in ("higgs_mlp", "rnn"):
                    continue  # HIGGS is streamed; the RNN has no full-batch method
                s = bench_offline(model, args.mode, torch.device(dev), args.offline_rows, args.offline_epochs,
                                  args.batch_size)
                print(f"| {dev} | {model} | {' | '.join(fmt(s[m], '.3f') for m in OFFLINE + ['adam'])} |", flush=True)
    print(f"\nprocess peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
