"""scripts/bench.py runs end to end on tiny settings and prints its tables (timings are not checked)."""
import re
import subprocess
import sys

import pytest

from conftest import REPO


def test_bench_prints_every_table():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--models", "mlp_2x100", "higgs_mlp", "--steps", "2",
         "--warmup", "1", "--offline-rows", "400", "--offline-epochs", "1"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    number = r"\d+\.\d+"
    # online methods: ms per step of adam, sgd, am_adam, am_mem, then the three ratios to Adam
    for model in ("mlp_2x100", "higgs_mlp"):
        assert re.search(rf"\| cpu \| {model} \|( {number} \|){{7}}", out), out
    # AM-mem's products alone beside its step and Adam's
    assert re.search(rf"\| cpu \| mlp_2x100 \|( {number} \|){{5}}", out.split("dense products alone")[1]), out
    # full-batch methods (HIGGS is streamed: no row)
    offline = out.split("Full-batch methods")[1]
    assert re.search(rf"\| cpu \| mlp_2x100 \|( {number} \|){{4}}", offline) and "higgs_mlp" not in offline, out


def test_bench_seeds_prints_the_seed_axis_table():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--seeds", "--models", "mlp_2x100", "--steps", "1",
         "--warmup", "1", "--seed-counts", "1", "3"], capture_output=True, text=True, timeout=300, check=True).stdout
    number = r"\d+\.\d+"
    for m in ("adam", "sgd", "am_adam", "am_mem"):  # single ms, then ms per seed-step, speed-up, bound for S = 1, 3
        row = re.search(rf"\| cpu \| mlp_2x100 \| {m} \|(( {number} \|){{7}})", out)
        assert row, out
        single, *cells = [float(v) for v in row.group(1).strip(" |").split(" | ")]
        for per_seed, speedup, bound in zip(cells[::3], cells[1::3], cells[2::3]):
            assert per_seed > 0 and speedup == pytest.approx(single / per_seed, abs=0.02) and bound > 0


@pytest.mark.slow
def test_bench_seeds_times_figure_6s_rnn_when_named():
    """AM-Adam only (BPTT has no seed axis), at Figure 6's batch and T = 784: about a minute here."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--seeds", "--models", "rnn", "--steps", "1",
         "--seed-counts", "2"], capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| cpu | rnn")]
    assert len(rows) == 1 and "| rnn (batch 1024, T 784, sequence read-out) | am_adam |" in rows[0], out


def _bench_module():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import bench
    finally:
        sys.path.pop(0)
    return bench


def test_products_records_a_steps_products_with_their_shapes_and_replays_them():
    """The seed table's floor replays exactly the products the step ran, the backward's included."""
    import torch

    Products = _bench_module().Products
    lin = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3, requires_grad=True)

    def step():
        (lin(x).relu().sum() + (x * 2).sum()).backward()

    rec = Products.of(step)
    ops = [(func.__name__, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)])
           for func, args, _ in rec.calls]
    # forward: b + x W^T; backward: dL/dx = g W and dL/dW = g^T x; nothing element-wise
    assert sorted(ops) == sorted([("addmm.default", [(2,), (5, 3), (3, 2)]), ("mm.default", [(5, 2), (2, 3)]),
                                  ("mm.default", [(2, 5), (5, 3)])]), ops
    assert all(not a.requires_grad for _, args, _ in rec.calls for a in args if isinstance(a, torch.Tensor))
    before = [t.detach().clone() for t in (lin.weight, lin.weight.grad, x.grad)]
    rec.replay()  # runs on its own tensors: the step's are left alone
    assert all(torch.equal(a, b) for a, b in zip(before, (lin.weight, lin.weight.grad, x.grad)))


def test_bench_sync_prints_both_clocks_per_method_and_seed_count():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--sync", "--models", "mlp_2x100", "--steps", "1",
         "--rounds", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    number = r"\d+\.\d+"
    for m in ("sgd", "adam", "am_adam"):
        for S in (1, 5):
            assert re.search(rf"\| cpu \| mlp_2x100 \| {m} \| {S} \|( {number} \|){{3}}", out), out


def test_bench_family_prints_seconds_and_memory_of_each_method():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_family.py"), "--n", "300", "--reps", "1",
         "--only", "bcd:mlp_2x100,mdlam:mlp_2x100:optim.accelerate=false:optim.fista_max=5"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    assert re.search(r"\| bcd \| mlp_2x100 \| \d+\.\d+ \| [\d,]+ \|", out), out
    assert re.search(r"\| mdlam \(optim.accelerate=false optim.fista_max=5\) \| mlp_2x100 \| \d+\.\d+ \|", out), out


def test_bench_sweep_prints_per_job_times_for_serial_and_joblib():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_sweep.py"), "--rounds", "1", "--train", "400",
         "--optims", "sgd"], capture_output=True, text=True, timeout=600, check=True).stdout
    for way in ("serial (basic launcher)", "joblib n_jobs=2, threads=", "joblib n_jobs=2, shared"):
        assert re.search(rf"\| sgd \| {re.escape(way)}.* \| \d+\.\d+ \| \d+\.\d+ \| \d+\.\d+ \|", out), out


def test_bench_rnn_prints_bptt_and_the_three_code_passes():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_rnn.py"), "--steps", "1", "--batch", "8", "--hidden", "4",
         "--readouts", "last,sequence", "--no-compile", "--code-iters", "2"], capture_output=True, text=True,
        timeout=600, check=True).stdout
    assert "AM-Adam K = 2, keep_freed_memory=true;" in out, out
    for readout in ("last", "sequence"):
        assert re.search(rf"\| {readout} \|( \d+ \|){{4}}( \d+\.\d+ \|){{3}}", out), out
        assert re.search(rf"{readout}: sgd \(BPTT\) -?\d+\.\d s, am_adam reference", out), out


@pytest.mark.parametrize("script, args, said", [
    ("bench.py", ["--models", "mlp_2x100", "foo"], "argument --models: 'foo' not among: mlp_2x100,"),
    ("bench.py", ["--seeds", "--seed-counts", "1", "0"], "argument --seed-counts: 0 is below 1"),
    ("bench.py", ["--sync", "--models", "rnn"], "argument --models: 'rnn' not among: "),
    ("bench.py", ["--devices", "tpu"], "argument --devices: 'tpu': choose cpu or cuda"),
    ("bench_rnn.py", ["--readouts", "last,first"], "argument --readouts: 'first' not among: last, sequence, mean"),
    ("bench_rnn.py", ["--keep-freed-memory", "maybe"], "argument --keep-freed-memory: invalid choice: 'maybe'"),
    ("bench_sweep.py", ["--optims", "sgd,sgdd"], "argument --optims: 'sgdd' not among: adam,"),
    ("bench_family.py", ["--only", "bcd:mlp_9"], "argument --only (model): 'mlp_9' not among: binary_mlp,"),
    ("bench_higgs.py", ["--rows", "many"], "argument --rows: 'many' is not a whole number"),
])
def test_a_bad_benchmark_argument_is_argparses_one_line_before_any_work(script, args, said):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"{script}: error: {said}"), r.stderr
