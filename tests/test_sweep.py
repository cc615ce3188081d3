"""Sweeps: stable job directories, resume, failures recorded, joblib and submitit_local launchers."""
import re

import pandas as pd
import pytest

from conftest import TINY
from test_cli import amtrain

SWEEP = [o for o in TINY if not o.startswith(("device", "progress"))] + ["device=cpu", "progress=false"]


def job_dirs(root):
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_stable_job_dirs_and_resume_runs_only_unfinished_jobs(tmp_path):
    args = ["-m", *SWEEP, "optim=sgd,adam", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sw'}"]
    r = amtrain(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = job_dirs(tmp_path / "sw")
    assert len(jobs) == 4 and all((j / "DONE").exists() for j in jobs)
    assert {j.name.split("optim=")[1] for j in jobs} == {"adam,seed=0", "adam,seed=1", "sgd,seed=0", "sgd,seed=1"}
    # a job killed mid-run: no DONE, no metrics.csv, only the partial file
    killed = jobs[1]
    (killed / "DONE").unlink()
    (killed / "metrics.csv").rename(killed / "metrics.partial.csv")
    stamps = {j: (j / "DONE").stat().st_mtime_ns for j in jobs if j != killed}
    older = jobs[0] / "config.yaml"  # a job that ran on other code (a sweep resumed after a git pull)
    head, second, rest = older.read_text().split("\n", 2)
    assert second.startswith("# code ")
    older.write_text(f"{head}\n# code 0123456789abcdef git 0000000 torch 2.0\n{rest}")
    r = amtrain(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 jobs: 1 finished, 3 skipped (finished before)" in r.stdout
    assert f"{jobs[0].name}: finished already (DONE), on other amtrain code (01234567, git 0000000; this is " in r.stdout
    assert r.stdout.count("on other amtrain code") == 1
    assert (killed / "DONE").exists() and (killed / "metrics.csv").exists()
    assert all((j / "DONE").stat().st_mtime_ns == t for j, t in stamps.items())  # not rerun
    # resume=false reruns everything
    r = amtrain(*args, "resume=false", cwd=tmp_path)
    assert r.returncode == 0 and "4 jobs: 4 finished" in r.stdout
    # the old outputs, moved aside: the killed job's partial attempt, then each finished run
    assert {j: len(list((j / ".superseded").iterdir())) for j in jobs} == {j: 2 if j == killed else 1 for j in jobs}


def test_a_diverging_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    r = amtrain("-m", *SWEEP, "optim=sgd", "optim.lr=1e12,0.1", f"hydra.sweep.dir={tmp_path / 'sw'}", cwd=tmp_path)
    jobs = {float(j.name.split("optim.lr=")[1].split(",")[0]): j for j in job_dirs(tmp_path / "sw")}
    assert (jobs[1e12] / "FAILED").read_text().startswith("training diverged")
    assert not (jobs[1e12] / "metrics.csv").exists()
    assert (jobs[0.1] / "DONE").exists()  # the job after the failure ran
    assert r.returncode != 0  # Hydra reports the failure when the sweep ends


def test_folder_state_says_what_a_job_would_do_with_its_folder_and_writes_nothing(tmp_path):
    """What scripts/reproduce.py looks at before it runs anything (amtrain.sweep.folder_state)."""
    import fcntl
    import os

    from amtrain import sweep
    from amtrain.cli import compose_checked

    args = [*SWEEP, "optim=sgd", f"hydra.sweep.dir={tmp_path / 'sw'}"]
    r = amtrain("-m", *args, "seed=0,1,2,3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = {job.seed: job for job in sweep.plan([*args, "seed=0,1,2,3,4"], compose_checked).jobs}
    changed = jobs[1].dir / "config.yaml"
    changed.write_text(changed.read_text().replace("lr: 0.4", "lr: 0.2"))
    (jobs[2].dir / "DONE").unlink()
    (jobs[2].dir / "checkpoint.pt").write_bytes(b"")
    fd = os.open(jobs[3].dir / ".lock", os.O_RDWR)  # another process holds job 3's folder
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"pid 7 on elsewhere\n", 0)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "sw").rglob("*")}
    try:
        assert {s: sweep.folder_state(j) for s, j in jobs.items()} == {
            0: ("finished", ""), 1: ("different", "optim.lr: 0.2 there, 0.4 now"), 2: ("checkpoint", ""),
            3: ("elsewhere", "pid 7 on elsewhere"), 4: ("to run", "")}
    finally:
        os.close(fd)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "sw").rglob("*")} == before  # nothing written
    assert sweep.folder_state(jobs[3]) == ("finished", "")  # let go
    # `amtrain -m ... --cfg job` lists them (Hydra itself has no --cfg for a sweep)
    r = amtrain("-m", *args, "seed=0,1,2,3,4", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "sweep sw: 5 jobs in 1 seed group: 2 finished, 1 different, 1 checkpoint, 1 to run"
    assert [line.split()[0] for line in lines[1:6]] == ["finished", "different", "checkpoint", "finished", "to"]
    assert lines[2].endswith("seed=1 [seed group 1]: optim.lr: 0.2 there, 0.4 now")
    assert lines[6].startswith("(nothing was run") and not (tmp_path / "sw" / "optim=sgd,seed=4").exists()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "sw").rglob("*")} == before
    changed.write_text("{")
    assert sweep.folder_state(jobs[1]) == ("different", "its config.yaml cannot be read")
    again = sweep.plan([*args, "seed=0", "resume=false"], compose_checked).jobs[0]
    assert sweep.folder_state(again) == ("rerun", "")
    # a finished run that read other data than the dataset's files hold now (amtrain.provenance)
    metrics = jobs[0].dir / "metrics.csv"
    rows = pd.read_csv(metrics, dtype={"data": str})
    metrics.write_text(rows.assign(data="0123456789abcdef").to_csv(index=False))
    now = rows.data.iloc[0][:8]
    assert sweep.folder_state(jobs[0]) == ("finished", f"on other data (01234567 then, {now} now)")
    # a sweep that would run jobs beside it is refused before any runs: the new runs would read
    # these files and be averaged with the old one
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "sw").rglob("*")}
    r = amtrain("-m", *args, "seed=0,1,2,3,4", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.strip() == (
        f"amtrain: error: 1 finished job of this sweep read other data than the dataset's files hold now (the first, "
        f"sw/{jobs[0].dir.name}: 01234567 then, {now} now): the jobs still to run would read these files and be averaged "
        "with them; point AMTRAIN_DATA (or dataset.root) back at the files they read, or redo them with "
        "resume=false; `--cfg job` lists them"), r.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "sw").rglob("*")} == before
    assert not (tmp_path / "sw" / "optim=sgd,seed=4").exists()
    # nothing to run beside it (the finished jobs are only skipped), or every job redone: no refusal
    assert sweep.finished_on_other_data(sweep.plan([*args, "seed=0"], compose_checked)) is None
    assert sweep.finished_on_other_data(sweep.plan([*args, "seed=0,4", "resume=false"], compose_checked)) is None


@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"]])
def test_launchers_produce_the_same_job_dirs(tmp_path, launcher):
    r = amtrain("-m", *launcher, *SWEEP, "optim=sgd,am_adam", "seed=0", f"hydra.sweep.dir={tmp_path / 'sw'}",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    jobs = job_dirs(tmp_path / "sw")
    assert len(jobs) == 2 and all((j / "DONE").exists() and (j / "metrics.csv").exists() for j in jobs)
    if "submitit" in launcher[0]:
        assert (tmp_path / "sw" / ".submitit").exists()  # the same code path as SLURM


@pytest.mark.parametrize("local, partition, gpus", [("example", "debug", None), ("example_gpu", "gpu", 1)])
def test_the_example_cluster_configs_compose_with_the_slurm_launcher(local, partition, gpus):
    from amtrain.cli import compose_checked

    cfg = compose_checked([f"+local={local}", "hydra/launcher=submitit_slurm", "optim=sgd"])
    launcher = cfg.hydra.launcher
    assert launcher.partition == partition and launcher.get("gpus_per_node") == gpus
    assert launcher.max_num_timeout == 3 and launcher.timeout_min > 0  # requeued at the limit, going on from a checkpoint


# ----------------------------------------------------------------------------- a job stopped by its launcher
def _report_of(sweep_dir, job_dir):
    import json

    from amtrain import sweep

    return json.loads(sweep._report_path(sweep_dir, "t1", job_dir).read_text())


def _stop():
    from submitit.core.utils import UncompletedJobError

    return UncompletedJobError("Job not requeued because: timed-out too many times.")


def test_a_job_stopped_while_it_starts_is_reported_with_the_reason(tmp_path, monkeypatch):
    """SLURM's warning signal can land while the job still imports torch (seconds on a loaded
    node): the report says so, and does not point to a FAILED this attempt never wrote
    (CI met it once: the summary then gave no reason)."""
    from amtrain import sweep
    from amtrain.cli import _train, compose

    monkeypatch.setenv(sweep.TOKEN_ENV, "t1")
    job = tmp_path / "sw" / "seed=0"

    def setup():
        raise _stop()

    sweep.run_job(_train, compose(SWEEP + ["optim=sgd"]), job, tmp_path / "sw", None, setup=setup)
    rep = _report_of(tmp_path / "sw", job)
    assert rep["status"] == "failed"
    assert rep["reason"] == ("stopped by SLURM before the end, before training started (Job not requeued because: "
                             "timed-out too many times.): the job needs more than hydra.launcher.timeout_min")
    assert not (job / "FAILED").exists() and not (job / "DONE").exists()


def test_a_job_composed_after_the_config_files_changed_is_refused_with_what_changed(tmp_path, monkeypatch):
    """A file under conf/ edited while a long sweep runs: the jobs Hydra starts afterwards compose
    the new values. Each job checks its config against the one the sweep planned for it, so the
    sweep does not end as a mix of two configurations."""
    from amtrain import sweep
    from amtrain.cli import _train, compose, compose_checked

    monkeypatch.setenv(sweep.TOKEN_ENV, "t1")
    args = [*SWEEP, "optim=sgd", "seed=0,1", "seeds_per_process=1", f"hydra.sweep.dir={tmp_path / 'sw'}"]
    planned = sweep.plan(args, compose_checked)
    sweep.write_groups(planned, "t1")
    first, second = planned.jobs
    ran = compose(first.overrides)
    assert sweep.changed_since_planned(planned.sweep_dir, first.dir, ran) is None
    sweep.run_job(_train, ran, first.dir, planned.sweep_dir, None)
    assert _report_of(planned.sweep_dir, first.dir)["status"] == "finished"
    edited = compose([*second.overrides, "optim.lr=0.2", "optim.schedule.gamma=0.9"])  # conf/optim/sgd.yaml edited
    sweep.run_job(_train, edited, second.dir, planned.sweep_dir, None)
    rep = _report_of(planned.sweep_dir, second.dir)
    assert rep == {**rep, "status": "failed", "reason": (
        "the config files changed after this sweep started (optim.lr: 0.4 then, 0.2 now, optim.schedule.gamma: 0.5 "
        "then, 0.9 now): put them back to finish the sweep as planned, or rerun it (resume=false redoes the jobs "
        "that finished before)")}
    assert not second.dir.exists()  # refused before its folder was made
    # a job outside amtrain -m's planning (no plan for its token) is not checked
    monkeypatch.setenv(sweep.TOKEN_ENV, "t2")
    assert sweep.changed_since_planned(planned.sweep_dir, second.dir, edited) is None


def test_a_groups_second_job_started_with_the_first_leaves_the_group_to_it(tmp_path, monkeypatch):
    """Two jobs of one seed group started at the same moment (a SLURM array, joblib workers) both
    lock the group's folders in one order. The one that finds the first folder held by the other
    leaves the rest to it: before, it could lock its own folder first, and each trained alone
    (CI met it: equal only to float32 rounding, and the seed axis's saving lost)."""
    from amtrain import sweep
    from amtrain.cli import _train, compose, compose_checked
    from amtrain.rundir import RunDir

    monkeypatch.setenv(sweep.TOKEN_ENV, "t1")
    planned = sweep.plan([*SWEEP, "optim=sgd", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sw'}"], compose_checked)
    sweep.write_groups(planned, "t1")
    first, second = planned.jobs
    assert first.seed_group == second.seed_group
    with RunDir(first.dir), RunDir(second.dir):  # the first job has locked and claimed the group's folders
        sweep._claim(planned.sweep_dir, first.dir)
        sweep._claim(planned.sweep_dir, second.dir)
        sweep.run_job(_train, compose(second.overrides), second.dir, planned.sweep_dir, None)
        assert [p.name for p in second.dir.iterdir()] == [".lock"]  # left to the first job: nothing written
        assert not sweep._report_path(planned.sweep_dir, "t1", second.dir).exists()  # the first job reports it
    sweep.run_job(_train, compose(first.overrides), first.dir, planned.sweep_dir, None)  # the first job goes on
    for job in (first, second):
        assert "(on a seed axis with seeds [0, 1])" in (job.dir / "train.log").read_text()
        assert _report_of(planned.sweep_dir, job.dir)["status"] == "finished"


def test_a_claim_left_by_a_killed_process_does_not_hide_a_folder_held_elsewhere(tmp_path, monkeypatch):
    """A group's trainer claimed the first folder and was killed before it reported (an OOM
    kill); a second invocation of the same sweep now holds that folder. Its claim names a
    process that no longer holds the lock, so this invocation's jobs do not wait for it: the
    second seed trains, and the first is reported as running elsewhere (before: both were
    left to the dead process and listed as "no result")."""
    from amtrain import sweep
    from amtrain.cli import _train, compose, compose_checked
    from amtrain.rundir import RunDir

    monkeypatch.setenv(sweep.TOKEN_ENV, "t1")
    planned = sweep.plan([*SWEEP, "optim=sgd", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sw'}"], compose_checked)
    sweep.write_groups(planned, "t1")
    first, second = planned.jobs
    assert first.seed_group == second.seed_group
    claim = sweep._claim_path(planned.sweep_dir, first.dir)
    claim.parent.mkdir(parents=True)
    claim.write_text("pid 4194304 on a-node-that-was")  # the killed trainer's
    with RunDir(first.dir):  # the other invocation's run (this process, another lock)
        assert not sweep._claimed(planned.sweep_dir, first.dir)
        sweep.run_job(_train, compose(second.overrides), second.dir, planned.sweep_dir, None)
        sweep.run_job(_train, compose(first.overrides), first.dir, planned.sweep_dir, None)
    assert (second.dir / "DONE").exists() and not (first.dir / "DONE").exists()
    assert _report_of(planned.sweep_dir, second.dir)["status"] == "finished"
    rep = _report_of(planned.sweep_dir, first.dir)
    assert rep["status"] == "elsewhere" and f"running elsewhere: {first.dir} (pid " in rep["reason"]
    text, code = sweep.summary(planned, "t1")
    assert text.splitlines()[0].endswith("2 jobs: 1 finished, 1 running elsewhere") and code == 0


def test_a_live_claim_is_its_trainers_until_it_reports(tmp_path, monkeypatch):
    """The claim stands while its process holds the folder, and after it has reported it."""
    from amtrain import sweep
    from amtrain.rundir import RunDir

    monkeypatch.setenv(sweep.TOKEN_ENV, "t1")
    job = tmp_path / "sw" / "seed=0"
    assert not sweep._claimed(tmp_path / "sw", job, wait_s=0)  # no claim
    with RunDir(job):
        sweep._claim(tmp_path / "sw", job)
        assert sweep._claimed(tmp_path / "sw", job, wait_s=0)  # its lock and its claim: this process's
        sweep.report(tmp_path / "sw", job, "finished")
    assert sweep._claimed(tmp_path / "sw", job, wait_s=0)  # let go of after its report
    assert not list((tmp_path / "sw").rglob("*.tmp*"))


def test_an_earlier_attempts_failed_is_not_this_jobs_reason(tmp_path, monkeypatch):
    from amtrain import sweep

    monkeypatch.setenv(sweep.TOKEN_ENV, "t1")
    job = tmp_path / "sw" / "seed=0"
    job.mkdir(parents=True)
    (job / "FAILED").write_text("training diverged at epoch 3\n\nrun_id=old\n")  # the last attempt's

    def run(cfg, out_dir, extra):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    sweep.run_job(run, None, job, tmp_path / "sw", None)
    rep = _report_of(tmp_path / "sw", job)
    assert rep == {**rep, "status": "failed", "reason": "RuntimeError: CUDA error: an illegal memory access was "
                                                        "encountered"}


def test_a_job_stopped_while_it_trains_is_reported_with_where_it_stopped(tmp_path, monkeypatch):
    import amtrain.train
    from amtrain import sweep
    from amtrain.cli import _train, compose

    monkeypatch.setenv(sweep.TOKEN_ENV, "t1")
    job = tmp_path / "sw" / "seed=0"
    job.mkdir(parents=True)
    (job / "FAILED").write_text("an earlier attempt's reason\n")  # moved aside when the run begins
    real, calls = amtrain.train.evaluate, []

    def evaluate(*args, **kwargs):  # the signal, at the third evaluation
        calls.append(1)
        if len(calls) == 3:
            raise _stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(amtrain.train, "evaluate", evaluate)
    sweep.run_job(_train, compose(SWEEP + ["optim=sgd"]), job, tmp_path / "sw", None)
    rep = _report_of(tmp_path / "sw", job)
    failed = (job / "FAILED").read_text()
    assert re.match(r"stopped by SLURM before the end, at epoch 1, step \d+ \(Job not requeued", failed)
    assert "UncompletedJobError" in failed  # the traceback, below the reason
    assert rep["status"] == "failed" and rep["reason"] == f"{failed.splitlines()[0]} (traceback in {job / 'FAILED'})"
    assert len(list((job / ".superseded").iterdir())) == 1


def test_a_stop_inside_an_omegaconf_read_still_gives_a_one_line_reason():
    """OmegaConf re-raises an exception raised while it reads a key (SLURM's warning signal,
    in the training loop) with the key and types appended on more lines; the reason keeps the
    first, so the summary line still ends with the fix (CI met it: the line was cut there)."""
    import signal

    from amtrain.cli import compose
    from amtrain.errors import failure_line

    ev = compose(SWEEP + ["optim=sgd"]).eval

    def warn(*_):
        raise _stop()

    old = signal.signal(signal.SIGALRM, warn)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Exception) as caught:
            while True:
                ev.every_batches  # noqa: B018 (the read the signal lands in)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    expected = ("stopped by SLURM before the end, at epoch 1, step 2 (Job not requeued because: timed-out too many "
                "times.): the job needs more than hydra.launcher.timeout_min")
    assert failure_line(caught.value, {"epoch": 1, "step": 2}) == expected
    # as CI's job saw it
    seen = type(caught.value)("Job not requeued because: timed-out too many times.\n    full_key: eval.every_batches\n"
                              "    reference_type=EvalConfig\n    object_type=EvalConfig")
    assert failure_line(seen, {"epoch": 1, "step": 2}) == expected
