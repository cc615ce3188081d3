"""Paper figures: experiment configs, tuned values, and the smoke protocol end to end
(sweeps on tiny generated files, aggregation, every plot script, the report)."""
import csv
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from amtrain.cli import command as amtrain_cmd, compose
from conftest import REPO

PLAN = yaml.safe_load((REPO / "conf" / "reproduce.yaml").read_text())
FIGURES = list(PLAN["figures"])
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("fig*.yaml"))


def script(name):
    """scripts/<name>.py imported as a module."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sweep_params(name):
    return yaml.safe_load((REPO / "conf" / "experiment" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]


def test_every_figure_has_experiments_plot_script_and_claims_and_every_table_its_epochs():
    figures = [f for f in FIGURES if PLAN["figures"][f].get("kind") != "table"]
    assert [f"fig{i}" for i in range(1, 10)] == [f.split("_")[0] for f in figures]  # the paper's 8, then ours
    claims = yaml.safe_load((REPO / "scripts" / "paper_claims.yaml").read_text())
    experiments = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    for fig, spec in PLAN["figures"].items():
        if spec.get("kind") == "table":
            assert spec["table_epochs"], fig
        else:
            assert (REPO / "scripts" / "figures" / f"{fig}.py").exists()
            assert claims.get(fig), fig
        for sweep, protocols in spec["sweeps"].items():
            assert sweep in experiments
            assert set(protocols) == {"full", "quick", "smoke"}
            assert protocols["full"][0] == ""  # the full protocol is the experiment file itself (and its variants)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_pin_the_paper_protocol(name):
    params = sweep_params(name)
    assert len(str(params["seed"]).split(",")) >= (3 if name == "fig9_aux_family" else 5)
    cfg = compose([f"experiment={name}"])
    assert cfg.name == name
    assert cfg.batch_size == (1024 if "rnn" in name else 200)
    if cfg.dataset.name == "mnist":
        assert cfg.dataset.val_size == 10000  # 50,000 training images, as the paper
    for optim in str(params["optim"]).split(","):  # every method of the grid composes with it
        compose([f"experiment={name}", f"optim={optim}"])


def test_the_family_experiments_pin_their_authors_protocols():
    from amtrain.cli import compose_checked

    bcd = compose_checked(["experiment=bcd_mnist", "optim=bcd"])
    assert (bcd.model.hidden, bcd.dataset.scale, bcd.dataset.val_size, bcd.epochs) == ([1500, 1500, 1500], "unit", 0, 50)
    assert (bcd.optim.gamma, bcd.optim.rho, bcd.optim.alpha, bcd.optim.init_std, bcd.optim.init_bias) == (1, 1, 5, 0.01, 0.1)
    assert sweep_params("bcd_mnist")["seed"] == "10,20,30,40,50"
    for optim in ("dladmm", "mdlam"):
        cfg = compose_checked(["experiment=aux_family_iterations", f"optim={optim}"])
        assert cfg.epochs == 200 and cfg.model.batchnorm is False
    assert compose_checked(["experiment=aux_family_iterations", "optim=dladmm", "model=mlp_2x1000"]).model.hidden == [1000, 1000]
    fig9 = compose_checked(["experiment=fig9_aux_family", "optim=am_adam", "dataset=fashion_mnist"])
    assert fig9.model.batchnorm is False and fig9.dataset.val_size == 10000 and fig9.epochs == 50


def test_tuned_values_follow_the_method_and_model():
    assert compose(["optim=adam", "model=lenet5"]).optim.lr == 0.002
    assert compose(["optim=adam", "model=mlp_2x500"]).optim.lr == 0.0005
    assert compose(["optim=sgd", "model=mlp_2x500"]).optim.lr == 0.2
    assert compose(["optim=adam", "model=rnn"]).optim.lr == 0.003  # untuned pair: the optim file
    # the experiment's model choice selects the tuned file too
    assert compose(["experiment=fig7_lenet", "optim=adam"]).optim.lr == 0.002
    # the command line still wins
    assert compose(["optim=adam", "model=lenet5", "optim.lr=0.01"]).optim.lr == 0.01
    # ~tuned runs without the file: the optim file's value
    assert compose(["optim=adam", "model=lenet5", "~tuned"]).optim.lr == 0.003
    # mDLAM's validated backtracking cap (conf/tuned/mdlam_mlp_2x100_release.yaml) applies to Figure 9;
    # the 200-iteration table reports the authors' settings, so it leaves the tuned files out
    assert compose(["optim=mdlam"]).optim.backtrack_max == 30
    assert compose(["experiment=fig9_aux_family", "optim=mdlam"]).optim.backtrack_max == 30
    assert compose(["experiment=aux_family_iterations", "optim=mdlam"]).optim.backtrack_max == 10
    assert compose(["experiment=aux_family_iterations", "optim=dladmm"]).optim.backtrack_max == 40


def _reproduce(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), *args], capture_output=True,
                          text=True, cwd=cwd)


def test_a_figure_without_its_data_is_skipped_and_said_so():
    r = _reproduce("--protocol", "quick", "--dry-run", "--data", str(REPO))
    assert r.returncode == 0, r.stderr
    assert "skip fig1_mnist_first_epoch: no mnist data" in r.stdout  # the repo root holds no MNIST
    assert "0 sweeps, 0 jobs checked: none" in r.stdout


def test_a_data_root_that_is_not_a_folder_is_one_line_and_a_trailing_comma_is_no_figure(tmp_path):
    r = _reproduce("--protocol", "quick", "--dry-run", "--data", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"reproduce.py: error: --data {tmp_path / 'nowhere'} is not a folder: give the folder that holds MNIST/, "
        "FashionMNIST/, ... (or set AMTRAIN_DATA)")
    r = _reproduce("--protocol", "quick", "--dry-run", "--data", str(REPO), "--figures", "fig8_binary,")
    assert r.returncode == 0 and "skip fig8_binary: no mnist data" in r.stdout, r.stderr


def test_dry_run_composes_every_job_and_says_what_each_sweep_would_run(tmp_path):
    r = _reproduce("--protocol", "smoke", "--launcher", "submitit_slurm", "--dry-run", "--runs", str(tmp_path / "runs"),
                   "--", "+local=example")
    assert r.returncode == 0, r.stderr
    commands = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert len(commands) == sum(len(p["smoke"]) for f in PLAN["figures"].values() for p in f["sweeps"].values())
    assert all("hydra/launcher=submitit_slurm +local=example" in c for c in commands)
    counts = re.findall(r"^    (\d+) jobs?(?: \((\d+) seed groups?\))?: (\d+) to run$", r.stdout, flags=re.M)
    assert len(counts) == len(commands) and all(n == m for n, _, m in counts)
    assert any(int(g or 0) > 0 for _, g, _ in counts)  # the online methods' seeds train together
    total = sum(int(n) for n, _, _ in counts)
    assert f"{len(commands)} sweeps, {total} jobs checked: {total} to run" in r.stdout
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize("extra, said, dry", [
    (["--launcher", "jobllib"], "[fig8_binary] unknown hydra/launcher 'jobllib'; choose one of: basic, joblib,", True),
    (["--launcher", "jobllib"], "[fig8_binary] unknown hydra/launcher 'jobllib'; choose one of: basic, joblib,", False),
    (["--", "optim.lr=fast"], "[fig8_binary] bad value for 'optim.lr'", True),
    (["--", "optim.lrr=1"], "[fig8_binary] unknown config key 'optim.lrr'", False),
    (["--figures", "tab_bcd", "--", "optim=sgdd"], "[tab_bcd, sweep bcd_mnist] unknown optim 'sgdd'", True)])
def test_a_bad_override_or_launcher_is_one_line_before_any_sweep_runs(tmp_path, extra, said, dry):
    args = ["--protocol", "smoke", "--figures", "fig8_binary", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), *(["--dry-run"] if dry else []), *extra]
    r = _reproduce(*args)
    assert r.returncode == 2 and r.stderr.startswith("reproduce: error: " + said), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "amtrain -m" not in r.stdout
    # (a real run has checked that it can write both folders, so they may exist, empty)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_an_unwritable_results_or_runs_folder_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "file").write_text("")
    base = [sys.executable, str(REPO / "scripts" / "reproduce.py"), "--protocol", "smoke",
            "--figures", "fig1_mnist_first_epoch"]
    for flag, what, more in (("--results", "results", []), ("--runs", "runs", ["--results", str(tmp_path / "res")])):
        r = subprocess.run(base + [flag, str(tmp_path / "file"), *more], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.strip() == (f"reproduce: error: the {what} folder {tmp_path / 'file'} is a "
                                                          f"file, not a folder: choose another {flag}"), r.stderr
        assert "[fig1_mnist_first_epoch]" not in r.stdout  # no sweep started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "res"]


RERUN = ("fig5_higgs", "tab_bcd")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    cmd = [sys.executable, str(REPO / "scripts" / "reproduce.py"), "--protocol", "smoke",
           "--results", str(root / "results"), "--runs", str(root / "runs")]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    # the same command again resumes with nothing left to run (two figures: each sweep is a process)
    second = subprocess.run(cmd + ["--figures", ",".join(RERUN)], capture_output=True, text=True, cwd=REPO)
    report = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), "--results",
                             str(root / "results")], capture_output=True, text=True, cwd=REPO)
    return root, first, second, report


def test_smoke_runs_every_figure_sweep_and_draws_every_figure(smoke):
    root, first, second, _ = smoke
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = root / "results"
    for fig, spec in PLAN["figures"].items():
        for sweep in spec["sweeps"]:
            sweep_dir = root / "runs" / f"smoke_{sweep}"
            jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
            assert jobs and all((j / "DONE").exists() for j in jobs), sweep
            df = pd.read_csv(results / f"{sweep}.csv")
            one_seed = all("seed=" in line for line in spec["sweeps"][sweep]["smoke"])
            assert (df.figure == fig).all() and df.n_seeds.max() == (1 if one_seed else 2)
            assert {"mean", "std", "wall_time", "overrides", "settings"} <= set(df.columns)
        if spec.get("kind") == "table":
            continue
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    # the generated data is removed at the end (each invocation writes its own)
    for out in (first.stdout, second.stdout):
        generated = re.search(r"HIGGS files in (\S+) ", out).group(1)
        assert "amtrain-smoke-data-" in generated and not Path(generated).exists()
    # it looked at every job before running any
    total = re.search(r"^(\d+) sweeps, (\d+) jobs checked: (\d+) to run$", first.stdout, flags=re.M)
    assert total and total.group(2) == total.group(3), first.stdout[:3000]
    # the rerun skipped every finished job, and the log keeps both invocations
    assert second.returncode == 0 and "skipping" in second.stdout + second.stderr
    assert re.search(r"^\d+ sweeps, (\d+) jobs checked: \1 finished$", second.stdout, flags=re.M), second.stdout
    rows = list(csv.DictReader((results / "runs.csv").open()))
    lines = {f: sum(len(p["smoke"]) for p in s["sweeps"].values()) for f, s in PLAN["figures"].items()}
    assert len(rows) == sum(lines.values()) + sum(lines[f] for f in RERUN)
    assert {r["figure"] for r in rows[-sum(lines[f] for f in RERUN):]} == set(RERUN)


def test_two_sweeps_of_a_protocol_with_a_job_in_one_folder_and_other_settings_stop_it(tmp_path, capsys):
    """A figure's sweeps may share a sweep folder (tab_aux_family's do), never a job folder with other
    settings: the second would be refused after the first ran."""
    reproduce = script("reproduce")
    base = amtrain_cmd() + ["-m", "dataset=synthetic", "seed=0", "hydra.sweep.subdir=job",
                            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    same = [("f", "a", base + ["optim=sgd"]), ("f", "b", base + ["optim=sgd"])]
    assert reproduce.look_ahead(same, {}, dry_run=False) == 0  # the same job twice: skipped the second time
    assert reproduce.look_ahead([*same, ("f", "c", base + ["optim=adam"])], {}, dry_run=False) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"reproduce: error: [f] a and [f] c both have a job in {tmp_path / 'sweep' / 'job'}, "
                          "with other settings (optim._target_: ") and err.count("\n") == 1, err
    assert not (tmp_path / "sweep").exists()


def test_a_job_that_finished_with_another_configuration_stops_the_run_before_any_sweep(smoke, tmp_path):
    """Its sweep would refuse it; left in the sweep folder, aggregate.py would add it to the CSV as a variant."""
    import shutil

    sweep = tmp_path / "runs" / "smoke_bcd_mnist"
    shutil.copytree(smoke[0] / "runs" / "smoke_bcd_mnist", sweep)
    job = next(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    config = job / "config.yaml"
    config.write_text(re.sub(r"^epochs: 2$", "epochs: 3", config.read_text(), count=1, flags=re.M))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    args = ["--protocol", "smoke", "--figures", "tab_bcd", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    dry = _reproduce(*args, "--dry-run")
    assert dry.returncode == 2 and f"    different: {job}: epochs: 3 there, 2 now" in dry.stdout, dry.stdout
    assert "1 sweep, 1 job checked: 1 different" in dry.stdout
    real = _reproduce(*args)
    assert real.returncode == 2 and len(real.stderr.strip().splitlines()) == 1
    assert real.stderr.startswith("reproduce: error: 1 finished job folder(s) ran with another configuration")
    assert f"(the first, {job}: epochs: 3 there, 2 now): move them aside or choose another --runs" in real.stderr
    assert "amtrain -m" not in real.stdout
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == \
        {p: t for p, t in before.items() if p.is_file()}  # nothing written, nothing run


def test_the_dry_run_counts_finished_jobs_that_ran_on_other_code(smoke, tmp_path):
    import shutil

    sweep = tmp_path / "runs" / "smoke_fig8_binary"
    shutil.copytree(smoke[0] / "runs" / "smoke_fig8_binary", sweep)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    config = jobs[0] / "config.yaml"
    head, _, rest = config.read_text().split("\n", 2)
    config.write_text(f"{head}\n# code 0123456789abcdef git 0000000 torch 2.0\n{rest}")  # an older amtrain's
    r = _reproduce("--protocol", "smoke", "--figures", "fig8_binary", "--runs", str(tmp_path / "runs"),
                   "--results", str(tmp_path / "results"), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"1 sweep, {len(jobs)} jobs checked: {len(jobs)} finished (1 on other amtrain code)" in r.stdout, r.stdout


def test_finished_jobs_that_read_other_data_stop_the_run_before_anything_runs(smoke, tmp_path):
    """A finished job whose run read other data than the files here hold now (replaced under the
    same name since) would make its figure's aggregate.py refuse to mix them, hours later: the
    look-ahead says so first. The same generated data made again is the same data."""
    import shutil

    sweep = tmp_path / "runs" / "smoke_fig8_binary"
    shutil.copytree(smoke[0] / "runs" / "smoke_fig8_binary", sweep)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    args = ["--protocol", "smoke", "--figures", "fig8_binary", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    r = _reproduce(*args, "--dry-run")
    assert r.returncode == 0 and f"{len(jobs)} finished" in r.stdout and "other data" not in r.stdout, r.stdout
    metrics = jobs[0] / "metrics.csv"
    rows = pd.read_csv(metrics, dtype={"data": str})
    now = rows.data.iloc[0]
    metrics.write_text(rows.assign(data="0123456789abcdef").to_csv(index=False))
    r = _reproduce(*args, "--dry-run")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"    other data: {jobs[0]}: on other data (01234567 then, {now[:8]} now)" in r.stdout, r.stdout
    assert r.stderr.strip() == (
        f"reproduce: error: 1 finished job folder(s) read other data than the dataset's files here hold now (the "
        f"first, {jobs[0]}: on other data (01234567 then, {now[:8]} now)): their figures would mix two datasets; "
        "point --data at the files they read, or move them aside (or choose another --runs) to rerun them on "
        "these; `--dry-run` lists them")


def test_a_sweep_with_jobs_running_elsewhere_is_not_aggregated_without_them(smoke, tmp_path):
    """Two reproduce.py (or a reproduce.py and an amtrain -m) on one runs folder share the jobs
    through their locks. The one that ends first would write the figure's CSV without the jobs
    the other still runs: it leaves the CSV to the other instead, and says so."""
    import fcntl
    import shutil

    sweep = tmp_path / "runs" / "smoke_fig8_binary"
    shutil.copytree(smoke[0] / "runs" / "smoke_fig8_binary", sweep)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    args = ["--protocol", "smoke", "--figures", "fig8_binary", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--skip-runs"]
    fd = os.open(jobs[1] / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"pid 7 on elsewhere\n", 0)
    try:
        r = _reproduce(*args)
    finally:
        os.close(fd)
    csv_out = tmp_path / "results" / "fig8_binary.csv"
    assert r.returncode == 0, r.stdout + r.stderr  # not a failure: the other process finishes the figure
    assert (f"[fig8_binary] 1 job of smoke_fig8_binary still running elsewhere (the first, {jobs[1]} (pid 7 on "
            f"elsewhere)): {csv_out} is left as it was") in r.stdout, r.stdout + r.stderr
    assert not csv_out.exists()
    r = _reproduce(*args)
    assert r.returncode == 0 and csv_out.exists(), r.stdout + r.stderr


def test_smoke_report_has_every_figure_and_verdicts(smoke):
    root, _, _, report = smoke
    assert report.returncode == 0, report.stderr
    text = (root / "results" / "REPORT.md").read_text()
    for fig in FIGURES:
        assert f"## {fig}" in text
        assert (f"figures/{fig}.png" in text) == (PLAN["figures"][fig].get("kind") != "table")
    assert "reproduced" in text or "differs" in text
    assert "| mlp_2x100 | AM-Adam |" in text
    assert "| fashion_mnist | mlp_2x100 | dlADMM | " in text  # tab_aux_family's table
    assert "each method beside AM-Adam" in text  # fig9's standing, per pass and per second
    from amtrain.provenance import code_fingerprint

    code = f"Code (amtrain/provenance.py): {code_fingerprint()[:8]}; data "  # what every run recorded
    assert text.count(code) == len(FIGURES), text
    fig9 = next(line for line in text.splitlines() if line.startswith(code) and "(fashion_mnist)" in line)
    assert re.fullmatch(re.escape(code) + r"[0-9a-f]{8} \(fashion_mnist\), [0-9a-f]{8} \(mnist\)\.", fig9), fig9


def test_figures_redraw_from_csvs_alone(smoke, tmp_path):
    root = smoke[0]
    for f in (root / "results").glob("*.csv"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "figures" / "draw_all.py"), str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "figures").glob("*.png"))) == len([f for f in FIGURES if PLAN["figures"][f].get("kind") != "table"])


def test_the_report_takes_each_figure_from_the_full_protocol_where_it_ran(smoke, tmp_path):
    """--fallback: a figure with CSVs under --results comes from there, every other from the fallback."""
    import shutil

    root = smoke[0]
    full, quick = tmp_path / "full", tmp_path / "quick"
    shutil.copytree(root / "results", quick)
    full.mkdir()
    shutil.copy(quick / "fig8_binary.csv", full / "fig8_binary.csv")
    out = tmp_path / "REPORT.md"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), "--results", str(full), "--fallback",
                        str(quick), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    sections = {s.split(":", 1)[0]: s for s in text.split("\n## ")[1:]}
    assert "Protocol: full (`full/`)" in sections["fig8_binary"]
    assert "Protocol: quick (`quick/`)" in sections["fig1_mnist_first_epoch"]
    assert "| mlp_2x100 | AM-Adam |" in sections["fig1_mnist_first_epoch"]  # the fallback's numbers


def test_report_checks_give_their_verdicts_from_the_csv(tmp_path):
    """value, order and level checks of paper_claims.yaml on a crafted CSV: the numbers they
    quote and the verdicts they reach either side of their tolerance."""
    report = script("report")
    rows = []
    for optim, (acc1, acc10) in {"am_adam": (0.83, 0.944), "sgd": (0.74, 0.912), "adam": (0.86, 0.948)}.items():
        for epoch, acc in ((1, acc1), (10, acc10)):
            rows.append(dict(figure="fig6_rnn", dataset="mnist", model="rnn", optim=optim, mode="release", variant=optim,
                             split="test", metric="acc", step=20 * epoch, epoch=epoch, samples_seen=20000 * epoch,
                             settings="", overrides="", mean=acc, std=0.01, n_seeds=5, seeds="0 1 2 3 4"))
    pd.DataFrame(rows).to_csv(tmp_path / "fig6_rnn.csv", index=False)
    at10 = {"sweep": "fig6_rnn", "model": "rnn", "at": {"epoch": 10}}
    level = report.check(tmp_path, {"kind": "level", **at10, "optim": "am_adam", "as": "sgd", "tol": 0.01})
    assert level["verdict"] == "differs (+0.032; tolerance 0.01)"
    assert "AM-Adam 0.944 ± 0.010 (n=5); SGD 0.912 ± 0.010 (n=5)" in level["ours"]
    assert report.check(tmp_path, {"kind": "level", **at10, "optim": "am_adam", "as": "adam", "tol": 0.01})[
        "verdict"] == "reproduced"
    order = report.check(tmp_path, {"kind": "order", **at10, "higher": "am_adam", "than": ["sgd", "adam"]})
    assert order["verdict"] == "differs (not above Adam)"
    value = report.check(tmp_path, {"kind": "value", "sweep": "fig6_rnn", "model": "rnn", "at": {"epoch": 1},
                                    "optim": "sgd", "paper": 0.75, "tol": 0.02})
    assert value["verdict"] == "reproduced" and value["paper"] == "0.75"
    assert report.check(tmp_path, {"kind": "level", "sweep": "fig5_higgs", "model": "rnn", "at": "last",
                                   "optim": "am_adam", "as": "sgd", "tol": 0.01})["verdict"] == "not run"


def test_runs_csv_gets_each_sweep_as_it_ends_and_a_stopped_one_as_interrupted(tmp_path, monkeypatch):
    """A sweep's row is in runs.csv before the next sweep starts, so stopping a later sweep
    loses nothing; the stopped sweep is recorded as interrupted and the script exits 143."""
    reproduce = script("reproduce")
    log = tmp_path / "results" / "runs.csv"
    calls = []

    def fake_sweep(cmd, env):
        calls.append(cmd)
        if len(calls) == 1:
            return 0
        rows = list(csv.DictReader(log.open()))  # the first sweep's row is already written
        assert [(r["sweep"], r["status"]) for r in rows] == [("aux_family_iterations", "ok")]
        raise reproduce.Stopped()

    monkeypatch.setattr(reproduce, "run_sweep", fake_sweep)
    before = signal.getsignal(signal.SIGTERM)
    try:
        rc = reproduce.main(["--protocol", "smoke", "--figures", "tab_aux_family,tab_bcd",
                             "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")])
        assert signal.getsignal(signal.SIGTERM) is before  # an in-process caller gets its own handler back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert rc == 143
    assert len(calls) == 2  # tab_bcd never started
    rows = list(csv.DictReader(log.open()))
    assert [r["status"] for r in rows] == ["ok", "interrupted (SIGTERM)"]
    assert "optim.accelerate=false" in rows[1]["command"] and float(rows[1]["seconds"]) >= 0


def test_two_invocations_logging_at_once_write_one_header_and_whole_rows(tmp_path):
    """runs.csv is appended under a lock: created by whichever comes first, never two headers."""
    log = tmp_path / "runs.csv"
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); import reproduce\n"
            f"for i in range(300):\n"
            f"    reproduce.log_run(__import__('pathlib').Path({str(log)!r}), dict(finished='now', figure=sys.argv[1], "
            f"sweep=str(i), status='ok', seconds=1.5, command='amtrain -m ' + 'x=1,' * 50))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, name]) for name in ("a", "b", "c")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    lines = log.read_text().splitlines()
    assert lines[0] == ",".join(script("reproduce").LOG_FIELDS) and lines.count(lines[0]) == 1
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 900 and all(r["command"] == "amtrain -m " + "x=1," * 50 for r in rows)
    for name in "abc":  # each invocation's rows whole and in its order
        assert [int(r["sweep"]) for r in rows if r["figure"] == name] == list(range(300))


def test_a_stopped_reproduce_stops_the_amtrain_it_runs(tmp_path):
    """SIGTERM to the script reaches the sweep it is waiting for: no amtrain is left running."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    driver = (f"import importlib.util, signal, sys\n"
              f"spec = importlib.util.spec_from_file_location('r', {str(REPO / 'scripts' / 'reproduce.py')!r})\n"
              f"r = importlib.util.module_from_spec(spec); spec.loader.exec_module(r)\n"
              f"signal.signal(signal.SIGTERM, r._raise_stopped)\n"
              f"try:\n    r.run_sweep([sys.executable, '-c', {child!r}], None)\n"
              f"except r.Stopped:\n    sys.exit(143)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "the sweep never started"
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    with pytest.raises(ProcessLookupError):  # stopped and reaped by the script
        os.kill(child_pid, 0)
