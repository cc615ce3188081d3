"""Seeds on a tensor axis (amtrain.seeds): S = 3 stacked copies equal three single-seed runs.

Trainer level: every covered method and model (the MLPs, LeNet-5), with and without
BatchNorm, in both modes, for 200 steps on synthetic data (60 for LeNet-5): weights,
BatchNorm state, AM-mem's memories, each step's loss and output. In float64: in float32,
rounding differences between a batched and a plain product grow over the steps (Adam
amplifies them most for a bias before BatchNorm, whose gradient is zero but for rounding),
and the comparison would test rounding, not the method.

Run level: each seed's metrics.csv equals its single run's; a seed that diverges is
recorded while the others finish; resume and a busy folder; sweeps group their seeds.
"""
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from amtrain.cli import compose
from amtrain.data import build_data
from amtrain.models import build_model
from amtrain.models.stacked import copy_state, stack
from amtrain.optim import build_trainer
from amtrain.seeds import run_seeds, unsupported
from amtrain.train import run, seed_everything
from conftest import TINY
from test_cli import amtrain
from test_sweep import SWEEP, job_dirs

SMALL = {"mlp_2x100": ["model.hidden=[24,16]"], "binary_mlp": ["model.hidden=[24,16]"],
         "higgs_mlp": ["model.hidden=[24]", "dataset.n_classes=2"],
         # 1x16x16 images (the synthetic features, reshaped): conv 5 -> pool -> conv 5 -> pool -> 3x1x1
         "lenet5": ["model.channels=[2,3]", "model.fc=[12,8]", "dataset.n_features=256"]}
CASES = [(optim, model, mode, bn)
         for optim in ("am_adam", "am_mem", "sgd", "adam")
         for model in ("mlp_2x100", "binary_mlp", "higgs_mlp")
         for mode in ("paper", "release")
         for bn in (False, True)
         if not (optim == "am_mem" and bn)]
CASES += [(optim, "lenet5", mode, bn) for optim in ("am_adam", "sgd", "adam") for mode in ("paper", "release")
          for bn in (False, True)]
EXTRA = [("sgd", "mlp_2x100", "release", True, ["optim.grad_clip=0.05", "optim.momentum=0.9"]),
         ("adam", "mlp_2x100", "paper", False, ["optim.grad_clip=0.05"]),
         ("am_adam", "mlp_2x100", "release", True, ["mu=additive", "mu.d_mu=0.0001"]),
         ("am_mem", "mlp_2x100", "paper", False, ["optim.solver=exact"])]
SEEDS = (0, 1, 2)
STEPS = {"lenet5": 60}  # steps per case (200 unless named: float64 convolutions are slow)
# The trainer-level tests on another device (scripts/device_check.sh: AMTRAIN_TEST_DEVICE=cuda)
DEVICE = torch.device(os.environ.get("AMTRAIN_TEST_DEVICE", "cpu"))


def cfg_for(optim, model, mode, bn, extra=(), seed=0):
    return compose(TINY + [f"optim={optim}", f"model={model}", f"mode={mode}", f"model.batchnorm={bn}",
                           f"seed={seed}", *SMALL[model], *extra])


def build(cfg, data):
    seed_everything(cfg.seed)
    return build_model(cfg.model, data.in_shape, data.n_classes).double().to(DEVICE)


def data_for(cfg):
    data = build_data(cfg.dataset)
    data.x_train, data.x_test = data.x_train.double(), data.x_test.double()
    if cfg.model.arch == "lenet5":  # images
        data.x_train, data.x_test = data.x_train.view(-1, 1, 16, 16), data.x_test.view(-1, 1, 16, 16)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        setattr(data, name, getattr(data, name).to(DEVICE))
    return data


@pytest.mark.parametrize("optim, model, mode, bn, extra", [c + ([],) for c in CASES] + EXTRA,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_three_stacked_seeds_equal_three_single_runs(optim, model, mode, bn, extra):
    assert_stacked_equals_singles([cfg_for(optim, model, mode, bn, extra, s) for s in SEEDS], STEPS.get(model, 200))


# AM-Adam on the Elman RNN (T = 12 one-value steps of the synthetic features, d = 6)
RNN = ["model=rnn", "model.hidden=6", "dataset.n_features=12", "optim=am_adam"]
RNN_CASES = [(readout, mode, []) for readout in ("last", "mean", "sequence") for mode in ("paper", "release")]
RNN_CASES += [("sequence", "release", ["mu=additive", "mu.d_mu=0.001", "optim.weight_iters=2"]),
              ("mean", "paper", ["model.n_inputs=2"])]  # 6 steps of two values: W_x a matrix


@pytest.mark.parametrize("readout, mode, extra", RNN_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_three_stacked_rnns_equal_three_single_runs(readout, mode, extra):
    """AM-Adam's column-layout pass with the seed axis after time, (T, S, d, B): the same steps
    as three single runs, for every read-out and both modes."""
    assert_stacked_equals_singles([compose(TINY + RNN + [f"model.readout={readout}", f"mode={mode}", f"seed={s}",
                                                         *extra]) for s in SEEDS], 100)


def assert_stacked_equals_singles(cfgs, steps):
    """S stacked copies and S single-seed trainers, each seed on its own batches, step by step:
    every step's loss and output, then the weights, BatchNorm's statistics, AM-mem's memories, mu."""
    data = data_for(cfgs[0])
    singles = [build(c, data) for c in cfgs]
    stacked = stack([build(c, data) for c in cfgs], data.in_shape)
    trainers = [build_trainer(c.optim, c.mu, c.mode, net) for c, net in zip(cfgs, singles)]
    batched = build_trainer(cfgs[0].optim, cfgs[0].mu, cfgs[0].mode, stacked)
    gens = [torch.Generator().manual_seed(int(c.seed)) for c in cfgs]
    step = 0
    while step < steps:
        epochs = [list(data.train_batches(50, g)) for g in gens]
        for batches in zip(*epochs):
            x = torch.stack([b[0] for b in batches])
            y = torch.stack([b[1] for b in batches])
            loss, output = batched.step(x, y)
            for s, (trainer, (xs, ys)) in enumerate(zip(trainers, batches)):
                loss_s, output_s = trainer.step(xs, ys)
                torch.testing.assert_close(loss[s], loss_s)
                torch.testing.assert_close(output[s], output_s)
            step += 1
        for t in trainers + [batched]:
            t.end_epoch()
            if getattr(t, "mu", None) is not None:
                t.mu.after_epoch()
    for s, net in enumerate(singles):
        state = copy_state(stacked, s)
        reference = net.state_dict()
        assert set(state) == set(reference)
        for name, value in reference.items():  # weights, and BatchNorm's running statistics
            torch.testing.assert_close(state[name], value, msg=f"seed {s}: {name}")
        for l, (mem, mem_s) in enumerate(zip(getattr(batched, "memories", []), getattr(trainers[s], "memories", []))):
            torch.testing.assert_close(mem.A_low[s], mem_s.A_low, msg=f"seed {s}: A_{l + 1}")
            torch.testing.assert_close(mem.B[s], mem_s.B, msg=f"seed {s}: B_{l + 1}")
    if hasattr(batched, "mu"):
        assert batched.mu.value == trainers[0].mu.value
    with torch.no_grad():  # the evaluation: the test set seen by every copy
        out = stacked.eval()(data.x_test)
        for s, net in enumerate(singles):
            torch.testing.assert_close(out[s], net.eval()(data.x_test))


def test_the_stacked_rnn_evaluates_each_copy_as_its_own_network_and_only_evaluates():
    cfgs = [compose(TINY + RNN + ["model.readout=sequence", f"seed={s}"]) for s in SEEDS]
    data = data_for(cfgs[0])
    singles = [build(c, data) for c in cfgs]
    stacked = stack([build(c, data) for c in cfgs], data.in_shape)
    assert sorted(stacked.state_dict()) == sorted(singles[0].state_dict())  # no parameters of its helper
    assert sum(p.numel() for p in stacked.parameters()) == 3 * sum(p.numel() for p in singles[0].parameters())
    x = torch.stack([data.x_test[:40], data.x_test[40:80], data.x_test[80:120]])
    with torch.no_grad():
        each, shared = stacked(x), stacked(data.x_test)
    for s, net in enumerate(singles):
        with torch.no_grad():
            torch.testing.assert_close(each[s], net(x[s]))
            torch.testing.assert_close(shared[s], net(data.x_test))
    with pytest.raises(RuntimeError, match="for evaluation"):
        stacked(x)


def test_the_stacked_forward_and_batchnorm_equal_each_copy():
    cfgs = [cfg_for("sgd", "mlp_2x100", "release", True, seed=s) for s in SEEDS]
    data = data_for(cfgs[0])
    singles = [build(c, data) for c in cfgs]
    stacked = stack([build(c, data) for c in cfgs], data.in_shape)
    x = torch.stack([data.x_train[:40], data.x_train[40:80], data.x_train[80:120]])
    out = stacked(x)  # training mode: batch statistics per copy, running statistics moved per copy
    for s, net in enumerate(singles):
        torch.testing.assert_close(out[s], net(x[s]))
        for name, value in net.state_dict().items():
            torch.testing.assert_close(copy_state(stacked, s)[name], value)
    stacked.eval()
    out = stacked(data.x_test)  # no seed axis in the input: every copy sees the test set
    for s, net in enumerate(singles):
        torch.testing.assert_close(out[s], net.eval()(data.x_test))


def test_which_configs_have_a_seed_axis(make_cfg):
    assert unsupported(make_cfg("optim=am_adam")) is None
    assert unsupported(make_cfg("optim=sgd", "model=higgs_mlp", "dataset.n_classes=2")) is None
    assert "optim=admm" in unsupported(make_cfg("optim=admm"))
    assert "optim=am_adam_off" in unsupported(make_cfg("optim=am_adam_off"))
    # LeNet-5 has a seed axis (the equality test above), used on CUDA only: on the CPU the grouped
    # convolutions cost more per seed than separate runs
    assert "grouped convolutions" in unsupported(make_cfg("optim=am_adam", "model=lenet5", "device=cpu"))
    # AM-Adam's fast top-down pass on the RNN has one (the equality test above), used on CUDA only:
    # on the CPU at batch 1024 a stacked step costs what the separate ones do
    rnn = ["model=rnn", "dataset.n_features=28"]
    assert unsupported(make_cfg(*rnn, "device=cuda")) is None
    assert "model=rnn on the CPU" in unsupported(make_cfg(*rnn, "device=cpu"))
    assert "AM-Adam's fast top-down pass only (optim=sgd" in unsupported(make_cfg(*rnn, "optim=sgd", "device=cuda"))
    for other in ("optim.fast=false", "optim.codes.order=jacobi"):
        assert "with optim.fast=false or codes.order=jacobi" in unsupported(make_cfg(*rnn, other, "device=cuda"))


# ----------------------------------------------------------------------------- whole runs
RUN = ["epochs=2", "model.hidden=[24,16]"]


def metrics(path):
    return pd.read_csv(path / "metrics.csv")


def assert_same_metrics(a, b):
    assert list(a.metric) == list(b.metric) and list(a.step) == list(b.step) and list(a.split) == list(b.split)
    assert (a.seed == b.seed).all()
    assert (a.value - b.value).abs().max() < 1e-4


@pytest.mark.parametrize("overrides", [RUN + ["optim=am_adam"], RUN + ["optim=am_mem"], RUN + ["optim=sgd"],
                                       RNN + ["model.readout=sequence", "epochs=2"]],
                         ids=["am_adam", "am_mem", "sgd", "am_adam-rnn"])
def test_each_seed_writes_the_run_folder_of_its_single_run(tmp_path, overrides):
    cfgs = [compose(TINY + overrides + [f"seed={s}"]) for s in SEEDS]
    outcomes = run_seeds(cfgs, [tmp_path / f"batched{s}" for s in SEEDS])
    assert [o.status for o in outcomes] == ["finished"] * 3
    for c in cfgs:
        single = run(c, tmp_path / f"single{c.seed}")
        batched = tmp_path / f"batched{c.seed}"
        assert {p.name for p in batched.iterdir()} == {p.name for p in single.out_dir.iterdir()}
        assert_same_metrics(metrics(batched), metrics(single.out_dir))
        assert f"seed={c.seed}" in (batched / "train.log").read_text()
        assert f"seed {c.seed}:" in (batched / "train.log").read_text()
        assert not any(f"seed {s}:" in (batched / "train.log").read_text() for s in SEEDS if s != c.seed)
        assert (batched / "config.yaml").read_text().split("\n", 1)[1] == \
            (single.out_dir / "config.yaml").read_text().split("\n", 1)[1]


def poison_seed_1(monkeypatch, after: int = 5) -> dict:
    """Turn the second seed's head weights of a batched AM-Adam run to NaN after its ``after``-th
    step (single runs are left alone); returns the step counter, for a test to reset."""
    from amtrain.optim.am.online import AMAdam

    original = AMAdam.step
    calls = {"n": 0}

    def step(self, x, y):
        out = original(self, x, y)
        calls["n"] += 1
        if self.net.seeds is not None and calls["n"] == after:
            with torch.no_grad():
                self.net.head.weight[1] = float("nan")
        return out

    monkeypatch.setattr(AMAdam, "step", step)
    return calls


def test_a_diverging_seed_is_recorded_while_the_others_finish(tmp_path, monkeypatch):
    """Seed 1's weights turn to NaN after its 5th step: it writes FAILED, seeds 0 and 2 go on
    and end exactly as their single runs."""
    poison_seed_1(monkeypatch)
    cfgs = [compose(TINY + RUN + ["optim=am_adam", f"seed={s}"]) for s in SEEDS]
    outcomes = run_seeds(cfgs, [tmp_path / f"b{s}" for s in SEEDS])
    assert outcomes[0].status == outcomes[2].status == "finished"
    failed = (tmp_path / "b1" / "FAILED").read_text()
    # found at the next check: the end of epoch 1 (600 samples / 50 = step 12), after evaluations at 1-3
    assert failed.startswith("training diverged at epoch 1, step 12: the training loss is nan")
    assert not (tmp_path / "b1" / "DONE").exists() and (tmp_path / "b1" / "metrics.partial.csv").exists()
    for s in (0, 2):
        assert_same_metrics(metrics(tmp_path / f"b{s}"), metrics(run(cfgs[s], tmp_path / f"single{s}").out_dir))


def test_a_diverging_rnn_seed_is_recorded_while_the_others_finish(tmp_path, monkeypatch):
    """The same on the RNN's seed axis: seed 1's read-out turns to NaN after its 5th step."""
    from amtrain.optim.am.rnn import AMAdamRNN

    original, calls = AMAdamRNN.step, {"n": 0}

    def step(self, x, y):
        out = original(self, x, y)
        calls["n"] += 1
        if self.net.seeds is not None and calls["n"] == 5:
            with torch.no_grad():
                self.net.head.weight[1] = float("nan")
        return out

    monkeypatch.setattr(AMAdamRNN, "step", step)
    cfgs = [compose(TINY + RNN + ["epochs=2", f"seed={s}"]) for s in SEEDS]
    outcomes = run_seeds(cfgs, [tmp_path / f"b{s}" for s in SEEDS])
    assert outcomes[0].status == outcomes[2].status == "finished"
    assert (tmp_path / "b1" / "FAILED").read_text().startswith("training diverged at epoch 1, step 12: ")
    for s in (0, 2):
        assert_same_metrics(metrics(tmp_path / f"b{s}"), metrics(run(cfgs[s], tmp_path / f"single{s}").out_dir))


def test_ctrl_c_in_a_batched_run_is_recorded_in_every_seed_and_raised(tmp_path, monkeypatch):
    from amtrain.optim.backprop import Backprop

    original, calls = Backprop.step, {"n": 0}

    def step(self, x, y):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(Backprop, "step", step)
    cfgs = [compose(TINY + RUN + ["optim=sgd", f"seed={s}"]) for s in SEEDS]
    with pytest.raises(KeyboardInterrupt):
        run_seeds(cfgs, [tmp_path / f"b{s}" for s in SEEDS])
    for s in SEEDS:
        failed = (tmp_path / f"b{s}" / "FAILED").read_text()
        assert failed.startswith("interrupted (Ctrl-C) at epoch 1, step 3: rerun the same command")
        assert (tmp_path / f"b{s}" / "metrics.partial.csv").exists()  # the evaluations so far, kept
        assert not (tmp_path / f"b{s}" / "DONE").exists()


def test_resume_batches_only_the_seeds_not_done_and_a_busy_folder_is_left_alone(tmp_path):
    from amtrain.errors import FolderBusy
    from amtrain.rundir import RunDir

    cfgs = [compose(TINY + RUN + ["optim=sgd", f"seed={s}"]) for s in (0, 1, 2, 3)]
    dirs = [tmp_path / f"s{c.seed}" for c in cfgs]
    first = run(cfgs[1], dirs[1])
    with RunDir(dirs[3]):  # another process holds seed 3's folder
        outcomes = run_seeds(cfgs, dirs)
    assert outcomes[1].status == "skipped" and outcomes[1].run_id == first.run_id
    assert isinstance(outcomes[3], FolderBusy) and not (dirs[3] / "DONE").exists()
    assert outcomes[0].status == outcomes[2].status == "finished"
    log = (dirs[0] / "train.log").read_text()
    assert "on a seed axis with seeds [0, 2]" in log


def test_a_seed_finished_with_another_configuration_is_refused_while_the_others_run(tmp_path):
    from amtrain.errors import ConfigError

    cfgs = [compose(TINY + RUN + ["optim=sgd", f"seed={s}"]) for s in (0, 1, 2)]
    dirs = [tmp_path / f"s{c.seed}" for c in cfgs]
    run(compose(TINY + RUN + ["optim=sgd", "seed=1", "optim.lr=0.05"]), dirs[1])
    done = (dirs[1] / "DONE").read_text()
    outcomes = run_seeds(cfgs, dirs)
    assert isinstance(outcomes[1], ConfigError) and "optim.lr: 0.05 there" in str(outcomes[1])
    assert (dirs[1] / "DONE").read_text() == done  # not rerun, not moved
    assert outcomes[0].status == outcomes[2].status == "finished"


def test_run_seeds_refuses_configs_that_differ_in_more_than_the_seed(tmp_path):
    a = compose(TINY + RUN + ["optim=sgd", "seed=0"])
    b = compose(TINY + RUN + ["optim=sgd", "seed=1", "optim.lr=0.5"])
    with pytest.raises(ValueError, match="differ in more than their seed"):
        run_seeds([a, b], [tmp_path / "a", tmp_path / "b"])


# ----------------------------------------------------------------------------- sweeps
def test_a_sweep_trains_each_configurations_seeds_in_one_process(tmp_path):
    args = ["-m", *SWEEP, *RUN, "optim=sgd,admm", "seed=0,1,2", f"hydra.sweep.dir={tmp_path / 'sw'}"]
    r = amtrain(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "6 jobs: 6 finished" in r.stdout
    jobs = job_dirs(tmp_path / "sw")
    for job in jobs:
        log = (job / "train.log").read_text()
        if "optim=sgd" in job.name:
            assert "on a seed axis with seeds [0, 1, 2]" in log
        else:  # ADMM has no seed axis: a run per seed, as before
            assert "on a seed axis" not in log
        assert (job / "DONE").exists() and (job / ".hydra" / "overrides.yaml").exists()
        assert f"- seed={job.name[-1]}" in (job / ".hydra" / "overrides.yaml").read_text()
    # resume: one seed's run lost -> only it runs again (alone: its single run)
    lost = next(j for j in jobs if j.name.endswith("optim=sgd,seed=1"))
    (lost / "DONE").unlink()
    r = amtrain(*args, cwd=tmp_path)
    assert r.returncode == 0 and "6 jobs: 1 finished, 5 skipped (finished before)" in r.stdout, r.stdout
    assert "on a seed axis" not in (lost / "train.log").read_text()
    # seeds_per_process=1: every seed alone
    r = amtrain(*args, "resume=false", "seeds_per_process=1", cwd=tmp_path)
    assert r.returncode == 0 and "6 jobs: 6 finished" in r.stdout
    assert not any("on a seed axis" in (j / "train.log").read_text() for j in jobs)


def test_a_sweep_with_parallel_jobs_trains_every_seed_once(tmp_path):
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP, *RUN, "optim=sgd,adam",
            "seed=0,1,2", f"hydra.sweep.dir={tmp_path / 'sw'}"]
    r = amtrain(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "6 jobs: 6 finished" in r.stdout
    for job in job_dirs(tmp_path / "sw"):
        assert (job / "DONE").exists()
        assert (job / "config.yaml").read_text().count("# amtrain run") == 1
        assert not (job / ".superseded").exists()  # trained once


def test_a_diverging_seed_in_a_sweep_is_reported_and_the_rest_finish(tmp_path):
    """SGD at a learning rate that diverges on every seed: each seed of the group reports it."""
    r = amtrain("-m", *SWEEP, *RUN, "optim=sgd", "optim.lr=1e12", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sw'}",
                cwd=tmp_path)
    assert r.returncode == 3
    assert "2 jobs: 2 diverged" in r.stdout
    for job in job_dirs(tmp_path / "sw"):
        assert (job / "FAILED").read_text().startswith("training diverged")


def test_a_group_member_that_comes_after_its_group_ran_leaves_its_reports(tmp_path, monkeypatch):
    """joblib: a job of a seed group can start after the group's first job trained its folder.
    Its run_seeds then finds the folder DONE; it must not report it "skipped" over "finished"
    (CI met it once, when reports came after the locks were released)."""
    import json

    from amtrain import sweep

    monkeypatch.setenv(sweep.TOKEN_ENV, "t1")
    sweep_dir = tmp_path / "sw"
    group = [{"seed": s, "dir": str(sweep_dir / f"seed={s}"), "overrides": [f"seed={s}"]} for s in SEEDS]
    cfgs = {s: compose(TINY + RUN + ["optim=sgd", f"seed={s}"]) for s in SEEDS}
    sweep._run_group(cfgs[0], sweep_dir / "seed=0", sweep_dir, group, None)  # the first job: trains all three
    # a later job that looked before the first one reported (its view of the reports is stale),
    # then locked the folders once the first one let them go
    real, looks = sweep._reported, {"n": 0}

    def stale(sweep_dir, job_dir):
        looks["n"] += 1
        return False if looks["n"] <= len(SEEDS) else real(sweep_dir, job_dir)

    monkeypatch.setattr(sweep, "_reported", stale)
    sweep._run_group(cfgs[1], sweep_dir / "seed=1", sweep_dir, group, None)
    for s in SEEDS:
        rep = json.loads(sweep._report_path(sweep_dir, "t1", sweep_dir / f"seed={s}").read_text())
        assert rep["status"] == "finished", rep


@pytest.mark.parametrize("configs, seeds, per_process, workers, sizes", [
    (1, 5, 10, 1, [5]),  # the basic launcher: one group
    (1, 5, 10, 2, [3, 2]),  # two workers: a group each, not 5 on one core beside an idle one
    (2, 5, 10, 2, [3, 2, 3, 2]),  # two configurations: two groups a worker, so a short one is not
    #                               followed by an idle core (Figure 8: AM-Adam's group 2.5x Adam's)
    (8, 5, 10, 2, [5] * 8),  # enough groups for the workers already (Figure 2, Figure 1)
    (3, 5, 10, 4, [2, 2] * 3),  # eight groups wanted: 2 + 2 (+ one seed alone) a configuration
    (2, 5, 10, 1, [5, 5]),  # one worker: nothing to balance
    (1, 5, 2, 1, [2, 2]),  # seeds_per_process caps a group; the fifth seed runs alone
    (1, 5, 10, 16, []),  # more workers than seeds: each seed alone
])
def test_seed_groups_fill_the_workers_and_respect_the_cap(configs, seeds, per_process, workers, sizes):
    from amtrain.sweep import Job, Plan, seed_groups

    jobs = [Job([f"optim={c}", f"seed={s}"], Path(f"/sw/c{c}_s{s}"), s, (f"optim={c}",), per_process)
            for c in range(configs) for s in range(seeds)]
    groups = seed_groups(Plan(Path("/sw"), jobs, "", workers))
    assert [len(g) for g in groups] == sizes
    for g in groups:  # one configuration's seeds, consecutive, in the sweep's order
        assert len({j.seed_group for j in g}) == 1 and [j.seed for j in g] == list(range(g[0].seed, g[-1].seed + 1))
    pairs = [(j.seed_group, j.seed) for g in groups for j in g]
    assert len(pairs) == len(set(pairs))  # no seed in two groups


def test_a_joblib_sweep_of_one_configuration_splits_its_seeds_between_the_workers(tmp_path):
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP, *RUN, "optim=sgd", "seed=0,1,2,3",
            f"hydra.sweep.dir={tmp_path / 'sw'}"]
    r = amtrain(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 jobs: 4 finished" in r.stdout
    logs = {j.name[-1]: (j / "train.log").read_text() for j in job_dirs(tmp_path / "sw")}
    assert all("on a seed axis with seeds [0, 1]" in logs[s] for s in "01")
    assert all("on a seed axis with seeds [2, 3]" in logs[s] for s in "23")


def test_the_rnns_seed_axis_refuses_the_passes_it_does_not_batch():
    """The reference pass (optim.fast=false) and the Jacobi variant work on rows, one network's:
    a stacked RNN handed to them is refused by name, not trained into a shape error."""
    from amtrain.errors import ConfigError

    for other in ("optim.fast=false", "optim.codes.order=jacobi"):
        cfgs = [compose(TINY + RNN + [other, f"seed={s}"]) for s in SEEDS]
        data = data_for(cfgs[0])
        stacked = stack([build(c, data) for c in cfgs], data.in_shape)
        with pytest.raises(ConfigError, match="fast top-down pass only"):
            build_trainer(cfgs[0].optim, cfgs[0].mu, cfgs[0].mode, stacked)
