"""Sweeps on a real single-node SLURM cluster, through the real CLI and hydra/launcher=submitit_slurm.

The module brings up a throw-away cluster (scripts/slurm/cluster.py: munge, slurmctld and
slurmd, with their state in a temporary folder and on free ports) and stops exactly those
daemons at the end. Without Debian's slurm-wlm and munge (.ci/run installs them) every test
here is skipped, with the reason.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from amtrain.cli import command as amtrain_cmd
from conftest import REPO

_spec = importlib.util.spec_from_file_location("cluster", REPO / "scripts" / "slurm" / "cluster.py")
cluster_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster_mod)

MISSING = cluster_mod.missing_binaries()
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"SLURM is not installed (no {', '.join(MISSING)}): "
                                             "apt-get install -y slurm-wlm munge (.ci/run does it)"),
]

TINY = ["dataset=synthetic", "dataset.n_train=600", "dataset.n_test=300", "device=cpu", "progress=false",
        "eval.first_epoch_batches=3", "batch_size=50", "threads=1"]
# Jobs that are still running when a test cancels or requeues them: submitit ignores the SIGTERM
# and SLURM kills KillWait = 5 s later, so a job must have well over 5 s left then. 40 epochs took
# 2.5 s on an idle machine (the job could finish inside the 5 s); 300 take about 20 s.
LONG = ["dataset=synthetic", "dataset.n_train=6000", "dataset.n_test=300", "device=cpu", "progress=false",
        "eval.first_epoch_batches=0", "batch_size=50", "threads=1", "epochs=300"]
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.timeout_min=10"]
AGGREGATE = REPO / "scripts" / "aggregate.py"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    env = cluster_mod.start(folder)
    env["PYTHONUNBUFFERED"] = "1"
    yield env
    cluster_mod.stop(folder)
    for name in cluster_mod.DAEMONS:  # stopped, by the PIDs it wrote
        pid = cluster_mod._pid(folder / f"{name}.pid")
        assert pid is None or not Path(f"/proc/{pid}").exists(), name


def amtrain(*args, cwd, env, timeout=300):
    return subprocess.run(amtrain_cmd() + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def start(args, cwd, env):
    return subprocess.Popen(amtrain_cmd() + list(args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def squeue(env, *fmt_args):
    out = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i %T"], env=env, capture_output=True,
                         text=True).stdout
    return dict(line.split()[:2] for line in out.splitlines() if line.strip())


def wait_for_rows(folder: Path, pattern: str, rows: int, timeout: float = 120) -> Path:
    """The job folder matching pattern once its partial CSV has `rows` lines (the job is running)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for partial in folder.glob(f"*{pattern}*/metrics.partial.csv"):
            if partial.read_text().count("\n") >= rows:
                return partial.parent
        time.sleep(0.3)
    raise AssertionError(f"no job matching {pattern} started in {folder}")


def task_of(env, sweep_dir: Path, index: int) -> str:
    """The SLURM id (<array>_<index>) of the sweep's job number `index`."""
    arrays = {p.name.split("_")[0] for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)}
    assert len(arrays) == 1, arrays  # one sweep, one job array
    return f"{arrays.pop()}_{index}"


def jobs(sweep_dir: Path):
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def tables(tmp_path, *sweeps):
    out = []
    for sweep in sweeps:
        csv = tmp_path / f"{sweep.name}.csv"
        r = subprocess.run([sys.executable, str(AGGREGATE), str(sweep), "-o", str(csv)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out.append(pd.read_csv(csv).drop(columns=["variant", "settings", "wall_time"]))
    return out


def metrics(job: Path) -> pd.DataFrame:
    return pd.read_csv(job / "metrics.csv").drop(columns=["wall_time", "run_id"])


def test_a_sweep_runs_as_one_job_array_and_aggregates_as_the_basic_launcher(slurm, tmp_path):
    args = ["-m", *TINY, "optim=sgd,am_adam", "seed=0,1"]
    r = amtrain(*args, *SLURM, "name=array", cwd=tmp_path, env=slurm)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # sacct's refusals and submitit's warnings stay off stderr
    assert r.stdout.count("sacct is unavailable") == 1  # said once, not once per poll
    assert "4 jobs: 4 finished" in r.stdout
    sweep = tmp_path / "multirun" / "array"
    assert len(jobs(sweep)) == 4 and all((j / "DONE").exists() for j in jobs(sweep))
    task_dirs = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
    assert len({t.split("_")[0] for t in task_dirs}) == 1 and len(task_dirs) == 4  # one array of 4 tasks
    assert amtrain(*args, "name=basic", cwd=tmp_path, env=slurm).returncode == 0
    # each configuration's two seeds trained together on a seed axis, under either launcher: two
    # array tasks of one group that start at the same moment do not each train alone (CI met it
    # once, before the group's second job learnt to leave the group to the first)
    for job in jobs(sweep) + jobs(tmp_path / "multirun" / "basic"):
        assert "(on a seed axis with seeds [0, 1])" in (job / "train.log").read_text(), job
    a, b = tables(tmp_path, sweep, tmp_path / "multirun" / "basic")
    pd.testing.assert_frame_equal(a, b)


def test_scancel_mid_sweep_then_the_same_command_reruns_only_that_job_exactly(slurm, tmp_path):
    args = ["-m", *LONG, "optim=sgd,adam", "seed=0", *SLURM, "name=cancel"]
    sweep = tmp_path / "multirun" / "cancel"
    p = start(args, tmp_path, slurm)
    wait_for_rows(sweep, "optim=adam", 6)
    wait_for_rows(sweep, "optim=sgd", 6)
    adam = task_of(slurm, sweep, 1)  # jobs in grid order: optim=sgd, optim=adam
    subprocess.run(["scancel", adam], env=slurm, check=True)
    out, err = p.communicate(timeout=240)
    assert p.returncode != 0 and "Traceback" not in out + err
    assert "2 jobs: 1 finished, 1 no result" in out and "cancelled (scancel)" in out
    assert len(err.strip().splitlines()) == 1 and err.startswith("amtrain: error: the scheduler ended a job")
    sgd_job, adam_job = (next(j for j in jobs(sweep) if k in j.name) for k in ("optim=sgd", "optim=adam"))
    stamp = (sgd_job / "DONE").stat().st_mtime_ns
    assert not (adam_job / "DONE").exists()
    r = amtrain(*args, cwd=tmp_path, env=slurm)
    assert r.returncode == 0, r.stderr
    assert "2 jobs: 1 finished, 1 skipped (finished before)" in r.stdout
    assert (sgd_job / "DONE").stat().st_mtime_ns == stamp  # not rerun
    assert len(list((adam_job / ".superseded").iterdir())) == 1  # the cancelled attempt, kept aside
    clean = amtrain("-m", *LONG, "optim=adam", "seed=0", "name=clean", cwd=tmp_path, env=slurm)
    assert clean.returncode == 0
    pd.testing.assert_frame_equal(metrics(adam_job), metrics(jobs(tmp_path / "multirun" / "clean")[0]))


def requeued(slurm, tmp_path, args, sweep: Path, rows: int):
    """Start the sweep ``args``, `scontrol requeue` its SGD task once its CSV has ``rows`` lines,
    and let the sweep end: (that job's folder, stdout, stderr), the sweep having exited 0."""
    p = start(args, tmp_path, slurm)
    job = wait_for_rows(sweep, "optim=sgd", rows)
    task = task_of(slurm, sweep, 0)
    subprocess.run(["scontrol", "requeue", task], env=slurm, check=True)
    # SLURM holds a requeued batch job for two minutes before it is eligible again: release it now
    deadline = time.time() + 30
    while squeue(slurm).get(task) not in ("PENDING",) and time.time() < deadline:
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"jobid={task}", "StartTime=now"], env=slurm, check=True)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    return job, out, err


def test_a_requeued_task_goes_on_from_its_checkpoint_to_the_numbers_of_a_clean_run(slurm, tmp_path):
    """`scontrol requeue` of a running task, with a checkpoint after every epoch: the requeued job
    goes on from the last one its first attempt wrote before SLURM killed it, and ends with a
    clean run's numbers, no row twice, under one run id. (A job with no checkpoint yet starts
    again, as the scancel test above shows.)"""
    args = ["-m", *LONG, "optim=sgd,adam", "seed=0", "checkpoint.every_minutes=0", *SLURM, "name=requeue_ckpt"]
    sweep = tmp_path / "multirun" / "requeue_ckpt"
    job, out, err = requeued(slurm, tmp_path, args, sweep, rows=10)  # epoch 2 done: a checkpoint is there
    assert "2 jobs: 2 finished" in out and err == "", (out[-1500:], err[-1500:])
    assert "went on from its checkpoint after epoch" in out
    log = (job / "train.log").read_text()
    assert log.count("from its checkpoint after epoch") == 1, log
    assert [p.name.endswith("_after-checkpoint") for p in (job / ".superseded").iterdir()] == [True]
    clean = amtrain("-m", *LONG, "optim=sgd", "seed=0", "name=requeue_clean", cwd=tmp_path, env=slurm)
    assert clean.returncode == 0
    pd.testing.assert_frame_equal(metrics(job), metrics(jobs(tmp_path / "multirun" / "requeue_clean")[0]))
    df = pd.read_csv(job / "metrics.csv")
    assert df.run_id.nunique() == 1 and not df.duplicated(["step", "split", "metric"]).any()


def test_a_job_stopped_at_its_time_limit_is_recorded_as_failed_with_the_reason(slurm, tmp_path):
    # two minutes of wall time; submitit asks SLURM for its warning signal 60 s before the end: the
    # job has the first 60 s to start Python and install the handler (30 s was not always enough
    # with the rest of the suite running beside it: the signal's default action killed the job
    # unreported). 2,000 epochs cannot finish in two minutes.
    args = ["-m", "dataset=synthetic", "dataset.n_train=20000", "dataset.n_test=300", "device=cpu", "progress=false",
            "eval.first_epoch_batches=0", "batch_size=50", "threads=1", "epochs=2000", "optim=sgd",
            *SLURM, "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60", "name=limit"]
    r = amtrain(*args, cwd=tmp_path, env=slurm)
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr
    line = next((ln for ln in r.stdout.splitlines() if ln.strip().startswith("failed")), r.stdout)
    assert "stopped by SLURM before the end" in line and "hydra.launcher.timeout_min" in line, r.stdout
    job = jobs(tmp_path / "multirun" / "limit")[0]
    assert not (job / "DONE").exists()
    if "before training started" in line:  # the signal came while the job still started (a loaded machine)
        assert not (job / "FAILED").exists(), line
        return
    failed = (job / "FAILED").read_text()
    assert failed.startswith("stopped by SLURM before the end, at epoch ") and "traceback in" in line, (line, failed)
    if "at epoch 0, step 0 " not in failed:  # the rows written so far are kept
        assert (job / "metrics.partial.csv").exists()


@pytest.mark.slow
def test_a_job_requeued_at_its_time_limit_goes_on_from_its_checkpoint(slurm, tmp_path):
    """hydra.launcher.max_num_timeout > 0: at SLURM's warning before the limit, submitit requeues
    the job; each new attempt goes on from the last checkpoint, and the run ends with a clean run's
    numbers under one run id. Slow (4-10 minutes): two-minute limits, two or more attempts."""
    common = ["dataset=synthetic", "dataset.n_train=20000", "dataset.n_test=300", "device=cpu", "progress=false",
              "eval.first_epoch_batches=0", "batch_size=50", "threads=1", "epochs=350", "optim=sgd,adam"]
    args = ["-m", *common, "checkpoint.every_minutes=0", *SLURM, "hydra.launcher.timeout_min=2",
            "hydra.launcher.signal_delay_s=60", "hydra.launcher.max_num_timeout=5", "name=limit_requeue"]
    p = start(args, tmp_path, slurm)
    deadline = time.time() + 900
    while p.poll() is None and time.time() < deadline:  # release requeued tasks from SLURM's two-minute hold
        for task, state in squeue(slurm).items():
            if state == "PENDING" and "_" in task:
                subprocess.run(["scontrol", "update", f"jobid={task}", "StartTime=now"], env=slurm,
                               capture_output=True)
        time.sleep(2)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (out[-1500:], err[-1500:])
    assert "2 jobs: 2 finished" in out and "went on from its checkpoint after epoch" in out, out[-1500:]
    clean = amtrain("-m", *common, "name=limit_clean", cwd=tmp_path, env=slurm, timeout=900)
    assert clean.returncode == 0, clean.stderr
    for job, reference in zip(jobs(tmp_path / "multirun" / "limit_requeue"), jobs(tmp_path / "multirun" / "limit_clean")):
        log = (job / "train.log").read_text()
        times = log.count("from its checkpoint after epoch")
        assert log.count("requeued by the launcher") >= 1 and times >= 1
        if times > 1:  # the summary says how many times, not only the last
            assert f"{job.name}: went on from its checkpoint after epoch" in out and f"(the last of {times} times" in out
        pd.testing.assert_frame_equal(metrics(job), metrics(reference))
        assert pd.read_csv(job / "metrics.csv").run_id.nunique() == 1


@pytest.mark.parametrize("override, expected", [
    ("hydra.launcher.partition=nosuch", "invalid partition specified: nosuch): fix hydra.launcher.partition"),
    ("hydra.launcher.gpus_per_node=1", "fix hydra.launcher.gpus_per_node"),
])
def test_an_sbatch_option_the_cluster_refuses_is_one_line_at_submission(slurm, tmp_path, override, expected):
    r = amtrain("-m", *TINY, "optim=sgd", *SLURM, override, "name=refused", cwd=tmp_path, env=slurm)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amtrain: error: SLURM refused the jobs") and expected in lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    assert not list((tmp_path / "multirun" / "refused").glob("*/DONE"))


def test_the_example_cluster_config_runs_as_it_is_on_the_single_node_cluster(slurm, tmp_path):
    r = amtrain("-m", "+local=example", "hydra/launcher=submitit_slurm", *TINY, "optim=sgd", "name=example",
                cwd=tmp_path, env=slurm)
    assert r.returncode == 0, r.stderr
    assert "1 jobs: 1 finished" in r.stdout
    # TINY pins threads=1; without it a job takes cpus_per_task (2 in the example) torch threads
    assert "threads=1 " in next((tmp_path / "multirun" / "example").rglob("train.log")).read_text()


def test_the_cluster_script_says_a_bad_folder_or_cpu_count_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    for args, said in (([str(tmp_path / "file" / "c")], f"cannot create the cluster folder {tmp_path / 'file' / 'c'} "
                                                         "(Not a directory): choose another folder"),
                       ([str(tmp_path / "c"), "--cpus", "-1"], "argument --cpus: -1 is below 0 (0: all)")):
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "slurm" / "cluster.py"), "start", *args],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"cluster.py: error: {said}", r.stderr
    assert not (tmp_path / "c").exists()
