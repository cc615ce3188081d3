"""The ``amtrain`` command: a thin Hydra wrapper around :func:`amtrain.train.run`.

Before Hydra starts, :func:`main` checks what it was given, so that every mistake is one
line (problem and fix) with a non-zero exit, and nothing is written:

* a single run, ``--cfg`` and every point of a ``-m`` sweep are composed and validated
  (:func:`amtrain.config.validate`);
* the output folder is checked for writing; a single run's default folder is claimed
  atomically, with a ``_2``, ``_3`` suffix when another run took that name first;
* ``--help`` prints every key with its help line and the value this run would use.

Then Hydra runs the job(s) through :func:`hydra_main`. A sweep ends with a summary of
every job (:mod:`amtrain.sweep`). Exit codes: 0 done, 2 bad input, 3 diverged, 75 the
run folder is in use by another process, 130 Ctrl-C (143 SIGTERM), 1 anything else.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from amtrain import sweep
from amtrain.allocator import keep_freed_memory
from amtrain.config import OPTIONAL_GROUPS, REQUIRED_GROUPS, register_configs, validate
from amtrain.errors import AmtrainError, ConfigError, Interrupted
from amtrain.provenance import other_code
from amtrain.rundir import claim_new, ensure_writable

CONFIG_MODULE = "amtrain.conf"
register_configs()
log = logging.getLogger("amtrain")


def command() -> List[str]:
    """How to start ``amtrain`` from Python: the console script next to this interpreter,
    else the one on PATH, else ``python -m amtrain``."""
    import shutil

    script = Path(sys.executable).parent / "amtrain"
    if script.exists():
        return [str(script)]
    found = shutil.which("amtrain")
    return [found] if found else [sys.executable, "-m", "amtrain"]


def compose(overrides: List[str], config_name: str = "config", hydra_node: bool = False) -> DictConfig:
    """The config ``amtrain OVERRIDES`` would run (for tests and tools); ``hydra_node`` keeps ``cfg.hydra``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a running Hydra app: use its loader
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node)


def check_deletions(overrides: Sequence[str]) -> None:
    """``~key`` and ``group=null`` leave a key or a config group out. Only the optional groups may be
    left out; anything else would fail later, inside Hydra or the run, with no word on the key."""
    from amtrain.helptext import group_options

    for o in overrides:
        key, _, value = o.lstrip("+").partition("=")
        deleted = key.startswith("~")
        key = key.lstrip("~")
        if not deleted and not (value == "null" and key in REQUIRED_GROUPS + OPTIONAL_GROUPS):
            continue
        if key in REQUIRED_GROUPS:
            raise ConfigError(f"{o}: a run cannot go without its {key}; choose one with {key}=NAME: "
                              f"{', '.join(group_options(key))}")
        if key in OPTIONAL_GROUPS:
            if not deleted:
                raise ConfigError(f"{o}: a config group is left out with ~{key} (Hydra's delete), not set to null")
            continue
        raise ConfigError(f"{o} deletes a setting every run needs: give it a value ({key}=...) instead; "
                          "`amtrain --help` lists every key and its default")


def compose_checked(overrides: List[str]) -> DictConfig:
    """compose + validate, with the ``hydra`` node; any problem is one ConfigError line."""
    check_deletions(overrides)
    try:
        cfg = compose(overrides, hydra_node=True)
    except Exception as e:  # Hydra and OmegaConf raise many types here
        raise ConfigError(explain(e)) from None
    validate(cfg, OmegaConf.to_container(cfg.hydra.runtime.choices))
    return cfg


def explain(err: Exception) -> str:
    """One line naming the problem in a composition error, and the fix."""
    text = str(err)
    m = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if m:
        group, option = m.group(1), m.group(2)
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        choices = f"; choose one of: {', '.join(options)}" if options else ""
        return f"unknown {group} '{option}'{choices}"
    m = re.search(r"Key '([^']+)' not in '([^']+)'|Could not override '([^']+)'", text)
    if m:
        key = m.group(3) or (f"{m.group(2)}.{m.group(1)}" if m.group(2) else m.group(1))
        return f"unknown config key '{key}': check the spelling with `amtrain --help`"
    m = re.search(r"Could not append to config. An item is already at '([^']+)'", text)
    if m:
        return f"'+{m.group(1)}=...' adds a key that exists: write {m.group(1)}=... without the +"
    m = re.search(r"Ambiguous value for argument '([^']+)'", text)
    if m:
        return f"'{m.group(1)}' is a sweep (a list of values): add -m to run it as a sweep"
    first_line = text.splitlines()[0] if text else type(err).__name__
    for e in (err, err.__cause__):  # OmegaConf's validation errors carry the key and a message
        if e is not None and getattr(e, "full_key", None):
            msg = str(getattr(e, "msg", None) or e).splitlines()[0]
            listed = re.match(r"Value '\[(.*)\]' of type 'list'", msg)
            if listed:  # key=[a,b]: a run takes one value; a sweep runs each
                values = ",".join(v.strip() for v in listed.group(1).split(","))
                together = " (its seeds train together, on a seed axis where the method allows)" \
                    if e.full_key == "seed" else ""
                return (f"'{e.full_key}' takes one value, not a list: to run each of [{values}], make it a sweep: "
                        f"amtrain -m {e.full_key}={values}{together}")
            return f"bad value for '{e.full_key}': {msg}"
    return first_line


# ----------------------------------------------------------------------------- the job
_last = {"error": None, "result": None}


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    hc_node = OmegaConf.to_container(hc)
    extra = hydra_files(cfg, hc_node)  # Hydra's .hydra/ files, written by run() once it holds the folder
    if hc.mode == RunMode.MULTIRUN:
        def files_for(member_cfg: DictConfig, overrides: List[str], member_dir: Path) -> dict:
            """A seed-group member's .hydra/ files: this job's, with its own overrides and folder."""
            node = OmegaConf.to_container(OmegaConf.create(hc_node))
            node["overrides"]["task"] = list(overrides)
            node["runtime"]["output_dir"] = str(member_dir)
            node["job"]["override_dirname"] = member_dir.name
            return hydra_files(member_cfg, node)

        sweep.run_job(_train, cfg, out_dir, Path(hc.sweep.dir).absolute(), extra, files_for,
                      setup=lambda: set_up_process(cfg, hc))  # imports torch: a stop there is reported too
        return None
    set_up_process(cfg, hc)
    try:
        result = _train(cfg, out_dir, extra)
    except AmtrainError as e:
        _last["error"] = e
        return None
    _last["result"] = result
    return result.get("test/acc")


def _train(cfg: DictConfig, out_dir: Path, extra: Optional[dict] = None):
    from amtrain.train import run  # torch: imported by the job that trains, not by the command

    return run(cfg, out_dir, extra)


def hydra_files(cfg: DictConfig, hc: dict) -> dict:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them (``hc``:
    the ``hydra`` node as a container)."""
    return {".hydra/config.yaml": OmegaConf.to_yaml(cfg),
            ".hydra/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hc["overrides"]["task"])))}


def set_up_process(cfg: DictConfig, hc) -> None:
    """How this job's process runs: glibc's malloc told to keep freed memory (``keep_freed_memory``,
    amtrain.allocator), and torch's threads: ``threads``, else the share of the cores a parallel
    launcher gives it."""
    import torch

    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()

    n = cfg.threads
    if n is None and hc.mode == RunMode.MULTIRUN:
        target = str(hc.launcher.get("_target_", ""))
        if "joblib" in target:
            n = max(1, sweep.cores() // sweep.parallel_jobs(hc.launcher))
        elif "submitit" in target and hc.launcher.get("cpus_per_task"):
            n = int(hc.launcher.cpus_per_task)
    if n:
        torch.set_num_threads(int(n))


# ----------------------------------------------------------------------------- the command
def _overrides_key(line: str) -> str:
    return line.split("=", 1)[0].lstrip("+~")


def _quote(value: str) -> str:
    """A path as one Hydra override value (quoted, so commas and spaces stay in it)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hydra(argv: List[str]) -> int:
    sys.argv = [sys.argv[0]] + list(argv)
    try:
        hydra_main()
    except SystemExit as e:  # Hydra's own error reporting
        return e.code if isinstance(e.code, int) else 1
    return 0


def _single(argv: List[str], overrides: List[str], cfg_only: bool) -> int:
    cfg = compose_checked(overrides)
    if cfg_only:
        return _hydra(argv)
    explicit = [o for o in overrides if _overrides_key(o) == "hydra.run.dir"]
    again = list(argv)  # the command that goes on in the same folder
    if explicit:
        run_dir = ensure_writable(cfg.hydra.run.dir)
    else:  # the default runs/<date>/<time>_... is shared by runs started in the same second
        run_dir = claim_new(cfg.hydra.run.dir)
        argv = argv + [f"hydra.run.dir={_quote(str(run_dir))}"]
        again.append(f"hydra.run.dir={run_dir}")
    _last.update(error=None, result=None)
    try:
        rc = _hydra(argv)
    except (KeyboardInterrupt, Interrupted):
        if (run_dir / "checkpoint.pt").exists():  # a new folder each time unless named: say which to name
            print(f"amtrain: {run_dir} has a checkpoint: `amtrain {' '.join(shlex.quote(a) for a in again)}` "
                  "goes on from it", file=sys.stderr)
        raise
    if _last["error"] is not None:
        raise _last["error"]
    result = _last["result"]
    if result is not None and result.resumed_after is not None:
        print(f"amtrain: {result.out_dir} went on from its checkpoint after epoch {result.resumed_after} "
              "(train.log says what was moved aside)", file=sys.stderr)
    if result is not None and result.status == "skipped":
        other = other_code(result.out_dir)
        print(f"amtrain: skipped {result.out_dir}: it finished already (DONE){', ' + other if other else ''}; "
              f"resume=false reruns it, moving its outputs to {result.out_dir}/.superseded/", file=sys.stderr)
    return rc


def _multirun(argv: List[str], overrides: List[str], cfg_only: bool) -> int:
    the_plan = sweep.plan(overrides, compose_checked)
    if cfg_only:  # Hydra has no --cfg for a sweep: list its jobs instead
        print(sweep.preview(the_plan))
        return 0
    ensure_writable(the_plan.sweep_dir, "sweep folder", "choose another name= or hydra.sweep.dir")
    mixed = sweep.finished_on_other_data(the_plan)
    if mixed:  # refused before any job runs, as reproduce.py's look-ahead does
        raise ConfigError(mixed)
    token = sweep.new_token()
    os.environ[sweep.TOKEN_ENV] = token
    sweep.write_groups(the_plan, token)  # the jobs that train together on a seed axis
    os.environ["HYDRA_FULL_ERROR"] = "1"  # a launcher's error reaches us whole, to be said in one line
    slurm = the_plan.launcher.endswith("SlurmLauncher")  # chosen on the command line or in a config file
    if slurm:
        sweep.adapt_to_slurm()
    interrupted = launcher_error = None
    quiet = sweep.dropping_stderr(["sbatch: error:", "Slurm accounting storage is disabled"]) if slurm \
        else contextlib.nullcontext()
    try:
        with quiet:
            rc = _hydra(argv)
    except (KeyboardInterrupt, Interrupted) as e:
        interrupted, rc = e, 130
    except Exception as e:  # the launcher failed to submit or to collect the jobs
        launcher_error, rc = e, 1
    if launcher_error is not None:
        line, code = sweep.explain_launcher_error(launcher_error)
        if code == 2:  # refused at submission: no job ran, no summary to give
            raise ConfigError(line)
    text, code = sweep.summary(the_plan, token)
    print(text, flush=True)
    if interrupted is not None:
        raise interrupted
    if launcher_error is not None:
        print(f"amtrain: error: {line}", file=sys.stderr)
        return code or 1
    if code:
        bad = text.splitlines()[0].split(": ", 2)[-1]
        print(f"amtrain: error: the sweep did not complete ({bad}): see the list above and each job's FAILED; "
              "rerun the same command to retry only those jobs", file=sys.stderr)
    return code or rc


def _dispatch(argv: List[str]) -> int:
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)  # argparse reports its own usage errors (exit 2)
    overrides = list(args.overrides)
    if args.help:
        from amtrain.helptext import render

        print(render(overrides, compose_checked))
        return 0
    if args.hydra_help or args.info or args.shell_completion or args.experimental_rerun or args.config_path \
            or args.config_name or args.config_dir:
        return _hydra(argv)  # Hydra's own tools, as they are
    if args.multirun:
        return _multirun(argv, overrides, bool(args.cfg))
    return _single(argv, overrides, bool(args.cfg))


def _on_sigterm(signum, frame):
    raise Interrupted("SIGTERM")


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # leave a launcher's own handler alone
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = _dispatch(argv)
    except AmtrainError as e:
        print(f"amtrain: error: {e}", file=sys.stderr)
        code = e.exit_code
    except (KeyboardInterrupt, Interrupted) as e:
        how = e.how if isinstance(e, Interrupted) else "Ctrl-C"
        print(f"amtrain: interrupted ({how}): a run that had started wrote FAILED and kept its partial metrics "
              "(and checkpoint, if it wrote one); rerun the same command to resume (a single run: into the same "
              "hydra.run.dir)", file=sys.stderr)
        code = 143 if how == "SIGTERM" else 130
    sys.exit(code)


if __name__ == "__main__":
    main()
