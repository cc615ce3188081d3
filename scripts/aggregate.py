#!/usr/bin/env python
"""Aggregate run directories into one tidy CSV: mean, std and number of seeds per cell.

    python scripts/aggregate.py multirun/2026-11-22/10-00-00 [more dirs] -o results/mnist.csv

Reads every finished run under the given folders: one whose ``config.yaml``, ``DONE`` and
``metrics.csv`` carry the same run id (amtrain.rundir). Every other folder is listed on
stderr, one line each, and left out: unfinished or failed runs, a malformed CSV, files
from different runs. Each seed of a configuration counts once: a copy of a run already read
is read once, and two runs of one seed and configuration are an error. Where a folder holds
a sweep's ``multirun.yaml``, its grid is expanded as Hydra did, and jobs that never started
are listed too.

Writes one row per (dataset, model, optim, mode, variant, split, metric, step, epoch,
samples_seen) with ``mean, std, wall_time, n_seeds, seeds`` over the seeds that reached that
step (``wall_time``: the mean training seconds there).
``variant`` is a short hash of the run's resolved config without its seed, so runs that
differ in any other setting are never averaged together; ``settings`` spells out how a
variant differs from the others of the same method, ``overrides`` the command-line
overrides its runs had (several spellings of one variant joined by `` | ``), ``code``
the amtrain code its seeds ran on and ``data`` the data they read (amtrain.provenance; empty
for runs that recorded none). A configuration whose seeds ran on different code is said on
stderr; one whose seeds read different data (another copy or version of the dataset's files)
is an error.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import pandas as pd
import yaml
from omegaconf import OmegaConf

from amtrain.config import ENVIRONMENT_KEYS, flat_keys
from amtrain.errors import OutputError
from amtrain.results import writable_file, write_atomically
from amtrain.provenance import of_run
from amtrain.rundir import run_ids
from amtrain.sweep import expand, job_dirname

KEYS = ["dataset", "model", "optim", "mode", "variant", "split", "metric", "step", "epoch", "samples_seen"]


# Keys that say where and how a run was executed, not what it computes: runs that differ
# only in them are one variant (the seed is what the seeds of a cell differ in). A data file's
# folder is where it was; its name is which file (HIGGS.h5 or HIGGS-subset.h5): dataset.path
# counts by its name only. Every key resume does not compare (ENVIRONMENT_KEYS) but two: the
# sweep's name and dataset.download have been part of every variant id since the first
# results, and dropping them would change every id in results/; so a cell's seeds come from
# one sweep name (as reproduce.py runs them).
KEPT_IN_VARIANT = frozenset({"name", "dataset.download"})
HOW_RUN = tuple(sorted((ENVIRONMENT_KEYS - KEPT_IN_VARIANT) | {"seed", "dataset.path"}))


class NoRuns(SystemExit):
    """Nothing to aggregate (not an error for scripts/reproduce.py: a figure whose jobs all failed)."""


def variant(run_dir: Path) -> dict:
    """The run's config without seed and the keys of HOW_RUN, flattened, and its short hash."""
    cfg = flat_keys(yaml.safe_load((run_dir / "config.yaml").read_text()))
    if cfg.get("dataset.path"):
        cfg["dataset.file"] = Path(str(cfg["dataset.path"])).name
    for k in HOW_RUN:
        cfg.pop(k, None)
    return {"variant": hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8],
            "config": cfg}


def overrides(run_dir: Path) -> str:
    """The job's command-line overrides without the sweep name and the keys of HOW_RUN."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return ""
    skip = HOW_RUN + ("name",)
    keep = [o for o in yaml.safe_load(path.read_text()) or [] if o.split("=")[0].lstrip("+~") not in skip]
    return " ".join(sorted(keep))


def _hidden(path: Path, root: Path) -> bool:
    """Inside .hydra/, .superseded/, .submitit/, ...: not a run folder."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def check_run(run: Path) -> Optional[str]:
    """None when ``run`` holds one finished run, else the one-line reason it is left out."""
    if not (run / "DONE").exists():
        failed = run / "FAILED"
        if failed.exists():
            first = failed.read_text(errors="replace").splitlines()[:1]
            return "failed: " + (first[0] if first else "see FAILED")
        return "unfinished (killed, or still running)"
    if not (run / "metrics.csv").exists():
        return "DONE but no metrics.csv: rerun it with resume=false"
    ids = run_ids(run)
    if any(ids.values()) and len(set(ids.values())) != 1:
        shown = ", ".join(f"{k} {v or 'none'}" for k, v in ids.items())
        return f"config.yaml, DONE and metrics.csv come from different runs ({shown}): rerun it with resume=false"
    return None


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv, checked: ValueError with a one-line reason when malformed."""
    try:
        df = pd.read_csv(path, dtype={"data": str})  # a fingerprint such as 1234e567 is text, not a number
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed metrics.csv ({type(e).__name__}: {str(e).strip().splitlines()[-1]})") from None
    missing = [c for c in ("step", "epoch", "samples_seen", "split", "metric", "value", "seed") if c not in df]
    if missing:
        raise ValueError(f"metrics.csv lacks the columns {', '.join(missing)}")
    if df.empty:
        raise ValueError("metrics.csv has no rows")
    if df.value.isna().any() or pd.to_numeric(df.value, errors="coerce").isna().any():
        raise ValueError("metrics.csv has rows without a numeric value (a torn line?)")
    if "run_id" in df and df.run_id.nunique() > 1:  # a line cut short shifts its fields into other columns
        raise ValueError("metrics.csv has rows that name other runs (a torn or shifted line?): rerun it with "
                         "resume=false")
    df = df.assign(data=df.data.fillna("") if "data" in df else "")  # "": made before runs recorded their data
    if df.data.nunique() > 1:
        raise ValueError(f"its rows read different data ({', '.join(sorted(df.data.unique()))}): it went on from "
                         "a checkpoint after the dataset's files changed; rerun it with resume=false")
    return df


def _same_seed_twice(by_seed: dict, key: tuple, run: Path, run_id: Optional[str]) -> Optional[str]:
    """One run per (variant, seed): a mean over seeds that counted one seed twice would weigh it
    double and shrink the std. A copy of a folder already read (the same run id) is read once
    (returns the note to print); another run of the same seed and configuration is an error."""
    if key not in by_seed:
        by_seed[key] = (run, run_id)
        return None
    other, other_id = by_seed[key]
    if run_id is not None and run_id == other_id:
        return f"{run} is a copy of {other} (run {run_id}): read once"
    raise SystemExit(f"aggregate: error: seed {key[1]} of one configuration ran twice, in {other} and {run}: "
                     "counted twice, it would weigh double in the mean; give only one of them (move the other "
                     "aside or out of the folders given)")


def _one_dataset(runs: List[dict]) -> List[str]:
    """The seeds of one configuration must have read the same data: error when two recorded
    different fingerprints (another copy or version of the files under the same name, e.g. a
    node of a cluster with its own copy); the notes for runs that recorded none beside ones that did."""
    if not runs:
        return []
    notes = []
    for (dataset, model, optim, v), g in pd.DataFrame(runs).groupby(["dataset", "model", "optim", "variant"]):
        recorded = g[g.data != ""]
        if recorded.data.nunique() > 1:
            each = "; ".join(f"data {d[:8]}: seed{'s' * (len(r) > 1)} {' '.join(map(str, sorted(r.seed)))} "
                             f"(e.g. {r.run.iloc[0]})" for d, r in recorded.groupby("data"))
            raise SystemExit(f"aggregate: error: {dataset} {model} {optim} (variant {v}): its seeds read different "
                             f"data ({each}): the dataset's files differ between these runs; rerun the odd seeds "
                             "on the same files (resume=false), or aggregate them apart")
        if len(recorded) and len(recorded) < len(g):
            notes.append(f"{dataset} {model} {optim} (variant {v}): {len(g) - len(recorded)} of its seeds recorded "
                         "no data fingerprint (made before amtrain recorded one): their data is not checked")
    return notes


def _mixed_code(runs: List[dict]) -> List[str]:
    """A line per configuration whose seeds ran on different amtrain code (a sweep resumed after
    the code changed skips its finished jobs): its mean mixes two versions of the method."""
    if not runs:
        return []
    out = []
    for (dataset, model, optim, v), g in pd.DataFrame(runs).groupby(["dataset", "model", "optim", "variant"]):
        if g.code.nunique() > 1:
            by_code = "; ".join(f"{code or 'not recorded'}: seed{'s' * (len(c) > 1)} "
                                f"{' '.join(map(str, sorted(c.seed)))}" for code, c in g.groupby("code"))
            out.append(f"{dataset} {model} {optim} (variant {v}): its seeds ran on {g.code.nunique()} versions of "
                       f"amtrain's code ({by_code}); rerun the older ones with resume=false to compare like with like")
    return out


def never_started(root: Path) -> List[str]:
    """Jobs of every multirun.yaml under ``root`` whose folder does not exist."""
    out = []
    for mr in sorted(root.rglob("multirun.yaml")):
        if _hidden(mr.parent, root) and mr.parent != root:
            continue
        try:
            cfg = OmegaConf.load(mr)
            if str(cfg.hydra.sweep.subdir) != str(cfg.hydra.job.override_dirname):
                continue  # a custom job folder name: cannot be predicted here
            jobs = expand(cfg.hydra.sweeper.get("params"), list(cfg.hydra.overrides.task))
            names = [job_dirname(j, cfg.hydra.job.config.override_dirname) for j in jobs]
        except Exception as e:  # a damaged multirun.yaml costs this check, not the aggregation
            out.append(f"{mr}: cannot expand the sweep's grid ({type(e).__name__}): jobs not checked")
            continue
        out += [f"{mr.parent / n}: never started" for n in names if not (mr.parent / n).exists()]
    return out


def load(dirs) -> pd.DataFrame:
    frames, left_out, configs, legacy, copies, runs = [], [], {}, 0, [], []
    read, by_seed = set(), {}  # folders read (a folder given twice, or inside another given, is read once)
    for d in map(Path, dirs):
        if not d.is_dir():
            raise SystemExit(f"aggregate: error: {d} is not a folder")
        for cfg_file in sorted(d.rglob("config.yaml")):
            run = cfg_file.parent
            if _hidden(run, d) and run != d or run.resolve() in read:
                continue
            read.add(run.resolve())
            reason = check_run(run)
            if reason is None:
                try:
                    df = read_metrics(run / "metrics.csv")
                except ValueError as e:
                    reason = str(e)
            if reason is not None:
                left_out.append(f"{run}: {reason}")
                continue
            ids = run_ids(run)
            legacy += not any(ids.values())
            v = variant(run)
            copy = _same_seed_twice(by_seed, (v["variant"], int(df.seed.iloc[0])), run, ids["done"])
            if copy:
                copies.append(copy)
                continue
            configs[v["variant"]] = v["config"]
            code = (of_run(run) or {}).get("code", "")[:8]  # "": a run that recorded none
            frames.append(df.assign(variant=v["variant"], overrides=overrides(run), code=code))
            runs.append({**df.iloc[0][["dataset", "model", "optim", "seed", "data"]], "variant": v["variant"],
                         "code": code, "run": run})  # one row per run, for the checks across its seeds
        left_out += never_started(d)
    for u in left_out:
        print(f"missing cell: {u}", file=sys.stderr)
    for c in copies:
        print(f"note: {c}", file=sys.stderr)
    for line in _mixed_code(runs) + _one_dataset(runs):
        print(f"note: {line}", file=sys.stderr)
    if legacy:
        print(f"note: {legacy} runs carry no run id (made before run ids existed); read as they are", file=sys.stderr)
    if not frames:
        raise NoRuns("no finished runs (metrics.csv) under " + ", ".join(map(str, dirs)))
    df = pd.concat(frames, ignore_index=True)
    if "run_id" in df:
        df = df.drop(columns=["run_id"])
    # settings: the config keys on which variants of the same (dataset, model, optim, mode) differ
    settings = {}
    for _, group in df[["dataset", "model", "optim", "mode", "variant"]].drop_duplicates().groupby(
            ["dataset", "model", "optim", "mode"]):
        cfgs = {v: configs[v] for v in group.variant}
        keys = sorted({k for c in cfgs.values() for k in c if len({str(x.get(k)) for x in cfgs.values()}) > 1})
        for v, c in cfgs.items():
            settings[v] = " ".join(f"{k}={c.get(k)}" for k in keys)
    return df.assign(settings=df.variant.map(settings))


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    # One variant is one computation however its command spelled it (a default written out,
    # overrides in another order): its seeds are one cell, listing every spelling.
    df = df.assign(overrides=df.groupby("variant").overrides.transform(lambda s: " | ".join(sorted(set(s)))))
    g = df.groupby(KEYS + ["settings", "overrides"], dropna=False)
    out = g.value.agg(["mean", "std"])
    out["wall_time"] = g.wall_time.mean()  # training seconds at that point, mean over seeds
    out["n_seeds"] = g.seed.nunique()
    out["seeds"] = g.seed.apply(lambda s: " ".join(map(str, sorted(set(s)))))
    out["code"] = g.code.apply(lambda s: " ".join(sorted(set(s) - {""})))  # amtrain.provenance, 8 digits
    out["data"] = g.data.apply(lambda s: " ".join(sorted({d[:8] for d in s} - {""})))  # one at most (load)
    return out.reset_index()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--figure", default=None, help="a figure name to put in a first column")
    args = p.parse_args(argv)
    fix = "choose another -o"
    try:
        writable_file(args.out, fix)  # before reading every run
        agg = aggregate(load(args.dirs))
        if args.figure:
            agg.insert(0, "figure", args.figure)
        write_atomically(args.out, lambda tmp: agg.to_csv(tmp, index=False, float_format="%.6g"), fix)
    except OutputError as e:
        raise SystemExit(f"aggregate: error: {e}") from None
    print(f"wrote {args.out}: {len(agg)} rows from {agg.n_seeds.max()} seeds at most")


if __name__ == "__main__":
    main()
