#!/usr/bin/env python
"""Run the paper's figures: sweeps, aggregation, plots, report.

    python scripts/reproduce.py --protocol quick            # make reproduce-paper-quick
    python scripts/reproduce.py --protocol full --launcher submitit_slurm -- +local=slurm
    python scripts/reproduce.py --protocol smoke            # make smoke: tiny generated data
    python scripts/reproduce.py --protocol quick --figures fig1_mnist_first_epoch,fig8_binary
    python scripts/reproduce.py --protocol full --dry-run   # each sweep's jobs: finished, to run, ...

Before any sweep runs, every job of every sweep is composed and its folder looked at
(:func:`look_ahead`). A bad override or launcher stops everything with one line, and so does
a finished job folder that ran with another configuration (its sweep would refuse it, and
aggregate.py would add it to the CSV as a variant of its own).

For every figure (and table) of ``conf/reproduce.yaml`` whose data is present, each sweep runs as
``amtrain -m experiment=<sweep> name=<protocol>_<sweep> <protocol overrides>`` (resumable:
a rerun skips the jobs that finished), then ``scripts/aggregate.py`` writes
``<results>/<sweep>.csv`` and the figure's plot script writes ``<results>/figures/``.
A figure without its data is skipped and said so. ``<results>/runs.csv`` records what
was run and how long it took, a row as each sweep ends (a sweep stopped by Ctrl-C or
SIGTERM, with its amtrain, is recorded as interrupted); ``scripts/report.py`` turns the
CSVs into REPORT.md.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import fcntl
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from amtrain import sweep as sweeps
from amtrain.cli import command as amtrain_cmd, compose_checked
from amtrain.errors import ConfigError, OutputError
from amtrain.provenance import OTHER_CODE, OTHER_DATA
from amtrain.rundir import ensure_writable, holder
from amtrain.sweep import FOLDER_STATES, plural

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
PROTOCOLS = ("full", "quick", "smoke")
DATA_FILES = {  # what a figure's dataset needs under the data root
    "mnist": "MNIST/raw",
    "fashion_mnist": "FashionMNIST/raw",
    "cifar10": "cifar-10-batches-py",
    "higgs": "HIGGS/HIGGS.h5",
}


def load_plan(path: Path = REPO / "conf" / "reproduce.yaml") -> dict:
    return yaml.safe_load(path.read_text())


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


LOG_FIELDS = ["finished", "figure", "sweep", "status", "seconds", "command"]


def log_run(log: Path, row: dict) -> None:
    """Append one row to runs.csv at once: a later sweep that is stopped cannot lose it. Under a
    lock, so that two invocations at once write one header and whole rows."""
    with open(log, "a", newline="") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        w = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        if fh.seek(0, os.SEEK_END) == 0:
            w.writeheader()
        w.writerow(row)


class Stopped(Exception):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _raise_stopped(signum, frame):
    raise Stopped()


@contextlib.contextmanager
def _sigterm_raises(active: bool):
    """While active, SIGTERM raises Stopped; afterwards the caller's own handler is back
    (``main`` is also called in-process, as the tests do)."""
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if active else None
    try:
        yield
    finally:
        if active:
            signal.signal(signal.SIGTERM, previous)


def run_sweep(cmd: list, env: dict) -> int:
    """Run one sweep's amtrain; if this script is stopped meanwhile, stop amtrain too (it
    records its jobs' partial metrics and FAILED) and wait for it, then re-raise."""
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    try:
        return proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # (Ctrl-C has already reached it through the terminal)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


def sweep_commands(plan: dict, figure: str, protocol: str, launcher: str, extra: list) -> list:
    """[(sweep name, argv)] for one figure under one protocol."""
    out = []
    for sweep, protos in plan["figures"][figure]["sweeps"].items():
        for line in protos[protocol]:
            argv = amtrain_cmd() + ["-m", f"experiment={sweep}", f"name={protocol}_{sweep}"]
            if protocol == "smoke":
                argv += shlex.split(plan["smoke_overrides"])
            argv += shlex.split(line or "")
            if launcher != "basic":
                argv.append(f"hydra/launcher={launcher}")
            out.append((sweep, argv + list(extra)))
    return out


def _shown(argv: list) -> str:
    """A sweep's amtrain arguments as one shell line."""
    return " ".join(shlex.quote(c) for c in argv[len(amtrain_cmd()):])


@contextlib.contextmanager
def _environment(env: dict):
    """os.environ as the sweeps will see it (``main`` is also called in-process, as the tests do)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _counts(states: Counter) -> str:
    """'3 finished (1 on other amtrain code), 2 to run': a sweep's jobs by what running it would do."""
    other = f" ({states['on other code']} on other amtrain code)" if states["on other code"] else ""
    return ", ".join(f"{states[s]} {s}{other if s == 'finished' else ''}" for s in FOLDER_STATES if states[s])


def differences_between(a, b) -> str:
    """How two composed job configs differ in what they compute ("" if not at all)."""
    from amtrain.config import computed_config

    fa, fb = computed_config(a), computed_config(b)
    keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
    return ", ".join(f"{k}: {fa.get(k)!r} / {fb.get(k)!r}" for k in keys[:3]) + (" ..." if len(keys) > 3 else "")


def look_ahead(todo: list, env: dict, dry_run: bool) -> int:
    """Compose every job of every sweep in ``todo`` ([(figure, sweep, argv)]) before any runs, and
    see what each would do with its folder. A bad override, a finished job that ran with
    another configuration (its sweep would fail it), or one that read other data than the
    dataset's files hold now (aggregate.py would refuse its figure), is one line and exit 2;
    nothing has run.
    ``dry_run``: list each sweep's jobs by state. Returns 0 or 2."""
    states: Counter = Counter()
    different, other_data, first = [], [], {}  # first: job folder -> (which sweep, its job), across the sweeps
    with _environment(env):
        for fig, name, cmd in todo:
            try:
                planned = sweeps.plan(cmd[len(amtrain_cmd()) + 1:], compose_checked)
            except ConfigError as e:
                where = fig if name == fig else f"{fig}, sweep {name}"
                print(f"reproduce: error: [{where}] {e}", file=sys.stderr)
                return 2
            here, odd, moved = Counter(), [], []
            for job in planned.jobs:
                where, other = first.setdefault(job.dir, (f"[{fig}] {name}", job))
                clash = other is not job and differences_between(other.cfg, job.cfg)
                if clash:
                    print(f"reproduce: error: {where} and [{fig}] {name} both have a job in {job.dir}, with other "
                          f"settings ({clash}): one would be refused; make their overrides tell them apart",
                          file=sys.stderr)
                    return 2
                state, detail = sweeps.folder_state(job)
                here[state] += 1
                here["on other code"] += state == "finished" and OTHER_CODE in detail  # amtrain.provenance
                if state == "different":
                    odd.append(f"{job.dir}: {detail}")
                if state == "finished" and OTHER_DATA in detail:
                    moved.append(f"{job.dir}: {detail[detail.index(OTHER_DATA):]}")
            states.update(here)
            different += odd
            other_data += moved
            if dry_run:
                groups = len(sweeps.seed_groups(planned))
                groups = f" ({plural(groups, 'seed group')})" if groups else ""
                counts = _counts(here)
                print(f"[{fig}] amtrain {_shown(cmd)}\n    {plural(len(planned.jobs), 'job')}{groups}: {counts}",
                      flush=True)
                for line in odd:
                    print(f"    different: {line}")
                for line in moved:
                    print(f"    other data: {line}")
    total = sum(states[s] for s in FOLDER_STATES)
    print(f"{plural(len(todo), 'sweep')}, {plural(total, 'job')} checked: {_counts(states) or 'none'}", flush=True)
    if different:
        print(f"reproduce: error: {len(different)} finished job folder(s) ran with another configuration, which "
              f"their sweeps would refuse (the first, {different[0]}): move them aside or choose another --runs; "
              "`--dry-run` lists them", file=sys.stderr)
        return 2
    if other_data:
        print(f"reproduce: error: {len(other_data)} finished job folder(s) read other data than the dataset's files "
              f"here hold now (the first, {other_data[0]}): their figures would mix two datasets; point --data at "
              "the files they read, or move them aside (or choose another --runs) to rerun them on these; "
              "`--dry-run` lists them", file=sys.stderr)
        return 2
    return 0


def held_elsewhere(sweep_dir: Path) -> list:
    """'<folder> (<holder>)' for each job folder of a sweep that another process holds now (a
    second reproduce.py or amtrain -m on the same runs folder): aggregated now, its figure would
    lack those jobs. amtrain.rundir.holder's probe writes nothing."""
    if not sweep_dir.is_dir():
        return []
    held = ((d, holder(d)) for d in sorted(sweep_dir.iterdir()) if d.is_dir() and not d.name.startswith("."))
    return [f"{d} ({who})" for d, who in held if who]


def resolve_higgs(given, data_root: Path):
    """The HIGGS file to use: given, the full one under the data root, or the real subset converted once."""
    if given:
        return Path(given).resolve()
    if (data_root / DATA_FILES["higgs"]).exists():
        return None  # the default path of conf/dataset/higgs.yaml
    subset = data_root / "HIGGS-subset"
    if not (subset / "binary.train").exists():
        return None
    out = REPO / "data" / "HIGGS-subset.h5"
    if not out.exists():
        from amtrain.data.higgs_convert import convert

        print(f"converting the real HIGGS subset {subset} -> {out} (last 500 rows: test)")
        convert([subset / "binary.train", subset / "binary.test"], out, test_rows=500)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=PROTOCOLS, required=True)
    p.add_argument("--figures", default="all", help="comma-separated figure names (default: all)")
    p.add_argument("--data", default=None, help="data root (default: $AMTRAIN_DATA; smoke: generated)")
    p.add_argument("--results", default=None, help="output folder (default: results/<protocol>)")
    p.add_argument("--runs", default="multirun", help="where the sweeps' job folders go")
    p.add_argument("--launcher", default="basic", help="Hydra launcher: basic | joblib | submitit_slurm | ...")
    p.add_argument("--higgs", default=None,
                   help="the HIGGS HDF5 file for the HIGGS figure (default: <data>/HIGGS/HIGGS.h5; with only "
                        "the real subset <data>/HIGGS-subset, it is converted to data/HIGGS-subset.h5)")
    p.add_argument("--skip-runs", action="store_true", help="only aggregate, plot and report")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("extra", nargs="*", help="more overrides for every sweep (after --)")
    args = p.parse_args(argv)

    plan = load_plan()
    figures = list(plan["figures"]) if args.figures == "all" else [f for f in args.figures.split(",") if f.strip()]
    unknown = [f for f in figures if f not in plan["figures"]]
    if unknown or not figures:
        p.error(f"unknown figure(s) {unknown or [args.figures]}; choose from {', '.join(plan['figures'])}")
    if args.data and not Path(args.data).is_dir():
        p.error(f"--data {args.data} is not a folder: give the folder that holds MNIST/, FashionMNIST/, ... "
               "(or set AMTRAIN_DATA)")
    if args.protocol != "smoke" or args.data:
        return reproduce(args, plan, figures)
    from amtrain.data.fake import write_all

    args.data = tempfile.mkdtemp(prefix="amtrain-smoke-data-")
    print(f"smoke: tiny generated MNIST, Fashion-MNIST, CIFAR-10 and HIGGS files in {args.data} "
          "(removed at the end)")
    try:
        write_all(args.data)
        return reproduce(args, plan, figures)
    finally:
        shutil.rmtree(args.data, ignore_errors=True)


def reproduce(args, plan: dict, figures: list) -> int:
    """Each figure's sweeps, then its CSVs and plot (``main`` has checked the arguments)."""
    results = Path(args.results or REPO / "results" / args.protocol)
    runs = Path(args.runs).resolve()
    env = dict(os.environ)
    data_root = Path(args.data or env.get("AMTRAIN_DATA", "data")).resolve()
    env["AMTRAIN_DATA"] = str(data_root)

    try:
        ensure_writable(results, "results folder", "choose another --results")
        if not args.dry_run and not args.skip_runs:
            ensure_writable(runs, "runs folder", "choose another --runs")
    except OutputError as e:
        print(f"reproduce: error: {e}", file=sys.stderr)
        return 2
    higgs = resolve_higgs(args.higgs, data_root)
    aggregate = _module(SCRIPTS / "aggregate.py")
    log = results / "runs.csv"  # appended: a rerun that only resumes keeps the first run's times
    logging_runs = not args.dry_run and not args.skip_runs
    log_rows, failed = [], []

    def record(row: dict) -> None:
        log_rows.append(row)
        if logging_runs:
            log_run(log, row)

    commands, absent_data = {}, {}  # figure -> [(sweep, argv)] | (dataset, where it is missing)
    for fig in figures:
        spec = plan["figures"][fig]
        datasets = spec["data"] if isinstance(spec["data"], list) else [spec["data"]]
        needs = [higgs if d == "higgs" and higgs else data_root / DATA_FILES[d] for d in datasets]
        absent = [(d, n) for d, n in zip(datasets, needs) if not n.exists()]
        if absent and not args.skip_runs:
            absent_data[fig] = absent[0]
            continue
        commands[fig] = []
        for sweep, cmd in sweep_commands(plan, fig, args.protocol, args.launcher, args.extra):
            cmd = cmd + [f"hydra.sweep.dir={runs}/{args.protocol}_{sweep}"]
            if spec["data"] == "higgs" and higgs:
                cmd.append(f"dataset.path={higgs}")
            commands[fig].append((sweep, cmd))
    for fig, (dataset, path) in absent_data.items():
        where = "--higgs" if dataset == "higgs" and args.higgs else "AMTRAIN_DATA or --data"
        print(f"skip {fig}: no {dataset} data at {path} (set {where})")
        record({"finished": _now(), "figure": fig, "sweep": "", "status": f"skipped: no {dataset} data",
                "seconds": 0, "command": ""})
    if not args.skip_runs:
        rc = look_ahead([(fig, sweep, cmd) for fig, cmds in commands.items() for sweep, cmd in cmds], env,
                        args.dry_run)
        if rc or args.dry_run:
            return rc

    with _sigterm_raises(logging_runs):
        for fig, cmds in commands.items():
            spec = plan["figures"][fig]
            csvs = []
            for sweep, cmd in cmds:
                shown = _shown(cmd)
                print(f"[{fig}] amtrain {shown}", flush=True)
                status, seconds = "not run (--skip-runs)", 0.0
                if logging_runs:
                    t0 = time.perf_counter()
                    try:
                        rc = run_sweep(cmd, env)
                    except (KeyboardInterrupt, Stopped) as e:
                        how = "Ctrl-C" if isinstance(e, KeyboardInterrupt) else "SIGTERM"
                        record({"finished": _now(), "figure": fig, "sweep": sweep, "status": f"interrupted ({how})",
                                "seconds": round(time.perf_counter() - t0, 1), "command": "amtrain " + shown})
                        print(f"reproduce: interrupted ({how}) in {fig}/{sweep}; {log} lists the sweeps run so far; "
                              "rerun the same command to resume", file=sys.stderr)
                        return 130 if how == "Ctrl-C" else 143
                    seconds = time.perf_counter() - t0
                    status = "ok" if rc == 0 else f"exit {rc} (failed jobs: see FAILED files)"
                    if rc:
                        failed.append(f"{fig}/{sweep}")
                record({"finished": _now(), "figure": fig, "sweep": sweep, "status": status,
                        "seconds": round(seconds, 1), "command": "amtrain " + shown})
                if sweep not in csvs:
                    csvs.append(sweep)
            for sweep in csvs:
                out = results / f"{sweep}.csv"
                held = held_elsewhere(runs / f"{args.protocol}_{sweep}")
                if held:  # another process runs some of its jobs: a CSV written now would lack them
                    print(f"[{fig}] {plural(len(held), 'job')} of {args.protocol}_{sweep} still running elsewhere "
                          f"(the first, {held[0]}): {out} is left as it was; the process running them writes it "
                          "when its sweep ends (or rerun with --skip-runs then)")
                    continue
                try:
                    aggregate.main([str(runs / f"{args.protocol}_{sweep}"), "-o", str(out), "--figure", fig])
                except aggregate.NoRuns as e:  # its jobs failed: said above
                    print(f"[{fig}] {e}")
                except SystemExit as e:  # e.g. one seed run twice: the old CSV stays, and the run fails
                    print(f"[{fig}] {e}")
                    failed.append(f"{fig}/{sweep} (aggregate)")
                except FileNotFoundError:  # --skip-runs on a figure never run
                    print(f"[{fig}] no sweep folder {runs / f'{args.protocol}_{sweep}'}")
            if spec.get("kind") == "table":  # scripts/report.py tabulates it
                continue
            try:  # a plotting problem must not cost the runs: fix it, then rerun with --skip-runs
                plot = _module(SCRIPTS / "figures" / f"{fig}.py")
                for path in plot.main(["--results", str(results), "--protocol", args.protocol]):
                    print(f"[{fig}] wrote {path}")
            except SystemExit as e:  # the figure script's one-line error
                print(f"[{fig}] plotting failed: {e}")
                failed.append(f"{fig}/plot")
            except Exception as e:
                print(f"[{fig}] plotting failed: {type(e).__name__}: {e}")
                failed.append(f"{fig}/plot")
    if logging_runs:
        total = sum(r["seconds"] for r in log_rows)
        print(f"sweeps took {total / 60:.1f} min this time; {log} lists every invocation")
    if failed:
        print(f"some jobs failed in: {', '.join(failed)} (rerun the same command to retry only those)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
