"""Sweeps: stable job directories, resume, failures recorded, joblib and submitit_local launchers."""
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
    r = amtrain(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 jobs: 1 finished, 3 skipped (finished before)" in r.stdout
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
    assert launcher.max_num_timeout == 0 and launcher.timeout_min > 0
