"""Checkpoints (amtrain.checkpoint): a stopped run goes on from its last checkpoint to exactly the
numbers of a run that was never stopped.

Every method and model, stopped during epoch 3 of 4 (after the checkpoints of epochs 1 and 2)
and rerun: its metrics.csv equals an uninterrupted run's bit for bit (every row and value,
wall_time apart), under one run id, and what the stopped attempt wrote after the checkpoint is
kept in .superseded/. Also: batched seed groups (with a seed that had diverged), a single run
stopped by SIGTERM and a sweep killed with SIGKILL through the CLI, a save killed half-way,
and every reason a checkpoint is not used.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import amtrain.train as train_mod
from amtrain import checkpoint, provenance
from amtrain.cli import command as amtrain_cmd
from amtrain.errors import Interrupted
from amtrain.rundir import run_ids
from amtrain.seeds import run_seeds
from amtrain.train import run
from test_seeds import RNN, poison_seed_1

EVERY_EPOCH = ["epochs=4", "checkpoint.every_minutes=0"]
# The RNN's case also runs on another device (scripts/device_check.sh: AMTRAIN_TEST_DEVICE=cuda),
# where its passes replay as captured CUDA graphs, which a checkpoint leaves out and resume recaptures
RNN_DEVICE = os.environ.get("AMTRAIN_TEST_DEVICE", "cpu")
FULL_BATCH = ["model.batchnorm=false"]
CASES = {
    "sgd": ["optim=sgd", "optim.momentum=0.9", "optim.schedule.step_epochs=1"],
    "adam": ["optim=adam", "optim.grad_clip=0.05"],
    "am_adam": ["optim=am_adam", "mu=additive"],
    "am_adam_paper": ["optim=am_adam", "mode=paper"],
    "am_mem": ["optim=am_mem"],
    "am_mem_binary": ["optim=am_mem", "model=binary_mlp"],
    "am_adam_rnn": ["optim=am_adam", "model=rnn", f"device={RNN_DEVICE}"],
    "am_adam_off": ["optim=am_adam_off"],
    "am_mem_off": ["optim=am_mem_off"],
    "admm": ["optim=admm", *FULL_BATCH],
    "dladmm": ["optim=dladmm", "optim.rho=0.01"],
    "mdlam": ["optim=mdlam"],
    "bcd": ["optim=bcd"],
}


def table(folder):
    """metrics.csv without wall_time (training seconds, which differ between any two runs)."""
    return pd.read_csv(folder / "metrics.csv").drop(columns=["wall_time"])


def stop_in_epoch(monkeypatch, epoch: int, error=Interrupted("SIGTERM")):
    """Raise ``error`` at the end of epoch ``epoch``'s training, before its checkpoint."""
    original, calls = train_mod._finish_epoch, {"n": 0}

    def finish(trainer):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise error
        original(trainer)

    monkeypatch.setattr(train_mod, "_finish_epoch", finish)
    return lambda: monkeypatch.setattr(train_mod, "_finish_epoch", original)


def assert_went_on(folder, reference, after: int = 2):
    got, want = table(folder), table(reference)
    assert got.drop(columns=["run_id"]).equals(want.drop(columns=["run_id"]))
    ids = run_ids(folder)
    assert ids["config"] == ids["done"] == ids["metrics"] and got.run_id.nunique() == 1
    assert not (folder / "checkpoint.pt").exists() and not (folder / "FAILED").exists()
    log = (folder / "train.log").read_text()
    assert f"resuming {folder} from its checkpoint after epoch {after}" in log
    aside = [p for p in (folder / ".superseded").iterdir() if p.name.endswith("_after-checkpoint")]
    assert len(aside) == 1
    assert (aside[0] / "FAILED").read_text().startswith("interrupted (SIGTERM) at epoch 3")


@pytest.mark.parametrize("case", list(CASES))
def test_a_stopped_run_goes_on_to_the_numbers_of_an_unstopped_one(tmp_path, make_cfg, monkeypatch, case):
    cfg = make_cfg(*EVERY_EPOCH, *CASES[case])
    reference = run(cfg, tmp_path / "reference")
    undo = stop_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path / "run")
    undo()
    stopped = tmp_path / "run"
    assert (stopped / "checkpoint.pt").exists() and (stopped / "FAILED").exists()
    result = run(cfg, stopped)
    assert result.status == "finished" and result.resumed_after == 2
    assert dict(result) == {**dict(reference), "train_time": result["train_time"]}
    assert_went_on(stopped, reference.out_dir)


def test_lenet5_goes_on_from_its_checkpoint(tmp_path, make_cfg, mnist_root, monkeypatch):
    cfg = make_cfg("dataset=mnist", f"dataset.root={mnist_root}", "dataset.download=false", "model=lenet5",
                   "model.batchnorm=true", "optim=am_adam", "batch_size=40", *EVERY_EPOCH)
    reference = run(cfg, tmp_path / "reference")
    undo = stop_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path / "run")
    undo()
    assert run(cfg, tmp_path / "run").resumed_after == 2
    assert_went_on(tmp_path / "run", reference.out_dir)


def test_the_rows_after_the_checkpoint_are_moved_aside_and_not_written_twice(tmp_path, make_cfg, monkeypatch):
    cfg = make_cfg(*EVERY_EPOCH, "optim=sgd", "eval.every_batches=4")
    undo = stop_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path / "run")
    undo()
    before = pd.read_csv(tmp_path / "run" / "metrics.partial.csv")
    assert before.epoch.max() == 3  # epoch 3's periodic evaluations were written before the stop
    run(cfg, tmp_path / "run")
    aside = next((tmp_path / "run" / ".superseded").iterdir())
    tail = pd.read_csv(aside / "metrics.partial.tail.csv", header=None, names=before.columns)
    assert set(tail.epoch) == {3} and len(tail) == (before.epoch == 3).sum()
    after = table(tmp_path / "run")
    assert not after.duplicated(["step", "split", "metric"]).any()


@pytest.mark.parametrize("method", [["optim=am_mem"], RNN + ["model.readout=sequence"]], ids=["am_mem", "rnn"])
def test_a_batched_seed_group_goes_on_with_every_seed_as_uninterrupted(tmp_path, make_cfg, monkeypatch, method):
    cfgs = [make_cfg(*EVERY_EPOCH, *method, f"seed={s}") for s in (0, 1, 2)]
    references = run_seeds(cfgs, [tmp_path / f"ref{s}" for s in (0, 1, 2)])
    dirs = [tmp_path / f"s{s}" for s in (0, 1, 2)]
    undo = stop_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run_seeds(cfgs, dirs)
    undo()
    assert all((d / "checkpoint.pt").exists() for d in dirs)
    # the group's one file under each seed's folder: a hard link, not S copies of every seed's state
    assert all((d / "checkpoint.pt").samefile(dirs[0] / "checkpoint.pt") for d in dirs[1:])
    assert "one file in each of 3 seed folders" in (dirs[0] / "train.log").read_text()
    outcomes = run_seeds(cfgs, dirs)
    assert [(o.status, o.resumed_after) for o in outcomes] == [("finished", 2)] * 3
    for d, ref in zip(dirs, references):
        assert_went_on(d, ref.out_dir)
        assert "(on a seed axis with seeds [0, 1, 2])" in (d / "train.log").read_text()


def test_a_group_seed_that_had_diverged_starts_again_while_the_group_goes_on(tmp_path, make_cfg, monkeypatch):
    """Seed 1's weights turn to NaN in epoch 1: it is recorded as diverged, the group goes on and
    checkpoints seeds 0 and 2. Stopped in epoch 3 and rerun, seeds 0 and 2 go on from their
    checkpoint, and seed 1 (FAILED, no checkpoint of its own) is trained again from the start."""
    from amtrain.optim.am.online import AMAdam

    original = AMAdam.step
    cfgs = [make_cfg(*EVERY_EPOCH, "optim=am_adam", f"seed={s}") for s in (0, 1, 2)]
    calls = poison_seed_1(monkeypatch)
    references = run_seeds(cfgs, [tmp_path / f"ref{s}" for s in (0, 1, 2)])
    assert isinstance(references[1], Exception)
    dirs = [tmp_path / f"s{s}" for s in (0, 1, 2)]
    calls["n"] = 0
    undo = stop_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run_seeds(cfgs, dirs)
    undo()
    assert (dirs[1] / "FAILED").read_text().startswith("training diverged at epoch 1")
    assert not (dirs[1] / "checkpoint.pt").exists()
    monkeypatch.setattr(AMAdam, "step", original)
    outcomes = run_seeds(cfgs, dirs)
    assert [o.resumed_after for o in outcomes] == [2, None, 2]
    for s in (0, 2):
        assert_went_on(dirs[s], references[s].out_dir)
    single = run(cfgs[1], tmp_path / "single1")  # seed 1 alone, as it was now trained
    assert table(dirs[1]).drop(columns=["run_id"]).equals(table(single.out_dir).drop(columns=["run_id"]))


def _stopped(tmp_path, make_cfg, monkeypatch, *overrides):
    cfg = make_cfg(*EVERY_EPOCH, "optim=sgd", *overrides)
    undo = stop_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path / "run")
    undo()
    return cfg, tmp_path / "run"


def _started_again(folder, reason: str):
    log = (folder / "train.log").read_text()
    assert "from its checkpoint after epoch" not in log and f"not resuming from the checkpoint in {folder}: {reason}" in log, log
    assert not (folder / "checkpoint.pt").exists() and (folder / "DONE").exists()
    aside = next(p for p in (folder / ".superseded").iterdir())
    assert (aside / "checkpoint.pt").exists() and (aside / "FAILED").exists()  # kept, not deleted


def test_a_changed_config_starts_again(tmp_path, make_cfg, monkeypatch):
    cfg, folder = _stopped(tmp_path, make_cfg, monkeypatch)
    cfg.optim.lr = cfg.optim.lr * 2
    assert run(cfg, folder).resumed_after is None
    _started_again(folder, "the config changed since (optim.lr)")


def test_a_run_whose_data_changed_while_it_was_stopped_does_not_go_on_with_other_data(tmp_path, make_cfg,
                                                                                      monkeypatch):
    """Files replaced under the same name (a re-download, another copy) while a run was stopped:
    going on would train one run on two datasets. It stops with one line, keeps its checkpoint,
    and goes on once the same files are back."""
    from amtrain.data.fake import write_mnist
    from amtrain.errors import DataError

    root = write_mnist(tmp_path / "data", seed=0)
    mnist = ["dataset=mnist", f"dataset.root={root}", "dataset.download=false"]
    cfg, folder = _stopped(tmp_path, make_cfg, monkeypatch, *mnist)
    write_mnist(tmp_path / "data", seed=5)
    with pytest.raises(DataError, match=r"^the dataset changed since this run stopped \(data [0-9a-f]{8} then, "
                                        r"[0-9a-f]{8} now\): put the same files back"):
        run(cfg, folder)
    assert (folder / "checkpoint.pt").exists() and not (folder / "DONE").exists()
    write_mnist(tmp_path / "data", seed=0)
    reference = run(cfg, tmp_path / "reference")
    assert run(cfg, folder).resumed_after == 2
    assert table(folder).drop(columns=["run_id"]).equals(table(reference.out_dir).drop(columns=["run_id"]))
    # a batched seed group: every seed says so, and goes on once the files are back
    cfgs = [make_cfg(*EVERY_EPOCH, "optim=sgd", *mnist, f"seed={s}") for s in (0, 1)]
    dirs = [tmp_path / f"g{s}" for s in (0, 1)]
    undo = stop_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run_seeds(cfgs, dirs)
    undo()
    write_mnist(tmp_path / "data", seed=5)
    outcomes = run_seeds(cfgs, dirs)
    assert all(isinstance(o, DataError) and str(o).startswith("the dataset changed") for o in outcomes), outcomes
    assert all((d / "checkpoint.pt").exists() for d in dirs)
    write_mnist(tmp_path / "data", seed=0)
    assert [o.resumed_after for o in run_seeds(cfgs, dirs)] == [2, 2]


def test_a_changed_amtrain_or_a_corrupt_checkpoint_starts_again(tmp_path, make_cfg, monkeypatch):
    cfg, folder = _stopped(tmp_path, make_cfg, monkeypatch)
    monkeypatch.setattr(checkpoint, "code_fingerprint", lambda: "another")
    run(cfg, folder)
    _started_again(folder, "amtrain's code or torch's version changed since it was written")
    monkeypatch.undo()
    cfg, folder = _stopped(tmp_path / "b", make_cfg, monkeypatch)
    blob = (folder / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(blob[: len(blob) // 2])
    reference = run(cfg, tmp_path / "reference")
    run(cfg, folder)
    _started_again(folder, "it cannot be read")
    assert table(folder).drop(columns=["run_id"]).equals(table(reference.out_dir).drop(columns=["run_id"]))


def test_the_code_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path):
    """A requeued job goes on after a comment or docstring was edited, not after any other edit."""
    src = tmp_path / "pkg"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "__init__.py").write_text("")
    module = src / "sub" / "step.py"
    module.write_text('"""Step."""\n\ndef step(x):\n    """Doc."""\n    return x * 0.5  # halve\n')
    before = provenance.source_fingerprint(src)
    same = ['"""Step, edited."""\n\n\ndef step(x):\n    """Another doc."""\n    # a new comment\n'
            '    return (x *\n            0.5)\n',
            'def step(x):\n    return x * 0.5\n']
    for text in same:
        module.write_text(text)
        assert provenance.source_fingerprint(src) == before, text
    for text in ['def step(x):\n    return x * 0.25\n', 'def step(y):\n    return y * 0.5\n',
                 'def step(x):\n    """Doc."""\n    "not a docstring"\n    return x * 0.5\n']:
        module.write_text(text)
        assert provenance.source_fingerprint(src) != before, text
    module.write_text('def step(x):\n    return x * 0.5\n')
    module.rename(src / "sub" / "renamed.py")
    assert provenance.source_fingerprint(src) != before
    assert provenance.code_fingerprint() == provenance.source_fingerprint(Path(checkpoint.__file__).parent)


def test_the_summary_says_how_many_times_a_requeued_job_went_on(tmp_path):
    from amtrain.sweep import _resumed_line

    log = tmp_path / "train.log"
    log.write_text("[10:00:00] run: ...\n")
    for n, epoch in ((1, 3), (2, 7), (3, 12)):
        log.write_text(log.read_text() + f"[10:0{n}:00] resuming {tmp_path} from its checkpoint after epoch {epoch} "
                                          "(step 9); what the stopped attempt wrote after it went to ...\n")
        more = "" if n == 1 else f" (the last of {n} times; train.log has each)"
        assert _resumed_line(tmp_path, epoch) == f"went on from its checkpoint after epoch {epoch}{more}"
    assert _resumed_line(tmp_path / "gone", 5) == "went on from its checkpoint after epoch 5"


def test_resume_false_starts_again_and_keeps_the_checkpoint_aside(tmp_path, make_cfg, monkeypatch):
    cfg, folder = _stopped(tmp_path, make_cfg, monkeypatch)
    cfg.resume = False
    assert run(cfg, folder).resumed_after is None
    assert "from its checkpoint after epoch" not in (folder / "train.log").read_text()
    assert (next((folder / ".superseded").iterdir()) / "checkpoint.pt").exists()


def test_another_seed_in_the_same_folder_starts_again(tmp_path, make_cfg, monkeypatch):
    cfg, folder = _stopped(tmp_path, make_cfg, monkeypatch)
    cfg.seed = 7
    run(cfg, folder)
    _started_again(folder, "it belongs to another run than the folder's config.yaml")


def test_no_checkpoint_when_off_or_not_yet_due_and_none_left_after_done(tmp_path, make_cfg):
    off = run(make_cfg("epochs=3", "checkpoint.every_minutes=null"), tmp_path / "off")
    assert "checkpoint after" not in (off.out_dir / "train.log").read_text()
    default = run(make_cfg("epochs=3"), tmp_path / "default")  # 10 minutes: a tiny run never gets there
    assert "checkpoint after" not in (default.out_dir / "train.log").read_text()
    every = run(make_cfg("epochs=3", "checkpoint.every_minutes=0"), tmp_path / "every")
    log = (every.out_dir / "train.log").read_text()
    assert log.count("checkpoint after epoch") == 2  # after epochs 1 and 2; none after the last
    assert not (every.out_dir / "checkpoint.pt").exists()  # DONE removed it


def test_state_on_disk_is_not_checkpointed_and_the_run_goes_on(tmp_path, make_cfg):
    cfg = make_cfg("optim=admm", *FULL_BATCH, "epochs=3", "checkpoint.every_minutes=0",
                   "optim.state_memory_gb=0.000001", f"optim.state_dir={tmp_path}")
    result = run(cfg, tmp_path / "run")
    log = (result.out_dir / "train.log").read_text()
    assert log.count("no more checkpoints for this run (it goes on): the per-sample state is in memory-mapped") == 1
    assert not (result.out_dir / "checkpoint.pt").exists() and not (result.out_dir / "checkpoint.pt.tmp").exists()


def test_a_group_checkpoint_is_copied_where_its_folders_cannot_share_a_file(tmp_path, monkeypatch):
    """Seed folders on two file systems cannot hold one file under two names: each gets a copy."""
    import errno

    first, other = tmp_path / "a", tmp_path / "b"
    for d in (first, other):
        d.mkdir()
    (first / "checkpoint.pt").write_bytes(b"state")

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(checkpoint.os, "link", cross_device)
    checkpoint._link_atomic(first / "checkpoint.pt", other / "checkpoint.pt")
    assert (other / "checkpoint.pt").read_bytes() == b"state"
    assert not (other / "checkpoint.pt").samefile(first / "checkpoint.pt")
    assert sorted(p.name for p in other.iterdir()) == ["checkpoint.pt"]


def test_a_checkpoint_written_by_a_killed_save_is_never_half_there(tmp_path, make_cfg, monkeypatch):
    """A save that dies mid-write leaves the previous checkpoint whole (a temporary file, then a rename)."""
    cfg = make_cfg(*EVERY_EPOCH, "optim=sgd")
    original, calls = checkpoint._write_atomic, {"n": 0}

    def write(path, writer):
        calls["n"] += 1
        if calls["n"] == 2:  # the save after epoch 2 dies half-way through its temporary file
            original(path.with_name("whole"), writer)
            blob = path.with_name("whole").read_bytes()
            path.with_name(path.name + ".tmp").write_bytes(blob[: len(blob) // 2])
            raise Interrupted("SIGTERM")
        original(path, writer)

    monkeypatch.setattr(checkpoint, "_write_atomic", write)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path / "run")
    monkeypatch.undo()
    reference = run(cfg, tmp_path / "reference")
    assert run(cfg, tmp_path / "run").resumed_after == 1
    assert table(tmp_path / "run").drop(columns=["run_id"]).equals(table(reference.out_dir).drop(columns=["run_id"]))


def test_a_method_that_draws_from_the_global_generators_goes_on_identically(tmp_path, make_cfg, monkeypatch):
    """No method here draws from torch's, NumPy's or Python's global generators while training
    (data order has its own); one that did (dropout, noisy steps) would get them back as they were."""
    import random

    import numpy as np

    from amtrain.optim.backprop import Backprop

    original = Backprop.step

    def noisy(self, x, y):
        out = original(self, x, y)
        with torch.no_grad():
            for p in self.net.parameters():
                p.add_(torch.randn_like(p), alpha=1e-3 * float(np.random.rand()) * random.random())
        return out

    monkeypatch.setattr(Backprop, "step", noisy)
    cfg = make_cfg(*EVERY_EPOCH, "optim=sgd")
    reference = run(cfg, tmp_path / "reference")
    undo = stop_in_epoch(monkeypatch, 3)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path / "run")
    undo()
    torch.manual_seed(12345), np.random.seed(12345), random.seed(12345)  # whatever they are now
    assert run(cfg, tmp_path / "run").resumed_after == 2
    assert_went_on(tmp_path / "run", reference.out_dir)


def test_a_single_run_stopped_by_sigterm_names_the_command_that_goes_on(tmp_path):
    """A single run gets a new folder each time unless hydra.run.dir names one: on SIGTERM the
    CLI prints the command with its folder, and that command goes on from the checkpoint."""
    args = ["dataset=synthetic", "dataset.n_train=3000", "dataset.n_test=300", "device=cpu", "progress=false",
            "eval.first_epoch_batches=0", "batch_size=50", "threads=1", "optim=sgd", "epochs=150",
            "checkpoint.every_minutes=0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(amtrain_cmd() + args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("runs/*/*/checkpoint.pt")):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 143, err
    (folder,) = tmp_path.glob("runs/*/*")
    hint = next(line for line in err.splitlines() if "has a checkpoint" in line)
    command = hint.split("`")[1].split()
    assert command[0] == "amtrain" and command[-1] == f"hydra.run.dir={folder.relative_to(tmp_path)}"
    r = subprocess.run(amtrain_cmd() + command[1:], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{folder.relative_to(tmp_path)} went on from its checkpoint after epoch" in r.stderr
    assert (folder / "DONE").exists() and len(list(tmp_path.glob("runs/*/*"))) == 1


def test_a_sweep_killed_by_sigkill_goes_on_from_its_seed_groups_checkpoints(tmp_path):
    """`amtrain -m ... seed=0,1,2` trains the three seeds in one process; kill -9 once they have
    checkpoints (no FAILED, perhaps half a CSV line); the same command again goes on from them
    and matches an unstopped sweep."""
    args = ["-m", "dataset=synthetic", "dataset.n_train=3000", "dataset.n_test=300", "device=cpu",
            "progress=false", "eval.first_epoch_batches=0", "batch_size=50", "threads=1", "optim=am_adam",
            "epochs=25", "seed=0,1,2", "checkpoint.every_minutes=0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stopped = [*args, f"hydra.sweep.dir={tmp_path / 'stopped'}"]
    p = subprocess.Popen(amtrain_cmd() + stopped, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "stopped").glob("*/checkpoint.pt"))) < 3:
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=60) == -signal.SIGKILL
    folders = sorted(d for d in (tmp_path / "stopped").iterdir() if d.is_dir() and not d.name.startswith("."))
    assert len(folders) == 3 and not any((d / "DONE").exists() for d in folders)
    r = subprocess.run(amtrain_cmd() + stopped, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "3 jobs: 3 finished" in r.stdout and r.stdout.count("went on from its checkpoint after epoch") == 3
    clean = subprocess.run(amtrain_cmd() + args + [f"hydra.sweep.dir={tmp_path / 'clean'}"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    for d in folders:
        assert table(d).drop(columns=["run_id"]).equals(table(tmp_path / "clean" / d.name).drop(columns=["run_id"]))
        assert "(on a seed axis with seeds [0, 1, 2])" in (d / "train.log").read_text()
