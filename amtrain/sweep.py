"""Sweeps (``amtrain -m``): every job checked before the first starts, a summary when they end.

Before Hydra launches anything, :func:`plan` expands the sweep as Hydra's basic sweeper
will (an experiment's ``hydra.sweeper.params``, then the command line), composes and
validates every job's config, and finds each job's folder. A bad point stops the sweep
with one line, before any job runs and before any file is written.

Each job tells how it ended (finished, skipped because finished already, running
elsewhere, failed, diverged, interrupted) in a small JSON report under
``<sweep dir>/.amtrain/reports/<token>/``, where the token names one invocation of
``amtrain -m`` (passed to the jobs in ``AMTRAIN_SWEEP_TOKEN``; joblib and submitit
workers inherit it). :func:`summary` reads the reports back in the launching process,
whichever launcher ran the jobs, and falls back on a job folder's ``DONE``/``FAILED``
where a job left no report (killed, or lost on a cluster).

:func:`expand` and :func:`job_dirname` also serve ``scripts/aggregate.py``, which lists
the jobs of a ``multirun.yaml`` that never started.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from amtrain.config import computed_config
from amtrain.errors import AmtrainError, ConfigError, DivergenceError, FolderBusy, Interrupted, failure_line
from amtrain.provenance import OTHER_CODE, OTHER_DATA, data_of_run, other_code

TOKEN_ENV = "AMTRAIN_SWEEP_TOKEN"
REPORTS = Path(".amtrain") / "reports"
# how a job ended -> the word the summary prints
STATUSES = ("finished", "skipped", "elsewhere", "failed", "diverged", "interrupted", "missing")


@dataclass
class Job:
    overrides: List[str]
    dir: Path
    seed: Optional[int] = None
    # jobs with the same key are one configuration's seeds, trainable together on a seed
    # axis (amtrain.seeds); None: this job runs alone
    seed_group: Optional[tuple] = None
    seeds_per_process: int = 1
    cfg: Optional[DictConfig] = field(default=None, repr=False, compare=False)  # as composed by plan()


@dataclass
class Plan:
    sweep_dir: Path
    jobs: List[Job]
    launcher: str = ""  # the composed hydra.launcher._target_ (wherever it was chosen)
    workers: int = 1  # jobs the launcher runs at once on this machine (parallel_jobs)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_jobs(launcher) -> int:
    """How many jobs a launcher config runs at once on this machine: joblib's ``n_jobs``
    (-1: every core, -2: all but one, as joblib counts), else 1 (the basic launcher runs
    them one after another; a cluster launcher gives each job an allocation of its own)."""
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return max(1, cores() + 1 + n_jobs if n_jobs < 0 else n_jobs)


# ----------------------------------------------------------------------------- the grid
def parse(lines: Sequence[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(lines))


def is_hydra_override(line: str) -> bool:
    """``hydra.*`` and ``hydra/...`` overrides configure Hydra itself: every job shares them."""
    key = line.split("=", 1)[0].lstrip("+~")
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def expand(params: Optional[Mapping[str, str]], arguments: Sequence[str]) -> List[List[str]]:
    """The sweep's jobs as Hydra's basic sweeper makes them: the product of the config's
    ``hydra.sweeper.params`` and the command line's (non-Hydra) overrides, a later key
    replacing an earlier one."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    lines = [f"{k}={v}" for k, v in (params or {}).items()] + [a for a in arguments if not is_hydra_override(a)]
    return [job for batch in BasicSweeper.split_arguments(parse(lines), None) for job in batch]


def job_dirname(job: Sequence[str], dirname_cfg) -> str:
    """``hydra.job.override_dirname`` of a job, as Hydra computes it (``dirname_cfg`` is
    ``hydra.job.config.override_dirname``)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(parse(job), exclude_keys=list(dirname_cfg.exclude_keys),
                                 item_sep=dirname_cfg.item_sep, kv_sep=dirname_cfg.kv_sep)


def plan(arguments: Sequence[str], compose: Callable[[List[str]], DictConfig]) -> Plan:
    """Every job of ``amtrain -m ARGUMENTS``, each composed and validated (ConfigError otherwise).

    ``compose(overrides)`` returns the config with its ``hydra`` node (amtrain.cli.compose_checked).
    """
    hydra_args = [a for a in arguments if is_hydra_override(a)]
    task_args = [a for a in arguments if not is_hydra_override(a)]
    fixed = [o.input_line for o in parse(task_args) if not o.is_sweep_override()]
    primary = compose(hydra_args + fixed)
    params = OmegaConf.to_container(primary.hydra.sweeper.params) if primary.hydra.sweeper.get("params") else None
    sweep_dir = Path(primary.hydra.sweep.dir).absolute()
    from amtrain.seeds import unsupported

    jobs = []
    for overrides in expand(params, task_args):
        cfg = compose(hydra_args + overrides)
        job = Job(overrides, (Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)).absolute(), int(cfg.seed),
                  cfg=cfg)
        if cfg.seeds_per_process > 1 and unsupported(cfg) is None:
            job.seed_group = tuple(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed")
            job.seeds_per_process = int(cfg.seeds_per_process)
        jobs.append(job)
    swept = [o.key_or_group for o in parse(task_args) if o.is_sweep_override()] + list(params or {})
    _one_job_per_folder(jobs, swept, list(primary.hydra.job.config.override_dirname.exclude_keys))
    return Plan(sweep_dir, jobs, str(primary.hydra.launcher.get("_target_", "")), parallel_jobs(primary.hydra.launcher))


def _one_job_per_folder(jobs: Sequence[Job], swept: Sequence[str], unnamed: Sequence[str]) -> None:
    """ConfigError when two points of a sweep would run in one folder, one over the other: a value
    given twice (``seed=0,0``; ``optim.lr=0.1,0.10`` is one value), or a key that folder names
    leave out (``unnamed``, e.g. ``device=cpu,auto``). ``swept``: the keys the sweep varies."""
    key = lambda o: o.split("=", 1)[0].lstrip("+~")  # noqa: E731
    first: dict = {}
    for job in jobs:
        other = first.setdefault(job.dir, job)
        if other is job:
            continue
        a = [o for o in other.overrides if o not in job.overrides]
        b = [o for o in job.overrides if o not in other.overrides]
        if not a and not b:
            point = " ".join(o for o in job.overrides if key(o) in swept)
            raise ConfigError(f"the sweep has the point {point} twice: give each value once")
        hidden = sorted({key(o) for o in a + b} & set(unnamed))
        verb, it = ("is", "it") if len(hidden) == 1 else ("are", "them")
        if not hidden:  # a hydra.sweep.subdir of the user's
            raise ConfigError(f"{' '.join(a)} and {' '.join(b)} would run in one folder, {job.dir}: make "
                              "hydra.sweep.subdir tell the sweep's points apart")
        raise ConfigError(f"{' '.join(a)} and {' '.join(b)} would run in one folder, one over the other: "
                          f"{' and '.join(hidden)} {verb} not part of a job's folder name "
                          f"(hydra.job.config.override_dirname.exclude_keys), so sweep over {it} in separate sweeps "
                          "(name=...)")


# What launching a job would do with its folder now (scripts/reproduce.py's look before it runs)
FOLDER_STATES = ("finished", "different", "rerun", "elsewhere", "checkpoint", "to run")


def folder_state(job: Job) -> Tuple[str, str]:
    """(state, detail) of the folder of a planned job, as :func:`amtrain.train.run` would find it,
    writing nothing: ``finished`` (skipped), ``different`` (finished with another configuration:
    the job would fail; detail: what differs), ``rerun`` (finished, but resume=false), ``elsewhere``
    (another process holds it; detail: which), ``checkpoint`` (a stopped run that goes on from its
    checkpoint if it still fits), or ``to run``."""
    from amtrain.checkpoint import NAME as CHECKPOINT
    from amtrain.rundir import DONE, holder
    from amtrain.train import differences

    busy = holder(job.dir)
    if busy is not None:
        return "elsewhere", busy
    if (job.dir / DONE).exists():
        if not job.cfg.resume:
            return "rerun", ""
        try:
            changed = differences(job.dir, job.cfg)
        except AmtrainError:
            return "different", "its config.yaml cannot be read"
        if changed:
            return "different", changed
        return "finished", "; ".join(w for w in (other_code(job.dir), other_data(job)) if w)
    return ("checkpoint" if (job.dir / CHECKPOINT).exists() else "to run"), ""


_DATA_NOW: dict = {}  # a dataset config (as JSON) -> the fingerprint of what its files hold now


def other_data(job: Job) -> Optional[str]:
    """Words for a finished job whose run read other data than its dataset's files hold now
    (replaced under the same name since: a re-download, another copy), else None. Loads each
    dataset once per process, and only for jobs whose run recorded its data; a dataset that
    cannot be loaded now (missing files: its runs say so) is not compared."""
    from amtrain.data import build_data

    then = data_of_run(job.dir)
    if not then:
        return None
    dataset = OmegaConf.to_container(job.cfg.dataset, resolve=True)
    if "download" in dataset:
        dataset["download"] = False  # look, never fetch
    dataset.update({k: v for k, v in (("train_size", None), ("val_size", 0)) if k in dataset})  # before any subset
    key = json.dumps(dataset, sort_keys=True, default=str)
    if key not in _DATA_NOW:
        try:
            _DATA_NOW[key] = build_data(OmegaConf.create(dataset)).identity
        except (AmtrainError, OSError):
            _DATA_NOW[key] = None
    now = _DATA_NOW[key]
    if now is None or now == then:
        return None
    return f"{OTHER_DATA} ({then[:8]} then, {now[:8]} now)"


def finished_on_other_data(the_plan: Plan) -> Optional[str]:
    """One line when this sweep would run jobs beside finished ones (which it skips) that read
    other data than the dataset's files hold now: the new runs would read the new files and be
    averaged or compared with the old (aggregate.py refuses seeds of one configuration that read
    two datasets, but only after the sweep has spent its time). None otherwise; a sweep with
    nothing left to run loads no data to check."""
    from amtrain.rundir import DONE

    finished = [job for job in the_plan.jobs if job.cfg.resume and (job.dir / DONE).exists()]
    if len(finished) == len(the_plan.jobs):
        return None
    moved = [(job, why) for job in finished for why in [other_data(job)] if why]
    if not moved:
        return None
    job, why = moved[0]  # why: "on other data (<then> then, <now> now)"
    return (f"{plural(len(moved), 'finished job')} of this sweep read other data than the dataset's files hold now "
            f"(the first, {_short(job.dir)}: {why[len(OTHER_DATA) + 2:-1]}): the jobs still to run would read "
            "these files and be averaged with them; point AMTRAIN_DATA (or dataset.root) back at the files they "
            "read, or redo them with resume=false; `--cfg job` lists them")


def preview(the_plan: Plan) -> str:
    """What ``amtrain -m ... --cfg job`` prints: each job's folder, what running the sweep now
    would do with it (:func:`folder_state`) and its seed group, if any. Runs and writes nothing."""
    group_of = {job.dir: k for k, group in enumerate(seed_groups(the_plan), 1) for job in group}
    rows = [(job, *folder_state(job)) for job in the_plan.jobs]
    counts = {s: sum(r[1] == s for r in rows) for s in FOLDER_STATES}
    n_groups, alone = len(set(group_of.values())), len(rows) - len(group_of)
    groups = f" in {plural(n_groups, 'seed group')}" + (f" and {plural(alone, 'single run')}" if alone else "") \
        if group_of else ""
    lines = [f"sweep {_short(the_plan.sweep_dir)}: {len(rows)} jobs{groups}: "
             + ", ".join(f"{counts[s]} {s}" for s in FOLDER_STATES if counts[s])]
    for job, state, detail in rows:
        group = f" [seed group {group_of[job.dir]}]" if job.dir in group_of else ""
        lines.append(f"  {state:<11} {_short(job.dir)}{group}" + (f": {detail}" if detail else ""))
    lines.append("(nothing was run: with -m, --cfg lists the jobs; without -m, `amtrain --cfg job` and one "
                 "point's overrides print that job's config)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- seed groups
GROUPS = Path(".amtrain") / "groups"
PLANNED = Path(".amtrain") / "planned"


def seed_groups(the_plan: Plan) -> List[List[Job]]:
    """The plan's jobs that train together: one configuration's seeds, in the sweep's order,
    in groups of at most ``seeds_per_process`` (groups of one are left out: those seeds run alone).

    A group is one process on one worker, so a configuration's seeds are also split into
    enough groups for every worker of a parallel launcher to have one: with two workers,
    one configuration's five seeds train as 3 + 2, not 5 on one core beside an idle one.
    Groups of different configurations can differ in length several-fold (the full
    protocol's Figure 8: AM-Adam's group of 5 seeds trained 2.5x as long as Adam's, and ran
    on one core for 7 of its 12 minutes), so when the groups come from several
    configurations they are split until there are two for every worker: a worker that
    ends a short group takes another rather than waiting. Groups of a configuration differ
    in size by one at most."""
    by_key: dict = {}
    for job in the_plan.jobs:
        if job.seed_group is not None:
            by_key.setdefault(job.seed_group, []).append(job)
    n_configs, workers = len(by_key), the_plan.workers
    wanted = 2 * workers if n_configs > 1 and workers > 1 else workers  # groups in all
    groups = []
    for jobs in by_key.values():
        k = len(jobs)
        parts = max(-(-k // jobs[0].seeds_per_process), -(-wanted // n_configs))
        sizes = [k // parts + (i < k % parts) for i in range(min(parts, k))]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        groups += [jobs[a:a + n] for a, n in zip(starts, sizes) if n > 1]
    return groups


def write_groups(the_plan: Plan, token: str) -> None:
    """Tell this invocation's jobs which folders each trains with, and what config each was planned
    with (both read by :func:`run_job`)."""
    table = {str(job.dir): [{"seed": j.seed, "dir": str(j.dir), "overrides": list(j.overrides)} for j in group]
             for group in seed_groups(the_plan) for job in group}
    planned = {str(job.dir): computed_config(job.cfg) for job in the_plan.jobs if job.cfg is not None}
    for folder, content in ((GROUPS, table), (PLANNED, planned)):
        path = the_plan.sweep_dir / folder / f"{token}.json"
        _write_whole(path, json.dumps(content, default=str))


def changed_since_planned(sweep_dir: Path, job_dir: Path, cfg: DictConfig) -> Optional[str]:
    """Words on how ``cfg``, as the job composed it at its start, differs from the config the sweep
    planned for it (a file under conf/ edited while the sweep ran), else None."""
    token = os.environ.get(TOKEN_ENV)
    try:
        planned = json.loads((Path(sweep_dir) / PLANNED / f"{token}.json").read_text())[str(Path(job_dir).absolute())]
    except (OSError, ValueError, KeyError, TypeError):  # not planned by amtrain -m (or an older one)
        return None
    now = json.loads(json.dumps(computed_config(cfg), default=str))  # the same JSON round trip as the plan's
    keys = sorted(k for k in planned.keys() | now.keys() if planned.get(k) != now.get(k))
    if not keys:
        return None
    shown = ", ".join(f"{k}: {planned.get(k, '<absent>')!r} then, {now.get(k, '<absent>')!r} now" for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _group_of(sweep_dir: Path, job_dir: Path) -> Optional[list]:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return None
    try:
        table = json.loads((Path(sweep_dir) / GROUPS / f"{token}.json").read_text())
    except (OSError, ValueError):
        return None
    return table.get(str(Path(job_dir).absolute()))


# ----------------------------------------------------------------------------- reports
def _write_whole(path: Path, text: str) -> None:
    """Write ``path`` so that other processes see it whole or not at all (a file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def new_token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _report_path(sweep_dir: Path, token: str, job_dir: Path) -> Path:
    name = hashlib.sha1(str(Path(job_dir).absolute()).encode()).hexdigest()[:16]
    return Path(sweep_dir) / REPORTS / token / f"{name}.json"


def report(sweep_dir, job_dir, status: str, reason: str = "") -> None:
    """Record how one job of this invocation ended (no-op outside ``amtrain -m``)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return
    path = _report_path(Path(sweep_dir), token, job_dir)
    _write_whole(path, json.dumps({"dir": str(job_dir), "status": status, "reason": reason}))


def _reported(sweep_dir: Path, job_dir: Path) -> bool:
    token = os.environ.get(TOKEN_ENV)
    return bool(token) and _report_path(Path(sweep_dir), token, job_dir).exists()


def _claim_path(sweep_dir: Path, job_dir: Path) -> Optional[Path]:
    token = os.environ.get(TOKEN_ENV)
    return _report_path(Path(sweep_dir), token, job_dir).with_suffix(".claim") if token else None


def _claim(sweep_dir: Path, job_dir: Path) -> None:
    """Mark a folder as trained by this process for this invocation (its own job leaves it alone).
    The claim names the process as the folder's lock does (:func:`amtrain.rundir.this_process`)."""
    from amtrain.rundir import this_process

    path = _claim_path(sweep_dir, job_dir)
    if path is not None:
        _write_whole(path, this_process())  # _claimed compares its words with the lock's


def _claimed(sweep_dir: Path, job_dir: Path, wait_s: float = 2.0) -> bool:
    """True when another process of this invocation trains ``job_dir``, or has trained and
    reported it: its claim (which may follow its lock by a moment, so look for up to ``wait_s``)
    names the process that holds the folder's lock now, or the folder has its report.

    A claim whose process was killed before it reported (an OOM kill, one job of an array) is
    not: if another process holds the folder now (a second invocation of the same sweep), the
    folder is running elsewhere, and the jobs of its group go on with their other folders."""
    import time

    from amtrain.rundir import holder

    path = _claim_path(sweep_dir, job_dir)
    deadline = time.monotonic() + wait_s
    while path is not None:
        if path.exists():
            now = holder(job_dir)  # before the report: a claimer reports before it lets go of the lock
            claimer = path.read_text().strip()
            return (now is not None and now.startswith(claimer + " ")) or _reported(sweep_dir, job_dir)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return False


def _stamp(path: Path) -> Optional[Tuple[int, int]]:
    """Which file ``path`` is (inode, mtime): None while there is none."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _report_outcome(sweep_dir: Path, job_dir: Path, outcome, failed_before: Optional[Tuple[int, int]]) -> None:
    """The report of one job from its outcome: a RunResult, or the exception that ended it.
    ``failed_before``: the folder's FAILED (:func:`_stamp`) when the job started: that file, if
    it is still there, is an earlier attempt's and says nothing about this one."""
    import logging

    log = logging.getLogger("amtrain")
    if isinstance(outcome, FolderBusy):
        log.info("%s", outcome)
        report(sweep_dir, job_dir, "elsewhere", str(outcome))
    elif isinstance(outcome, DivergenceError):
        log.info("job %s diverged: %s", job_dir, outcome)
        report(sweep_dir, job_dir, "diverged", str(outcome))
    elif isinstance(outcome, AmtrainError):
        log.info("job %s failed: %s", job_dir, outcome)
        report(sweep_dir, job_dir, "failed", str(outcome))
    elif isinstance(outcome, (KeyboardInterrupt, Interrupted)):
        report(sweep_dir, job_dir, "interrupted", getattr(outcome, "how", "Ctrl-C"))
    elif isinstance(outcome, BaseException):  # a bug, or the launcher stopping the job
        failed = Path(job_dir) / "FAILED"
        # the run wrote where it stopped into FAILED; before its run began (SLURM's warning signal
        # while the job still imported torch), there is no FAILED of this attempt to point to
        first = _first_line(failed) if _stamp(failed) not in (None, failed_before) else None
        reason = f"{first} (traceback in {failed})" if first else failure_line(outcome)
        log.info("job %s failed: %s", job_dir, reason)
        report(sweep_dir, job_dir, "failed", reason)
    elif outcome.status == "finished":
        resumed = getattr(outcome, "resumed_after", None)
        report(sweep_dir, job_dir, "finished", "" if resumed is None else _resumed_line(job_dir, resumed))
    else:
        other = other_code(job_dir)
        report(sweep_dir, job_dir, "skipped", f"finished already (DONE){', ' + other if other else ''}; "
                                              "resume=false reruns it")


def _resumed_line(job_dir: Path, epoch: int) -> str:
    """The summary's word on a run that went on from a checkpoint: its last one, and how many times
    it went on in all (a job requeued again and again: each attempt wrote a line to train.log)."""
    try:
        times = (Path(job_dir) / "train.log").read_text(errors="replace").count("from its checkpoint after epoch")
    except OSError:
        times = 1
    more = f" (the last of {times} times; train.log has each)" if times > 1 else ""
    return f"went on from its checkpoint after epoch {epoch}{more}"


def run_job(run: Callable, cfg: DictConfig, out_dir: Path, sweep_dir: Path, extra_files,
            files_for: Optional[Callable] = None, setup: Optional[Callable[[], None]] = None) -> None:
    """One job of a sweep: run it, report how it ended, and let the sweep go on (except on Ctrl-C).

    ``setup`` (torch's threads, and its import: seconds on a loaded node) runs first, inside the
    same reporting: a job stopped there is reported like one stopped while training.
    A job of a seed group (:func:`seed_groups`) trains every seed of its group whose folder it
    can lock, on a seed axis, and reports each; a job whose folder a group member of this
    invocation has trained, or is training, leaves it to that one."""
    import logging

    log = logging.getLogger("amtrain")
    if _reported(sweep_dir, out_dir):
        log.info("job %s: trained on a seed axis with another seed of its group", out_dir)
        return
    failed_before = _stamp(Path(out_dir) / "FAILED")
    group = _group_of(sweep_dir, out_dir)
    changed = changed_since_planned(sweep_dir, out_dir, cfg)
    if changed:  # a file under conf/ was edited while the sweep ran: this job would compute something else
        _report_outcome(sweep_dir, out_dir, ConfigError(
            f"the config files changed after this sweep started ({changed}): put them back to finish the sweep "
            "as planned, or rerun it (resume=false redoes the jobs that finished before)"), failed_before)
        return
    try:
        if setup is not None:
            setup()
        if not group:
            outcome = run(cfg, out_dir, extra_files)
    except (KeyboardInterrupt, Interrupted) as e:
        report(sweep_dir, out_dir, "interrupted", getattr(e, "how", "Ctrl-C"))
        raise
    except Exception as e:  # reported; the sweep goes on
        outcome = e
    else:
        if group:  # each member's outcome is reported as it comes
            return _run_group(cfg, Path(out_dir), Path(sweep_dir), group, files_for)
    _report_outcome(sweep_dir, out_dir, outcome, failed_before)


def _run_group(cfg: DictConfig, out_dir: Path, sweep_dir: Path, group: list, files_for: Optional[Callable]) -> None:
    from amtrain.seeds import run_seeds

    members = [m for m in group if not _reported(sweep_dir, Path(m["dir"]))]
    failed_before = {Path(m["dir"]): _stamp(Path(m["dir"]) / "FAILED") for m in members}
    cfgs, dirs, files = [], [], []
    for m in members:
        member_cfg = cfg.copy()
        member_cfg.seed = int(m["seed"])
        cfgs.append(member_cfg)
        dirs.append(Path(m["dir"]))
        files.append(files_for(member_cfg, m["overrides"], Path(m["dir"])) if files_for else None)
    def on_outcome(d: Path, outcome) -> None:
        if isinstance(outcome, FolderBusy):
            # another job of this invocation trains it and reports it; only this job's own folder,
            # held by someone else, is this job's to report
            if d == out_dir and not _claimed(sweep_dir, d):
                _report_outcome(sweep_dir, d, outcome, failed_before[d])
        elif not _reported(sweep_dir, d):  # (under the folder's lock: a job that ran it has reported)
            _report_outcome(sweep_dir, d, outcome, failed_before[d])

    try:
        run_seeds(cfgs, dirs, files, on_claim=lambda path: _claim(sweep_dir, path), on_outcome=on_outcome,
                  group_trainer=lambda path: _claimed(sweep_dir, path))
    except (KeyboardInterrupt, Interrupted) as e:
        for d in dirs:
            if (d / "FAILED").exists() and not (d / "DONE").exists():
                report(sweep_dir, d, "interrupted", getattr(e, "how", "Ctrl-C"))
        raise
    except Exception as e:  # before any seed started (each started seed's outcome is its own)
        for d in dirs:
            on_outcome(d, e)


# ----------------------------------------------------------------------------- launchers
# sbatch's refusals, and the launcher key that asks for what was refused
SBATCH_REFUSALS = [
    ("invalid partition", "hydra.launcher.partition: the partitions are listed by `sinfo`"),
    ("generic resource", "hydra.launcher.gpus_per_node / gres: this partition has no such GPUs"),
    ("gres", "hydra.launcher.gpus_per_node / gres: this partition has no such GPUs"),
    ("memory specification", "hydra.launcher.mem_gb: more memory than a node of the partition has"),
    ("requested node configuration is not available", "hydra.launcher.cpus_per_task, gpus_per_node or mem_gb: "
                                                      "no node of the partition has that much"),
    ("invalid account", "hydra.launcher.account"),
    ("invalid qos", "hydra.launcher.qos"),
    ("time limit", "hydra.launcher.timeout_min: above the partition's limit"),
]


def explain_launcher_error(err: Exception) -> Tuple[str, int]:
    """One line for an error raised while the launcher submitted or collected the jobs, and its exit code."""
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if type(err).__name__ == "FailedJobError" and "sbatch" in text:
        refused = next((ln for ln in lines if ln.startswith("sbatch: error:")
                        and "Batch job submission failed" not in ln), lines[0] if lines else text)
        low = text.lower()
        key = next((k for pattern, k in SBATCH_REFUSALS if pattern in low), "the hydra.launcher settings")
        return f"SLURM refused the jobs ({refused}): fix {key}", 2
    first = lines[0] if lines else type(err).__name__
    if type(err).__name__ == "UncompletedJobError":  # submitit: a job ended without its result (cancelled, killed)
        return (f"the scheduler ended a job without its result ({first}): see the list above; rerun the same "
                "command to retry the jobs that did not finish"), 1
    return f"the launcher stopped ({type(err).__name__}: {first}); the jobs' own state is listed above", 1


class _OnceFilter:
    """Lets the first of a repeated log message through, reworded, and drops the rest."""

    def __init__(self, needle: str, say: str):
        self.needle, self.say, self.seen = needle, say, False

    def filter(self, record) -> bool:
        if self.needle not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg, record.args = self.say, ()
        return True


def adapt_to_slurm() -> None:
    """Make submitit work on a cluster without accounting, in the launching process.

    submitit asks ``sacct`` for the state of its jobs. Where accounting is off, sacct fails on
    every poll: submitit warns each time and never learns that a job was cancelled, killed
    or timed out, so the sweep waits forever. Here its watcher falls back on ``squeue``,
    which lists finished jobs for MinJobAge seconds (a job it no longer lists has ended),
    and the warning is said once. submitit's records go to amtrain's console log alone
    (stdout), not to its own two handlers (one on stderr, which carries only problems)."""
    import logging

    import submitit  # noqa: F401  (configures its logger on import)
    from submitit.slurm import slurm

    logger = logging.getLogger("submitit")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addFilter(_OnceFilter("Bypassing sacct error", "sacct is unavailable on this cluster (no accounting): "
                                                          "job states come from squeue (said once)"))
    if not isinstance(slurm.SlurmJob.watcher, _squeue_watcher_class()):
        slurm.SlurmJob.watcher = _squeue_watcher_class()(delay_s=600)


def _squeue_watcher_class():
    """SqueueWatcher, made on first use (submitit is imported only for SLURM sweeps)."""
    global _SqueueWatcher
    if _SqueueWatcher is not None:
        return _SqueueWatcher
    from submitit.slurm import slurm

    class SqueueWatcher(slurm.SlurmInfoWatcher):
        """submitit's sacct watcher, asking squeue when sacct fails."""

        def __init__(self, delay_s: int = 60):
            super().__init__(delay_s=delay_s)
            self.seen: set = set()

        def update(self) -> None:
            before = self._output
            super().update()
            if self._output is not before:  # sacct answered
                return
            unknown = self._registered - self._finished
            if not unknown:
                return
            ids = ",".join(sorted({j.split("_")[0] for j in unknown}))
            try:
                out = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%N", "-j", ids],
                                     capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                return
            if out.returncode != 0:
                return
            listed = {}
            for line in out.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 3 and parts[1]:
                    listed[parts[0]] = {"JobID": parts[0], "State": parts[1].split()[0], "NodeList": parts[2]}
            for job in unknown:
                if job in listed:
                    self.seen.add(job)
                    self._info_dict[job] = listed[job]
                elif job in self.seen:  # listed before, gone now: it ended more than MinJobAge ago
                    self._info_dict[job] = {"JobID": job, "State": "COMPLETED", "NodeList": ""}
            for job in self._registered - self._finished:
                if self.is_done(job, mode="cache"):
                    self._finished.add(job)

    _SqueueWatcher = SqueueWatcher
    return SqueueWatcher


_SqueueWatcher = None


@contextlib.contextmanager
def dropping_stderr(prefixes: Sequence[str]):
    """Drop the lines starting with ``prefixes`` from everything written to file descriptor 2
    while the block runs: by this process and by the commands it starts (sbatch echoes its
    refusal before submitit raises it, which the one-line error then states; sacct says
    "Slurm accounting storage is disabled" on every poll). Everything else passes through."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as src:
            for line in src:
                if not line.decode(errors="replace").startswith(tuple(prefixes)):
                    os.write(real, line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer gone: the pump sees the end
        thread.join(timeout=5)
        os.close(real)


# ----------------------------------------------------------------------------- summary
def _scheduler_reason(sweep_dir: Path, job_dir: Path) -> Optional[str]:
    """What SLURM said about a job that ended without a report, from submitit's logs."""
    folder = Path(sweep_dir) / ".submitit"
    if not folder.is_dir():
        return None
    for out in folder.glob("*/*_log.out"):
        try:
            if str(job_dir) not in out.read_text(errors="replace"):
                continue
            err = out.with_name(out.name.replace("_log.out", "_log.err")).read_text(errors="replace")
        except OSError:
            continue
        for pattern, why in (("DUE TO TIME LIMIT", "killed by SLURM at its time limit (hydra.launcher.timeout_min)"),
                             ("DUE TO PREEMPTION", "preempted by SLURM"), ("CANCELLED", "cancelled (scancel)"),
                             ("oom", "killed for memory (hydra.launcher.mem_gb)")):
            if pattern in err:
                return why
    return None


def _first_line(path: Path) -> Optional[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return lines[0] if lines else None


def _fallback(job_dir: Path, sweep_dir: Optional[Path] = None) -> Tuple[str, str]:
    """How a job that left no report stands, from its folder (and the scheduler's logs)."""
    if (job_dir / "DONE").exists():
        return "finished", "finished (no report from its process)"
    failed = job_dir / "FAILED"
    if failed.exists():
        return "failed", _first_line(failed) or "failed"
    why = _scheduler_reason(sweep_dir, job_dir) if sweep_dir is not None else None
    return "missing", why or "no report and no DONE: the job was killed, or never started"


def summary(the_plan: Plan, token: str, width: int = 30) -> Tuple[str, int]:
    """The sweep's one-screen summary and the exit code it implies."""
    rows = []
    for job in the_plan.jobs:
        path = _report_path(the_plan.sweep_dir, token, job.dir)
        try:
            rep = json.loads(path.read_text())
            status, reason = rep["status"], rep["reason"]
        except (OSError, ValueError, KeyError):
            status, reason = _fallback(job.dir, the_plan.sweep_dir)
        rows.append((status, job.dir, reason))
    shutil.rmtree(the_plan.sweep_dir / REPORTS / token, ignore_errors=True)
    for folder in (GROUPS, PLANNED):
        (the_plan.sweep_dir / folder / f"{token}.json").unlink(missing_ok=True)
    counts = {s: sum(r[0] == s for r in rows) for s in STATUSES}
    words = {"finished": "finished", "skipped": "skipped (finished before)", "elsewhere": "running elsewhere",
             "failed": "failed", "diverged": "diverged", "interrupted": "interrupted",
             "missing": "no result"}
    head = f"sweep {_short(the_plan.sweep_dir)}: {len(rows)} jobs: " + ", ".join(
        f"{counts[s]} {words[s]}" for s in STATUSES if counts[s])
    problems = ("failed", "diverged", "interrupted", "missing", "elsewhere")
    shown = rows if len(rows) <= width else [r for r in rows if r[0] in problems or OTHER_CODE in r[2]]
    lines = [head] + [f"  {s:<11} {_short(d)}" + (f": {why}" if why else "") for s, d, why in shown]
    if len(shown) < len(rows):
        lines.append(f"  ({len(rows) - len(shown)} finished or skipped jobs not listed)")
    bad = [r for r in rows if r[0] in ("failed", "diverged", "interrupted", "missing")]
    if not bad:
        return "\n".join(lines), 0
    kinds = {r[0] for r in bad}
    code = 3 if kinds == {"diverged"} else 130 if kinds == {"interrupted"} else 1
    return "\n".join(lines), code


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _short(path: Path) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)
