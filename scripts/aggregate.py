#!/usr/bin/env python
"""Aggregate run directories into one tidy CSV: mean, std and number of seeds per cell.

    python scripts/aggregate.py multirun/2026-11-22/10-00-00 [more dirs] -o results/mnist.csv

Reads every finished run (a ``metrics.csv`` under the given folders; runs without one
did not finish and are listed on stderr), and writes one row per (dataset, model,
optim, mode, variant, split, metric, step, epoch, samples_seen) with ``mean, std,
n_seeds, seeds`` over the seeds that reached that step. ``variant`` is a short hash of
the run's resolved config without its seed, so runs that differ in any other setting
are never averaged together; ``settings`` spells out how a variant differs from the
others of the same method, ``overrides`` the command-line overrides its runs had.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

KEYS = ["dataset", "model", "optim", "mode", "variant", "split", "metric", "step", "epoch", "samples_seen"]


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def variant(run_dir: Path) -> dict:
    """The run's config without seed (and data location), flattened, and its short hash."""
    cfg = _flat(yaml.safe_load((run_dir / "config.yaml").read_text()))
    for k in ("seed", "dataset.root", "dataset.path", "progress", "device"):
        cfg.pop(k, None)
    return {"variant": hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8],
            "config": cfg}


def overrides(run_dir: Path) -> str:
    """The job's command-line overrides without seed and sweep name: how it was run."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return ""
    skip = ("seed", "name", "progress", "device", "resume", "dataset.path", "dataset.root")
    keep = [o for o in yaml.safe_load(path.read_text()) or [] if o.split("=")[0].lstrip("+~") not in skip]
    return " ".join(sorted(keep))


def load(dirs) -> pd.DataFrame:
    frames, unfinished, configs = [], [], {}
    for d in dirs:
        for cfg_file in Path(d).rglob("config.yaml"):
            run = cfg_file.parent
            if run.name != ".hydra" and not (run / "metrics.csv").exists():
                failed = run / "FAILED"
                unfinished.append(f"{run}: " + (failed.read_text().splitlines()[0] if failed.exists()
                                                else "unfinished (killed or still running)"))
        for f in Path(d).rglob("metrics.csv"):
            v = variant(f.parent)
            configs[v["variant"]] = v["config"]
            frames.append(pd.read_csv(f).assign(variant=v["variant"], overrides=overrides(f.parent)))
    for u in unfinished:
        print(f"missing cell: {u}", file=sys.stderr)
    if not frames:
        raise SystemExit("no finished runs (metrics.csv) under " + ", ".join(map(str, dirs)))
    df = pd.concat(frames, ignore_index=True)
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
    g = df.groupby(KEYS + ["settings", "overrides"], dropna=False)
    out = g.value.agg(["mean", "std"])
    out["n_seeds"] = g.seed.nunique()
    out["seeds"] = g.seed.apply(lambda s: " ".join(map(str, sorted(set(s)))))
    return out.reset_index()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--figure", default=None, help="a figure name to put in a first column")
    args = p.parse_args(argv)
    agg = aggregate(load(args.dirs))
    if args.figure:
        agg.insert(0, "figure", args.figure)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    agg.to_csv(args.out, index=False, float_format="%.6g")
    print(f"wrote {args.out}: {len(agg)} rows from {agg.n_seeds.max()} seeds at most")


if __name__ == "__main__":
    main()
