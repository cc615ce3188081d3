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

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from amtrain.errors import AmtrainError, DivergenceError, FolderBusy, Interrupted

TOKEN_ENV = "AMTRAIN_SWEEP_TOKEN"
REPORTS = Path(".amtrain") / "reports"
# how a job ended -> the word the summary prints
STATUSES = ("finished", "skipped", "elsewhere", "failed", "diverged", "interrupted", "missing")


@dataclass
class Job:
    overrides: List[str]
    dir: Path


@dataclass
class Plan:
    sweep_dir: Path
    jobs: List[Job]


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
    jobs = []
    for overrides in expand(params, task_args):
        cfg = compose(hydra_args + overrides)
        jobs.append(Job(overrides, (Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)).absolute()))
    return Plan(sweep_dir, jobs)


# ----------------------------------------------------------------------------- reports
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"dir": str(job_dir), "status": status, "reason": reason}))
    os.replace(tmp, path)


def run_job(run: Callable, cfg: DictConfig, out_dir: Path, sweep_dir: Path, extra_files) -> None:
    """One job of a sweep: run it, report how it ended, and let the sweep go on (except on Ctrl-C)."""
    import logging

    log = logging.getLogger("amtrain")
    try:
        result = run(cfg, out_dir, extra_files)
    except FolderBusy as e:
        log.info("%s", e)
        report(sweep_dir, out_dir, "elsewhere", str(e))
    except DivergenceError as e:
        log.info("job %s diverged: %s", out_dir, e)
        report(sweep_dir, out_dir, "diverged", str(e))
    except AmtrainError as e:
        log.info("job %s failed: %s", out_dir, e)
        report(sweep_dir, out_dir, "failed", str(e))
    except (KeyboardInterrupt, Interrupted) as e:
        report(sweep_dir, out_dir, "interrupted", getattr(e, "how", "Ctrl-C"))
        raise
    except Exception as e:  # a bug: its traceback is in the job's FAILED; the sweep goes on
        log.info("job %s failed: %s: %s", out_dir, type(e).__name__, e)
        report(sweep_dir, out_dir, "failed", f"{type(e).__name__}: {e} (traceback in {out_dir / 'FAILED'})")
    else:
        report(sweep_dir, out_dir, "finished" if result.status == "finished" else "skipped",
               "" if result.status == "finished" else "finished already (DONE); resume=false reruns it")


# ----------------------------------------------------------------------------- summary
def _fallback(job_dir: Path) -> Tuple[str, str]:
    """How a job that left no report stands, from its folder."""
    if (job_dir / "DONE").exists():
        return "finished", "finished (no report from its process)"
    failed = job_dir / "FAILED"
    if failed.exists():
        first = failed.read_text(errors="replace").splitlines()[:1]
        return "failed", first[0] if first else "failed"
    return "missing", "no report and no DONE: the job was killed, or never started"


def summary(the_plan: Plan, token: str, width: int = 30) -> Tuple[str, int]:
    """The sweep's one-screen summary and the exit code it implies."""
    rows = []
    for job in the_plan.jobs:
        path = _report_path(the_plan.sweep_dir, token, job.dir)
        try:
            rep = json.loads(path.read_text())
            status, reason = rep["status"], rep["reason"]
        except (OSError, ValueError, KeyError):
            status, reason = _fallback(job.dir)
        rows.append((status, job.dir, reason))
    shutil.rmtree(the_plan.sweep_dir / REPORTS / token, ignore_errors=True)
    counts = {s: sum(r[0] == s for r in rows) for s in STATUSES}
    words = {"finished": "finished", "skipped": "skipped (finished before)", "elsewhere": "running elsewhere",
             "failed": "failed", "diverged": "diverged", "interrupted": "interrupted",
             "missing": "no result"}
    head = f"sweep {_short(the_plan.sweep_dir)}: {len(rows)} jobs: " + ", ".join(
        f"{counts[s]} {words[s]}" for s in STATUSES if counts[s])
    problems = ("failed", "diverged", "interrupted", "missing", "elsewhere")
    shown = rows if len(rows) <= width else [r for r in rows if r[0] in problems]
    lines = [head] + [f"  {s:<11} {_short(d)}" + (f": {why}" if why else "") for s, d, why in shown]
    if len(shown) < len(rows):
        lines.append(f"  ({len(rows) - len(shown)} finished or skipped jobs not listed)")
    bad = [r for r in rows if r[0] in ("failed", "diverged", "interrupted", "missing")]
    if not bad:
        return "\n".join(lines), 0
    kinds = {r[0] for r in bad}
    code = 3 if kinds == {"diverged"} else 130 if kinds == {"interrupted"} else 1
    return "\n".join(lines), code


def _short(path: Path) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)
