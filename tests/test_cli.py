"""The installed `amtrain` command, run as a user would (subprocess, other working directory)."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from amtrain.cli import command as amtrain_cmd
from conftest import TINY

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def amtrain(*args, cwd, module=False, data_root=None):
    cmd = [sys.executable, "-m", "amtrain"] if module else amtrain_cmd()
    env = {**ENV, "AMTRAIN_DATA": str(data_root)} if data_root else ENV
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# full batch: one iteration per epoch. dlADMM's default rho (1e-6) weighs sums over 55,000
# samples in the authors' runs; on 600 it barely moves W, so the test starts it at 0.01.
FULL_BATCH_EPOCHS = {"am_adam_off": ["epochs=6"], "am_mem_off": ["epochs=6"], "admm": ["epochs=6"],
                     "mdlam": ["epochs=12"], "dladmm": ["epochs=12", "optim.rho=0.01"], "bcd": ["epochs=12"]}


@pytest.mark.parametrize("optim", ["am_adam", "am_mem", "sgd", "adam", "am_adam_off", "am_mem_off", "admm",
                                   "mdlam", "dladmm", "bcd"])
def test_cli_trains_each_method(tmp_path, optim):
    out = tmp_path / "run"
    extra = FULL_BATCH_EPOCHS.get(optim, ["epochs=2"])
    r = amtrain(*TINY, f"optim={optim}", *extra, f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "DONE").exists() and (out / "config.yaml").exists() and (out / "train.log").exists()
    df = pd.read_csv(out / "metrics.csv")
    final = df[(df.split == "test") & (df.metric == "acc")].value.iloc[-1]
    assert final > 0.6, f"{optim}: test acc {final}"


def test_python_dash_m_and_default_run_dir(tmp_path):
    r = amtrain(*TINY, "optim=sgd", cwd=tmp_path, module=True)
    assert r.returncode == 0, r.stderr
    dones = list((tmp_path / "runs").rglob("DONE"))
    assert len(dones) == 1 and "synthetic_mlp_2x100_sgd_s0" in str(dones[0].parent)


def test_help_lists_public_groups_and_every_key_with_its_help(tmp_path):
    r = amtrain("--help", cwd=tmp_path)
    assert r.returncode == 0 and not r.stderr
    conf = Path(__file__).resolve().parents[1] / "conf"
    chosen = {"dataset": "mnist", "model": "mlp_2x100", "optim": "am_adam", "mu": "constant", "mode": "release"}
    for group, default in chosen.items():  # every option on disk is offered, the default marked
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        line = f"{group:<11} " + " ".join("*" + o if o == default else o for o in options)
        assert line in r.stdout
    assert "bcd dladmm mdlam" in r.stdout and "fashion_mnist" in r.stdout
    groups = r.stdout.split("Groups")[1].split("Keys for")[0]
    assert "\n  tuned" not in groups and "\n  mode_defaults" not in groups and "\n  local" not in groups
    keys = r.stdout.split("Keys for")[1].split("Examples:")[0].splitlines()[1:]
    keys = [k for k in keys if k.strip()]
    assert len(keys) > 40 and all(len(k.split(None, 1)) == 2 for k in keys)  # every key has a help text
    # the values shown are the ones that apply: AM-Adam's tuned step on mlp_2x100 in release mode
    lr = next(k for k in keys if k.strip().startswith("optim.lr="))
    assert "optim.lr=0.004" in lr and "conf/tuned/am_adam_mlp_2x100_release.yaml; otherwise 0.008" in lr
    r = amtrain("--help", "optim=sgd", "mode=paper", cwd=tmp_path)
    assert "optim.lr=0.1 " in r.stdout and "*sgd" in r.stdout and "*paper" in r.stdout
    assert "schema" not in r.stdout


def test_cfg_job_prints_composed_config(tmp_path):
    r = amtrain("--cfg", "job", "optim=am_mem", "mode=paper", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "name: am_mem" in r.stdout and "mode: paper" in r.stdout and "bcd_sweeps: 1" in r.stdout


@pytest.mark.parametrize("args, expected", [
    (["optim=foo"], "unknown optim 'foo'; choose one of: adam, admm, am_adam, am_adam_off, am_mem, am_mem_off, bcd, "
                    "dladmm, mdlam, sgd"),
    (["seed=abc"], "bad value for 'seed'"),
    (["epochs=1.5"], "bad value for 'epochs'"),
    (["mode=fast"], "unknown mode 'fast'"),
    (["optim.learning_rate=0.1"], "unknown config key 'optim.learning_rate'"),
    (["device=tpu"], "bad value for 'device'"),
])
def test_bad_config_is_one_line_and_nonzero(tmp_path, args, expected):
    r = amtrain(*args, cwd=tmp_path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amtrain: error:"), r.stderr
    assert expected in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_missing_data_files_is_one_line(tmp_path):
    out = tmp_path / "run"
    r = amtrain("dataset=mnist", f"dataset.root={tmp_path / 'nowhere'}", "dataset.download=false",
                f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and "train-images-idx3-ubyte" in errors[0] and "AMTRAIN_DATA" in errors[0]
    assert (out / "FAILED").exists() and not (out / "DONE").exists()


def test_corrupt_data_file_is_one_line(tmp_path, mnist_root):
    raw = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:1000])
    r = amtrain("dataset=mnist", "dataset.download=false", "device=cpu", f"hydra.run.dir={tmp_path / 'r'}",
                cwd=tmp_path, data_root=mnist_root)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("amtrain: error:")
    assert "truncated or corrupt" in r.stderr


def test_data_root_from_environment(tmp_path, mnist_root):
    out = tmp_path / "r"
    r = amtrain("dataset=mnist", "dataset.download=false", "optim=adam", "device=cpu", "progress=false",
                "batch_size=20", f"hydra.run.dir={out}", cwd=tmp_path, data_root=mnist_root)
    assert r.returncode == 0, r.stderr
    assert f"root: {mnist_root}" in (out / "config.yaml").read_text()


def test_diverging_run_exits_nonzero_and_keeps_partial_output(tmp_path):
    out = tmp_path / "r"
    r = amtrain(*TINY, "optim=sgd", "optim.lr=1e12", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 3
    assert "amtrain: error: training diverged" in r.stderr
    assert (out / "metrics.partial.csv").exists() and not (out / "metrics.csv").exists()
