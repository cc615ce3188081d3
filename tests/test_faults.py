"""Fault injection: the mistakes of real use, each through the real command.

Every case checks the same three things:
* one line on stderr (``amtrain: ...``) and the exit code of its kind: 2 bad input,
  3 diverged, 75 folder busy, 130 Ctrl-C;
* no traceback anywhere on the console;
* nothing written before is lost or changed: a finished run and a finished sweep sit in
  the working folder of every case, and their checksums are compared before and after.

Then the concurrency cases: two identical sweeps at once split the jobs between them,
two single runs that would share a default folder get two, kill -9 and resume.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from amtrain.cli import command as amtrain_cmd, compose_checked
from amtrain.errors import ConfigError
from amtrain.data import fake

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
SWEEP = ["dataset=synthetic", "dataset.n_train=600", "dataset.n_test=300", "device=cpu", "progress=false",
         "eval.first_epoch_batches=3", "batch_size=50"]
AGGREGATE = Path(__file__).resolve().parents[1] / "scripts" / "aggregate.py"
CONVERT = [str(Path(sys.executable).parent / "amtrain-higgs-convert")]


def amtrain(*args, cwd, env=None, timeout=300):
    return subprocess.run(amtrain_cmd() + [str(a) for a in args], cwd=cwd, env=env or ENV, capture_output=True,
                          text=True, timeout=timeout)


def checksums(root: Path) -> dict:
    """sha256 of every file under root, hidden ones included (the lock file's content aside)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name != ".lock"}


def one_line(r, code: int, *expected: str, prefix: str = "amtrain") -> str:
    """The result failed with ``code`` and exactly one stderr line, naming ``expected``; no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(prefix), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    for e in expected:
        assert e in lines[0], (e, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A working folder holding a finished single run and a finished 2-job sweep."""
    root = tmp_path_factory.mktemp("work")
    r = amtrain(*SWEEP, "optim=sgd", "hydra.run.dir=done_run", cwd=root)
    assert r.returncode == 0, r.stderr
    r = amtrain("-m", *SWEEP, "optim=sgd", "seed=0,1", "name=done_sweep", cwd=root)
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture
def unchanged(work):
    """Asserts, after the test, that nothing in the working folder changed."""
    before = checksums(work)
    yield work
    after = checksums(work)
    assert {k: v for k, v in after.items() if k in before} == before, "previously written files changed"


# ----------------------------------------------------------------------------- bad values: one line, exit 2
BAD = [  # (overrides, words the line must hold)
    # the list
    (["batch_size=0"], "batch_size=0 is out of range: it must be >= 1"),
    (["batch_size=-5"], "batch_size=-5 is out of range"),
    (["epochs=0"], "epochs=0 is out of range: it must be >= 1"),
    (["epochs=-2"], "epochs=-2 is out of range"),
    (["eval.batch_size=0"], "eval.batch_size=0 is out of range"),
    (["checkpoint.every_minutes=-1"], "checkpoint.every_minutes=-1 is out of range: it must be >= 0"),
    (["optim.lr=-1"], "optim.lr=-1 is out of range: it must be > 0"),
    (["mu.mu0=-1"], "mu.mu0=-1 is out of range: it must be > 0"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9] has 1 values: give exactly 2, each >= 0 and < 1"),
    (["dataset=higgs", "dataset.train_size=0"], "dataset.train_size=0 is out of range: it must be >= 1"),
    (["dataset=higgs", "dataset.train_size=-5"], "dataset.train_size=-5 is out of range"),
    (["dataset=higgs", "dataset.block_rows=0"], "dataset.block_rows=0 is out of range"),
    (["optim.codes.iters=-3"], "optim.codes.iters=-3 is out of range: it must be >= 0"),
    (["+foo=1"], "unknown config key 'foo'"),
    (["tuned=sgd_mlp_2x100_release"], "tuned=sgd_mlp_2x100_release does not belong to this run"),
    (["name="], "name='' is not a sweep name (its jobs go to multirun/<name>/): give one, such as name=fig1"),
    (["~seed"], "~seed deletes a setting every run needs: give it a value (seed=...) instead"),
    # more of the same kind
    (["optim=sgd", "optim.momentum=1.5"], "optim.momentum=1.5 is out of range: it must be >= 0 and < 1"),
    (["optim=sgd", "optim.nesterov=true"], "optim.nesterov=true needs optim.momentum > 0"),
    (["optim=am_mem", "optim.solver=foo"], "optim.solver=foo is not allowed: choose from bcd, exact"),
    (["optim=am_mem", "optim.forget=0"], "optim.forget=0 is out of range: it must be > 0 and <= 1"),
    (["optim=am_mem", "optim.ridge=-1"], "optim.ridge=-1 is out of range"),
    (["optim=admm", "optim.output=foo"], "optim.output=foo is not allowed: choose from hinge, ce"),
    (["optim=admm", "optim.chunk_rows=0"], "optim.chunk_rows=0 is out of range"),
    (["mu=additive", "mu.mu_max=0.001"], "mu.mu_max=0.001 is below mu.mu0=0.003"),
    (["mu=multiplicative", "mu.factor=0.5"], "mu.factor=0.5 is out of range: it must be >= 1"),
    (["model.hidden=[100,0]"], "model.hidden=[100,0] is out of range: every value must be >= 1"),
    (["model.hidden=[]"], "model.hidden=[] is empty"),
    (["model.activation=softmax"], "model.activation=softmax is not allowed: choose from relu, tanh, sigmoid, sign"),
    (["model.activations=[relu,foo]"], "model.activations=[relu,foo] is not allowed"),
    (["model=rnn", "model.recurrent_init=zeros"], "model.recurrent_init=zeros is not allowed"),
    (["dataset.val_size=-1"], "dataset.val_size=-1 is out of range"),
    (["dataset=synthetic", "dataset.n_classes=1"], "dataset.n_classes=1 is out of range: it must be >= 2"),
    (["dataset.train_size=100", "dataset.val_size=100"], "dataset.val_size=100 leaves nothing to train on"),
    (["seed=-1"], "seed=-1 is out of range: it must be >= 0"),
    (["threads=0"], "threads=0 is out of range: it must be >= 1"),
    (["divergence.loss_factor=0.5"], "divergence.loss_factor=0.5 is out of range: it must be > 1"),
    (["eval.every_batches=-1"], "eval.every_batches=-1 is out of range"),
    (["optim.schedule.gamma=0"], "optim.schedule.gamma=0 is out of range: it must be > 0"),
    (["optim=adam", "optim.betas=[0.9,1.0]"], "optim.betas=[0.9,1] is out of range: every value must be >= 0 and < 1"),
    (["+optim.foo=1"], "unknown config key 'optim.foo'"),
    (["mode_defaults=am_mem_release"], "mode_defaults=am_mem_release does not belong to this run"),
    (["optim.lr=abc"], "bad value for 'optim.lr'"),
    (["epochs=1.5"], "bad value for 'epochs'"),
    (["optim=foo"], "unknown optim 'foo'; choose one of:"),
    (["optim.codes.lr=0"], "optim.codes.lr=0 is out of range: it must be > 0"),
    (["optim=sgd,adam"], "is a sweep (a list of values): add -m"),
    (["seed=[0,1,2]"], "'seed' takes one value, not a list: to run each of [0,1,2], make it a sweep: "
                       "amtrain -m seed=0,1,2 (its seeds train together"),
    (["optim.lr=[0.1,0.2]"], "'optim.lr' takes one value, not a list: to run each of [0.1,0.2], make it a sweep: "
                             "amtrain -m optim.lr=0.1,0.2"),
    # methods and models that cannot go together
    (["optim=bcd", "model.batchnorm=true"], "optim=bcd has no BatchNorm layers"),
    (["optim=mdlam", "model=lenet5"], "optim=mdlam cannot train model=lenet5"),
    (["optim=dladmm", "model=rnn"], "optim=dladmm cannot train model=rnn"),
    (["optim=bcd", "model=binary_mlp"], "optim=bcd's closed forms are for ReLU layers"),
    (["optim=admm", "model.activation=tanh"], "optim=admm's closed forms are for ReLU layers"),
    (["optim=am_mem", "model=lenet5"], "optim=am_mem cannot train model=lenet5"),
    (["optim=dladmm", "optim.rho_max=1e-9"], "optim.rho_max=1e-09 is below optim.rho=1e-06"),
    (["optim=mdlam", "optim.eps_min=1000"], "optim.eps_min=1000 is above optim.eps0=100"),
    (["optim=mdlam", "optim.backtrack_factor=1"], "optim.backtrack_factor=1 is out of range: it must be > 1"),
]


@pytest.mark.parametrize("overrides, expected", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_value_is_one_line_and_exit_2(unchanged, overrides, expected):
    r = amtrain(*overrides, cwd=unchanged)
    one_line(r, 2, "amtrain: error:", expected)
    assert not (unchanged / "runs").exists()  # nothing was started


@pytest.mark.parametrize("override, expected", [
    ("~seed", "~seed deletes a setting every run needs: give it a value (seed=...) instead"),
    ("~optim.lr", "~optim.lr deletes a setting every run needs: give it a value (optim.lr=...) instead"),
    ("~optim", "~optim: a run cannot go without its optim; choose one with optim=NAME: adam, admm, am_adam,"),
    ("model=null", "model=null: a run cannot go without its model; choose one with model=NAME: binary_mlp,"),
    ("tuned=null", "tuned=null: a config group is left out with ~tuned (Hydra's delete), not set to null"),
    ("experiment=null", "experiment=null: a config group is left out with ~experiment"),
    ("name=../..", "name='../..' is not a sweep name (its jobs go to multirun/<name>/)"),
])
def test_deleting_what_a_run_needs_or_a_sweep_name_out_of_multirun_is_one_line(override, expected):
    """Before, ~seed reached the run as a traceback, tuned=null was a Hydra message naming no key,
    and name= or name=../.. put a sweep's jobs straight into multirun/ or outside it."""
    with pytest.raises(ConfigError) as e:
        compose_checked(["optim=adam", override])
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_the_optional_groups_may_be_left_out():
    assert compose_checked(["optim=adam", "~tuned"]).optim.lr == 0.003  # the optim file's, not the tuned 0.001
    assert compose_checked(["optim=adam", "~mode_defaults", "~experiment"]).optim.lr == 0.001


@pytest.mark.parametrize("args, expected", [
    (["-m", "optim=foo,sgd"], "unknown optim 'foo'"),
    (["-m", "seed=0,1", "batch_size=0"], "batch_size=0 is out of range"),
    (["-m", "optim=sgd,adam", "optim.lr=-1,0.1"], "optim.lr=-1 is out of range"),
    (["-m", "optim=sgd,am_mem", "optim.solver=foo"], "unknown config key 'optim.solver'"),
    (["--cfg", "job", "epoch=3"], "unknown config key 'epoch'"),
    (["--cfg", "job", "batch_size=0"], "batch_size=0 is out of range"),
    (["-m", "--cfg", "job", "optim=sgd", "seed=0,1", "epochs=0"], "epochs=0 is out of range"),
    # two points that would run in one folder, one over the other
    (["-m", "optim=sgd", "seed=0,0"], "the sweep has the point seed=0 twice: give each value once"),
    (["-m", "optim=sgd", "optim.lr=0.1,0.10", "seed=0,1"], "the sweep has the point optim.lr=0.1 seed=0 twice"),
    (["-m", "optim=sgd", "device=cpu,auto"], "device=cpu and device=auto would run in one folder, one over the "
                                             "other: device is not part of a job's folder name"),
    (["-m", "optim=sgd,adam", "hydra.sweep.subdir=same"], "make hydra.sweep.subdir tell the sweep's points apart"),
])
def test_sweeps_and_cfg_check_every_point_before_anything_starts(unchanged, args, expected):
    r = amtrain(*args, "name=never", cwd=unchanged)
    one_line(r, 2, "amtrain: error:", expected)
    assert not (unchanged / "multirun" / "never").exists()  # no multirun.yaml, no job folder


# ----------------------------------------------------------------------------- output paths
def test_unwritable_or_misplaced_run_folders_are_one_line(unchanged, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    cases = [(f"hydra.run.dir={a_file}", "is a file, not a folder"),
             (f"hydra.run.dir={a_file}/sub", "cannot write the run folder"),
             ("hydra.run.dir=/proc/amtrain_x", "cannot write the run folder /proc/amtrain_x")]
    if os.geteuid() != 0:  # root writes through permission bits
        ro = tmp_path / "read_only"
        ro.mkdir(mode=0o555)
        cases.append((f"hydra.run.dir={ro}/run", "cannot write the run folder"))
    for override, expected in cases:
        one_line(amtrain(*SWEEP, override, cwd=unchanged), 2, "amtrain: error:", expected)
    one_line(amtrain("-m", *SWEEP, "seed=0,1", f"hydra.sweep.dir={a_file}", cwd=unchanged), 2,
             "the sweep folder", "is a file")
    assert a_file.read_text() == "keep me"


# ----------------------------------------------------------------------------- finished folders
def test_rerunning_into_a_finished_folder_skips_it(unchanged):
    r = amtrain(*SWEEP, "optim=sgd", "hydra.run.dir=done_run", cwd=unchanged)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "skipped" in r.stderr and "resume=false" in r.stderr


def test_a_finished_folder_with_another_configuration_is_refused_not_reused(unchanged):
    # the same folder, a setting that changes the computation: one line, nothing touched
    r = amtrain(*SWEEP, "optim=sgd", "optim.lr=0.05", "hydra.run.dir=done_run", cwd=unchanged)
    one_line(r, 2, "done_run finished with a different configuration", "optim.lr: 0.4 there, 0.05 now",
             "resume=false reruns it")
    # where and how a run executes is not compared: reused
    r = amtrain(*SWEEP, "optim=sgd", "threads=1", "resume=true", "hydra.run.dir=done_run", cwd=unchanged)
    assert r.returncode == 0 and "skipped" in r.stderr


def test_a_sweep_reports_a_job_whose_finished_run_computed_something_else(tmp_path):
    # as after a default or a tuned file changed: the folder name (the overrides) is the same
    assert amtrain("-m", *SWEEP, "optim=sgd", "seed=0,1", "name=sw", cwd=tmp_path).returncode == 0
    job = next(p for p in (tmp_path / "multirun" / "sw").iterdir() if p.name.endswith("seed=1"))
    config = job / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 1", "epochs: 7"))
    before = checksums(job)
    r = amtrain("-m", *SWEEP, "optim=sgd", "seed=0,1", "name=sw", cwd=tmp_path)
    assert r.returncode != 0, r.stdout
    assert "1 skipped" in r.stdout and "1 failed" in r.stdout, r.stdout
    assert "epochs: 7 there, 1 now" in r.stdout + r.stderr
    assert checksums(job) == before


def test_a_finished_folder_whose_config_cannot_be_read_is_refused(tmp_path):
    assert amtrain(*SWEEP, "optim=sgd", "hydra.run.dir=X", cwd=tmp_path).returncode == 0
    (tmp_path / "X" / "config.yaml").write_text("optim: [unclosed\n")
    before = checksums(tmp_path / "X")
    one_line(amtrain(*SWEEP, "optim=sgd", "hydra.run.dir=X", cwd=tmp_path), 2,
             "is finished (DONE) but its config.yaml cannot be read", "resume=false")
    assert checksums(tmp_path / "X") == before


def test_resume_false_moves_the_finished_run_aside_before_writing(tmp_path):
    r = amtrain(*SWEEP, "optim=sgd", "hydra.run.dir=X", cwd=tmp_path)
    assert r.returncode == 0
    first = checksums(tmp_path / "X")
    # a second, failing run into the same folder: the old files are moved aside intact, first
    r = amtrain(*SWEEP, "optim=sgd", "optim.lr=1e6", "hydra.run.dir=X", "resume=false", cwd=tmp_path)
    one_line(r, 3, "amtrain: error: training diverged")
    aside = list((tmp_path / "X" / ".superseded").iterdir())
    assert len(aside) == 1
    assert checksums(aside[0]) == {k: v for k, v in first.items() if not k.startswith(".superseded")}
    # no old metrics.csv beside the new config: the failed run's files stand alone
    assert not (tmp_path / "X" / "metrics.csv").exists() and not (tmp_path / "X" / "DONE").exists()
    assert "lr: 1000000.0" in (tmp_path / "X" / "config.yaml").read_text()
    agg = subprocess.run([sys.executable, str(AGGREGATE), str(tmp_path / "X"), "-o", str(tmp_path / "a.csv")],
                         capture_output=True, text=True)
    assert agg.returncode != 0 and "training diverged" in agg.stderr  # left out, never relabelled
    # a successful rerun: the failed attempt is moved aside too
    assert amtrain(*SWEEP, "optim=sgd", "hydra.run.dir=X", "resume=false", cwd=tmp_path).returncode == 0
    assert len(list((tmp_path / "X" / ".superseded").iterdir())) == 2


def test_aggregate_refuses_files_from_different_runs_and_malformed_csvs(tmp_path):
    for name in ("a", "b", "c"):
        assert amtrain(*SWEEP, "optim=sgd", f"hydra.run.dir=sweep/{name}", cwd=tmp_path).returncode == 0
    # a's metrics.csv swapped for b's (another run's numbers under a's config); b's file torn
    # (a line cut short, then the next: more fields than the header); c's line cut short with
    # fewer fields than the header (pandas pads it: its fields land in other columns)
    (tmp_path / "sweep" / "a" / "metrics.csv").write_bytes((tmp_path / "sweep" / "b" / "metrics.csv").read_bytes())
    with open(tmp_path / "sweep" / "b" / "metrics.csv", "a") as fh:
        fh.write("12,1,600,test,acc,0.5,0.1,synthetic,mlp_2x100,sgd12,1,600,test,loss,0.3,0.1,synthetic\n")
    with open(tmp_path / "sweep" / "c" / "metrics.csv", "a") as fh:
        fh.write("12,1,600,test,acc,0.5,0.1,synthetic,mlp_2x100,sgd12,1,600,test,loss\n")
    agg = subprocess.run([sys.executable, str(AGGREGATE), str(tmp_path / "sweep"), "-o", str(tmp_path / "o.csv")],
                         capture_output=True, text=True)
    assert "Traceback" not in agg.stderr and not (tmp_path / "o.csv").exists()
    lines = [ln for ln in agg.stderr.splitlines() if ln.startswith("missing cell")]
    assert len(lines) == 3
    assert any("sweep/a: config.yaml, DONE and metrics.csv come from different runs" in ln for ln in lines)
    assert any("sweep/b: malformed metrics.csv" in ln for ln in lines)
    assert any("sweep/c: metrics.csv has rows that name other runs (a torn or shifted line?)" in ln for ln in lines)
    nowhere = subprocess.run([sys.executable, str(AGGREGATE), str(tmp_path / "nowhere"), "-o", "o.csv"],
                             capture_output=True, text=True)
    assert nowhere.returncode != 0 and "Traceback" not in nowhere.stderr and "is not a folder" in nowhere.stderr
    # outputs it cannot write are one line, said before reading any run
    (tmp_path / "file").write_text("")
    for out, line in ((tmp_path / "sweep", f"{tmp_path / 'sweep'} is a folder, not a file: choose another -o"),
                      (tmp_path / "file" / "o.csv",
                       f"the output folder {tmp_path / 'file'} is a file, not a folder: choose another -o")):
        bad = subprocess.run([sys.executable, str(AGGREGATE), str(tmp_path / "sweep"), "-o", str(out)],
                             capture_output=True, text=True)
        assert bad.returncode != 0 and bad.stderr.strip() == f"aggregate: error: {line}", bad.stderr
    report = [sys.executable, str(Path(AGGREGATE).with_name("report.py"))]
    bad = subprocess.run(report + ["--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.md")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip() == (f"report: error: --results {tmp_path / 'nowhere'} is not a "
                                                          "folder: give the folder of the aggregated CSVs "
                                                          "(results/quick or results/full)")
    assert not (tmp_path / "r.md").exists()


def _torn(text: str) -> str:
    """The CSV cut off two thirds of the way in, in the middle of a row's leading fields (a cut at a
    fixed fraction of the text could land on a row's end, which tears nothing)."""
    head = text[:text.rindex("\n", 0, len(text) * 2 // 3) + 1]
    row = text[len(head):].split("\n", 1)[0]
    return head + ",".join(row.split(",")[:5])


@pytest.mark.parametrize("damage, said", [
    (lambda text: "", "cannot be read as a results CSV (EmptyDataError"),
    (lambda text: text.replace(",variant,", ",kind,", 1), "lacks the columns variant of a results CSV"),
    (_torn, "row(s) without their numbers (the first: line "),
    (lambda text: text.encode("utf-16"), "cannot be read as a results CSV (UnicodeDecodeError"),
])
def test_a_results_csv_that_is_not_aggregates_is_one_line_for_the_figures_and_the_report(tmp_path, damage, said):
    """A torn, emptied, hand-edited or re-encoded CSV: the figure script and the report name the
    file and the fix (rerun aggregate.py) in one line, and write nothing."""
    scripts = Path(AGGREGATE).parent
    good = (scripts.parent / "results" / "quick" / "fig8_binary.csv").read_text()
    damaged = damage(good)
    (tmp_path / "fig8_binary.csv").write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
    fix = f"rerun scripts/aggregate.py on its sweep folder into {tmp_path / 'fig8_binary.csv'}"
    for script, name in ((scripts / "figures" / "fig8_binary.py", "fig8_binary"), (scripts / "report.py", "report")):
        r = subprocess.run([sys.executable, str(script), "--results", str(tmp_path)], capture_output=True, text=True)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"{name}: error: {tmp_path / 'fig8_binary.csv'} ") and said in r.stderr, r.stderr
        assert fix in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["fig8_binary.csv"]


def test_a_broken_notes_file_is_one_line_for_the_report(tmp_path):
    (tmp_path / "notes.yaml").write_text("intro: [\n")
    r = subprocess.run([sys.executable, str(Path(AGGREGATE).with_name("report.py")), "--results", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == (f"report: error: {tmp_path / 'notes.yaml'} is not valid YAML "
                                                      "(while parsing a flow node): mend it, or move it aside")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.yaml"]


def test_a_result_file_is_replaced_whole_or_not_at_all(tmp_path):
    """aggregate.py and report.py write through write_atomically: a write that fails half-way
    leaves the old CSV as it was, and no temporary file behind."""
    from amtrain.errors import OutputError
    from amtrain.results import write_atomically

    out = tmp_path / "fig.csv"
    out.write_text("old,whole\n")

    def torn(tmp):
        tmp.write_text("new,ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="cannot write .*fig.csv \\(No space left on device\\): choose another -o"):
        write_atomically(out, torn, "choose another -o")
    assert out.read_text() == "old,whole\n" and [p.name for p in tmp_path.iterdir()] == ["fig.csv"]
    write_atomically(out, lambda tmp: tmp.write_text("new,whole\n"), "choose another -o")
    assert out.read_text() == "new,whole\n" and [p.name for p in tmp_path.iterdir()] == ["fig.csv"]


# ----------------------------------------------------------------------------- divergence and bad data
def test_a_finite_blow_up_is_divergence_naming_the_methods_own_keys(unchanged):
    r = amtrain(*SWEEP, "optim=sgd", "optim.lr=1e6", "hydra.run.dir=runs/sgd_1e6", cwd=unchanged)
    line = one_line(r, 3, "amtrain: error: training diverged", "over 100 times its first value", "optim.lr")
    assert "codes" not in line  # SGD has no code step
    assert not (unchanged / "runs" / "sgd_1e6" / "DONE").exists()
    assert (unchanged / "runs" / "sgd_1e6" / "FAILED").read_text().startswith("training diverged")
    r = amtrain(*SWEEP, "optim=am_adam", "optim.lr=1e9", "optim.codes.lr=1e9", "hydra.run.dir=runs/am_1e9",
                cwd=unchanged)
    one_line(r, 3, "training diverged", "optim.codes.lr")


def _h5(path: Path, **changes) -> Path:
    """A HIGGS HDF5 file in the converter's layout with the given datasets replaced (None: removed)."""
    rows = fake.higgs_rows(300)
    parts = {"train/x": rows[:200, 1:], "train/y": rows[:200, 0], "test/x": rows[200:, 1:], "test/y": rows[200:, 0],
             "stats/mean": rows[:200, 1:].mean(0).astype(np.float64),
             "stats/std": rows[:200, 1:].std(0).astype(np.float64)}
    parts.update(changes)
    with h5py.File(path, "w") as f:
        for name, data in parts.items():
            if data is not None:
                f.create_dataset(name, data=data)
        f.attrs.update(complete=True, n_features=28)
    return path


def test_bad_hdf5_files_and_nan_data_are_one_line_naming_the_file(unchanged, tmp_path):
    rows = fake.higgs_rows(300)
    nan_x = rows[:200, 1:].copy()
    nan_x[7, 3] = np.nan
    cases = {
        "cols20.h5": (dict(**{"train/x": rows[:200, 1:21], "test/x": rows[200:, 1:21]}), "has shape (200, 20)"),
        "nomean.h5": ({"stats/mean": None}, "has no 'stats/mean'"),
        "nan.h5": ({"train/x": nan_x, "stats/mean": np.full(28, np.nan)}, "stats/mean is not finite"),
    }
    for name, (changes, expected) in cases.items():
        path = _h5(tmp_path / name, **changes)
        r = amtrain("dataset=higgs", "model=higgs_mlp", f"dataset.path={path}", "device=cpu", "progress=false",
                    f"hydra.run.dir=runs/{name}", cwd=unchanged)
        one_line(r, 2, "amtrain: error:", str(path), expected)
    # NaN inside the rows but consistent stats (a file not made by the converter): caught when read
    stats = {"stats/mean": np.zeros(28), "stats/std": np.ones(28)}
    path = _h5(tmp_path / "nan_rows.h5", **{"train/x": nan_x}, **stats)
    r = amtrain("dataset=higgs", "model=higgs_mlp", f"dataset.path={path}", "device=cpu", "progress=false",
                "optim=sgd", "hydra.run.dir=runs/nan_rows", cwd=unchanged)
    one_line(r, 2, str(path), "hold NaN, inf", "convert it again")


def test_cifar_batches_of_float_pixels_are_bad_data(unchanged, tmp_path):
    import pickle

    root = fake.write_cifar10(tmp_path, n_per_batch=20, n_test=20)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    d = pickle.loads(batch.read_bytes())
    d["data"] = d["data"].astype(np.float32)
    d["data"][0, 0] = np.nan
    batch.write_bytes(pickle.dumps(d))
    r = amtrain("dataset=cifar10", "dataset.download=false", f"dataset.root={root}", "device=cpu",
                "hydra.run.dir=runs/cifar_nan", cwd=unchanged)
    one_line(r, 2, str(batch), "float32 pixels")


# ----------------------------------------------------------------------------- the HIGGS converter
def test_higgs_converter_never_overwrites_its_input_and_checks_the_output_first(tmp_path):
    src = tmp_path / "a.tsv"
    src.write_text("\n".join("\t".join(f"{v:.3f}" for v in r) for r in fake.higgs_rows(60)) + "\n")
    before = src.read_bytes()
    conv = lambda *a: subprocess.run(CONVERT + [str(x) for x in a], capture_output=True, text=True)  # noqa: E731
    one_line(conv(src, "-o", src, "--test-rows", "10"), 2, "amtrain-higgs-convert: error:", "is also a source")
    one_line(conv(src, "-o", tmp_path, "--test-rows", "10"), 2, "amtrain-higgs-convert", "is a folder")
    one_line(conv(src, tmp_path / "HIGGS.h5"), 2, "amtrain-higgs-convert", "looks like an HDF5 output", "-o")
    (tmp_path / "old.h5").write_bytes(b"precious")
    one_line(conv(src, "-o", tmp_path / "old.h5", "--test-rows", "10"), 2, "amtrain-higgs-convert", "exists",
             "--force")
    r = conv(src, "-o", tmp_path / "x.h5", "--test-rows", "0")  # argparse: its usage, then the error line
    assert r.returncode == 2 and "must be at least 1" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "nan.tsv"
    bad.write_text(src.read_text().replace("\n", "\nnan\t" + "\t".join(["1.0"] * 28) + "\n", 1))
    one_line(conv(bad, "-o", tmp_path / "nan.h5", "--test-rows", "10"), 2, str(bad), "line 2 has a NaN")
    assert src.read_bytes() == before and (tmp_path / "old.h5").read_bytes() == b"precious"
    assert not (tmp_path / "nan.h5").exists() and not (tmp_path / "x.h5").exists()
    assert conv(src, "-o", tmp_path / "ok.h5", "--test-rows", "10").returncode == 0


def test_the_missing_higgs_hint_is_a_command_that_works(unchanged, tmp_path):
    target = tmp_path / "data" / "HIGGS" / "HIGGS.h5"
    r = amtrain("dataset=higgs", "model=higgs_mlp", f"dataset.root={tmp_path / 'data'}", "device=cpu",
                "hydra.run.dir=runs/no_higgs", cwd=unchanged)
    line = one_line(r, 2, "amtrain: error: HIGGS HDF5 file not found")
    hint = line.split("convert the UCI file first: ")[1].split()
    assert hint[0] == "amtrain-higgs-convert" and hint[-2:] == ["-o", str(target)]
    src = tmp_path / "HIGGS.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("\n".join(",".join(f"{v:.4f}" for v in r) for r in fake.higgs_rows(600)) + "\n")
    pasted = subprocess.run(CONVERT + [str(src)] + hint[2:] + ["--test-rows", "100"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert pasted.returncode == 0, pasted.stderr
    assert target.exists()


# ----------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_is_one_line_exit_130_failed_written_partial_kept(tmp_path):
    out = tmp_path / "r"
    args = ["dataset=synthetic", "dataset.n_train=20000", "device=cpu", "progress=false", "epochs=200",
            "eval.first_epoch_batches=0", "optim=sgd", f"hydra.run.dir={out}"]
    # Ctrl-C as a terminal sends it: to a run whose SIGINT is at its default. A suite started as a
    # background job of a non-interactive shell (nohup ... &) passes SIGINT down ignored, as POSIX
    # shells do for such jobs, and Python then installs no KeyboardInterrupt handler.
    p = subprocess.Popen(amtrain_cmd() + args, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = out / "metrics.partial.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.exists() and partial.read_text().count("\n") > 8):
        time.sleep(0.2)
    seen = partial.read_text()
    status = Path(f"/proc/{p.pid}/status")  # the child's signal masks, for the message if it ignores the signal
    masks = [ln for ln in status.read_text().splitlines() if ln.startswith("Sig")] if status.exists() else []
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    r = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    assert r.returncode != 0, f"the run did not stop on SIGINT ({seen.count(chr(10))} rows when sent; {masks})"
    one_line(r, 130, "amtrain: interrupted (Ctrl-C)", "FAILED", "partial metrics")
    assert (out / "FAILED").read_text().startswith("interrupted (Ctrl-C) at epoch ")
    assert partial.read_text().startswith(seen) and not (out / "metrics.csv").exists()
    assert "failed: interrupted" in (out / "train.log").read_text()


# ----------------------------------------------------------------------------- sweeps
def test_a_sweep_ends_with_a_summary_naming_each_failed_job(tmp_path):
    r = amtrain("-m", *SWEEP, "optim=sgd", "optim.lr=1e6,0.1", "seed=0", "name=s", cwd=tmp_path)
    assert r.returncode == 3 and "Traceback" not in r.stdout + r.stderr
    summary = r.stdout[r.stdout.index("sweep multirun/s: 2 jobs"):]
    assert "2 jobs: 1 finished, 1 diverged" in summary
    diverged = [ln for ln in summary.splitlines() if ln.strip().startswith("diverged")]
    assert len(diverged) == 1 and "optim.lr=1000000.0" in diverged[0] and "training diverged" in diverged[0]
    assert r.stderr.strip().count("\n") == 0 and "the sweep did not complete (1 finished, 1 diverged)" in r.stderr


def test_two_identical_sweeps_at_once_split_the_jobs_and_aggregate_as_one(tmp_path):
    args = ["-m", *SWEEP, "epochs=3", "optim=am_adam,sgd", "seed=0,1,2,3", "name=dbl"]
    procs = [subprocess.Popen(amtrain_cmd() + args, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert all("Traceback" not in o + e for o, e in outs)
    jobs = sorted(p for p in (tmp_path / "multirun" / "dbl").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 8
    for job in jobs:  # each job ran exactly once, in one process, and its files agree
        assert (job / "DONE").exists() and not (job / "FAILED").exists() and not (job / ".superseded").exists()
        assert (job / "train.log").read_text().count("run: dataset=") == 1
        df = pd.read_csv(job / "metrics.csv")  # well formed
        assert df.run_id.nunique() == 1 and df.value.notna().all()
        assert f"run_id={df.run_id[0]} " in (job / "DONE").read_text()
        assert (job / "config.yaml").read_text().startswith(f"# amtrain run {df.run_id[0]}")
    finished = [ln.split()[1] for o, _ in outs for ln in o.splitlines() if ln.strip().startswith("finished ")]
    assert sorted(finished) == sorted(str(j.relative_to(tmp_path)) for j in jobs)  # split, never both
    # the same table as one clean sweep
    r = amtrain(*[a for a in args if not a.startswith("name=")], "name=clean", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    tables = []
    for name in ("dbl", "clean"):
        out = tmp_path / f"{name}.csv"
        agg = subprocess.run([sys.executable, str(AGGREGATE), str(tmp_path / "multirun" / name), "-o", str(out)],
                             capture_output=True, text=True)
        assert agg.returncode == 0 and not agg.stderr, agg.stderr
        tables.append(pd.read_csv(out).drop(columns=["variant", "settings", "wall_time"]))
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_two_single_runs_started_together_get_a_folder_each(tmp_path):
    procs = [subprocess.Popen(amtrain_cmd() + SWEEP + ["optim=sgd", "epochs=2", f"optim.lr={lr}"], cwd=tmp_path,
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for lr in (0.05, 0.1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    runs = sorted(p.parent for p in (tmp_path / "runs").rglob("DONE"))
    assert len(runs) == 2 and not list((tmp_path / "runs").rglob("FAILED"))
    for run in runs:
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        lr = "0.05" if "optim.lr=0.05" in overrides else "0.1"
        assert f"lr: {lr}" in (run / "config.yaml").read_text()
        ids = pd.read_csv(run / "metrics.csv").run_id.unique().tolist()
        assert len(ids) == 1 and (run / "DONE").read_text().startswith(f"run_id={ids[0]} ")


def test_claiming_a_default_folder_adds_a_suffix_when_the_name_is_taken(tmp_path):
    from amtrain.rundir import claim_new

    base = tmp_path / "runs" / "12-00-00_x"
    assert claim_new(base) == base
    assert claim_new(base) == base.with_name("12-00-00_x_2")
    assert claim_new(base) == base.with_name("12-00-00_x_3")


def test_a_locked_folder_is_running_elsewhere(tmp_path):
    from amtrain.rundir import RunDir

    with RunDir(tmp_path / "busy"):
        r = amtrain(*SWEEP, "optim=sgd", f"hydra.run.dir={tmp_path / 'busy'}", cwd=tmp_path)
        one_line(r, 75, "amtrain: error: running elsewhere", str(tmp_path / "busy"), f"pid {os.getpid()}")
        assert {p.name for p in (tmp_path / "busy").iterdir()} == {".lock"}  # nothing touched
        r = amtrain("-m", *SWEEP, "optim=sgd", "seed=0", f"hydra.sweep.dir={tmp_path / 'sw'}",
                    "hydra.sweep.subdir=busy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # skipped: the other process owns that job


def test_a_lock_held_for_an_instant_by_no_named_process_is_waited_for(tmp_path):
    """rundir.holder()'s probe (reproduce.py looking at folders while another sweep runs), or a
    run between taking a folder's lock and writing its name, holds the lock for an instant with
    no name in it. A run that meets it waits for it instead of calling the folder busy; a
    nameless holder that stays is busy after NAMELESS_WAIT_S; a named one at once."""
    import fcntl
    import threading

    from amtrain import rundir
    from amtrain.errors import FolderBusy

    folder = tmp_path / "f"
    folder.mkdir()
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(0.2, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
    with rundir.RunDir(folder):
        assert rundir.holder(folder).startswith(f"pid {os.getpid()} on ")
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(0.2, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
    assert rundir.holder(folder) is None  # a probe that meets another probe waits for it too
    fcntl.flock(fd, fcntl.LOCK_EX)
    assert rundir.holder(folder) == "another process"  # ... for NAMELESS_WAIT_S at most
    t0 = time.monotonic()
    with pytest.raises(FolderBusy, match=r"\(another process\)"):
        rundir.RunDir(folder).__enter__()
    assert time.monotonic() - t0 >= rundir.NAMELESS_WAIT_S
    os.pwrite(fd, b"pid 7 on elsewhere\n", 0)
    t0 = time.monotonic()
    with pytest.raises(FolderBusy, match=r"\(pid 7 on elsewhere\)"):
        rundir.RunDir(folder).__enter__()
    assert time.monotonic() - t0 < rundir.NAMELESS_WAIT_S / 2
    os.close(fd)


def test_kill_9_mid_sweep_then_resume_reruns_only_the_killed_job_exactly(tmp_path):
    args = ["-m", *SWEEP, "dataset.n_train=6000", "epochs=4", "optim=sgd,adam", "seed=0"]
    p = subprocess.Popen(amtrain_cmd() + args + ["name=k"], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    second = None
    while time.time() < deadline:
        found = list((tmp_path / "multirun" / "k").glob("*optim=adam*/metrics.partial.csv")) \
            if (tmp_path / "multirun" / "k").exists() else []
        if found and found[0].read_text().count("\n") > 4:
            second = found[0].parent
            break
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert second is not None and not (second / "DONE").exists()
    first = next(j for j in (tmp_path / "multirun" / "k").iterdir() if "optim=sgd" in j.name)
    stamp = (first / "DONE").stat().st_mtime_ns
    r = amtrain(*args, "name=k", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "2 jobs: 1 finished, 1 skipped (finished before)" in r.stdout
    assert (first / "DONE").stat().st_mtime_ns == stamp  # not rerun
    assert len(list((second / ".superseded").iterdir())) == 1  # the killed attempt, kept aside
    r = amtrain(*args, "name=clean", cwd=tmp_path, timeout=600)
    for job in ("optim=sgd", "optim=adam"):
        a, b = (next(j for j in (tmp_path / "multirun" / n).iterdir() if job in j.name) for n in ("k", "clean"))
        strip = lambda d: pd.read_csv(d / "metrics.csv").drop(columns=["wall_time", "run_id"])  # noqa: E731
        pd.testing.assert_frame_equal(strip(a), strip(b))


def test_aggregate_lists_the_jobs_of_a_killed_sweep_that_never_started(tmp_path):
    r = amtrain("-m", *SWEEP, "optim=sgd", "seed=0,1,2", "name=part", cwd=tmp_path)
    assert r.returncode == 0
    jobs = sorted(p for p in (tmp_path / "multirun" / "part").iterdir() if p.is_dir() and not p.name.startswith("."))
    import shutil

    shutil.rmtree(jobs[1])
    shutil.rmtree(jobs[2])
    (jobs[0] / "DONE").unlink()  # killed: unfinished
    agg = subprocess.run([sys.executable, str(AGGREGATE), str(tmp_path / "multirun" / "part"), "-o", "o.csv"],
                         capture_output=True, text=True, cwd=tmp_path)
    lines = agg.stderr.splitlines()
    assert sum("never started" in ln for ln in lines) == 2 and sum("unfinished" in ln for ln in lines) == 1
    assert all(j.name in agg.stderr for j in jobs) and "Traceback" not in agg.stderr


def test_parallel_jobs_share_the_cores_instead_of_oversubscribing(tmp_path):
    from amtrain.sweep import cores

    r = amtrain("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP, "optim=sgd", "seed=0,1",
                "name=par", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    logs = [p.read_text() for p in (tmp_path / "multirun" / "par").rglob("train.log")]
    assert len(logs) == 2 and all(f"threads={max(1, cores() // 2)} " in t for t in logs)
    r = amtrain("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP, "optim=sgd", "seed=0", "threads=1",
                "name=par1", cwd=tmp_path)
    assert "threads=1 " in next((tmp_path / "multirun" / "par1").rglob("train.log")).read_text()
