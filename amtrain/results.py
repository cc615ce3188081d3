"""Reading the aggregated result CSVs (written by scripts/aggregate.py).

One row per cell: (dataset, model, optim, mode, variant, split, metric, step, epoch,
samples_seen, settings, overrides) with ``mean, std, n_seeds, seeds``. The figure
scripts and the report read them through these helpers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from amtrain.errors import DataError, OutputError
from amtrain.rundir import ensure_writable

METHOD_LABELS = {"am_adam": "AM-Adam", "am_mem": "AM-mem", "sgd": "SGD", "adam": "Adam",
                 "am_adam_off": "AM-Adam-off", "am_mem_off": "AM-mem-off", "admm": "ADMM",
                 "dladmm": "dlADMM", "mdlam": "mDLAM", "bcd": "BCD"}


def writable_file(path, fix: str) -> Path:
    """``path`` as a file that can be written (its folder created); one-line OutputError if not."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder, not a file: {fix}")
    ensure_writable(path.parent, "output folder", fix)
    return path


def write_atomically(path, write: Callable[[Path], None], fix: str) -> None:
    """``write(tmp)``, then ``tmp`` renamed over ``path``: a reader, or a run stopped half-way, never
    leaves half a CSV or report; the old file stays until the new one is whole."""
    path = writable_file(path, fix)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or type(e).__name__}): {fix}") from e
    finally:
        tmp.unlink(missing_ok=True)


# What the figures and the report read from an aggregated CSV; every row has these numbers
COLUMNS = ("dataset", "model", "optim", "mode", "variant", "split", "metric", "step", "epoch", "samples_seen",
           "mean", "std", "n_seeds")
NUMBERS = ("step", "epoch", "samples_seen", "mean", "n_seeds")


def load(path) -> Optional[pd.DataFrame]:
    """The aggregated CSV at ``path``, or None when there is none (a figure not run). DataError,
    one line, when it is not one scripts/aggregate.py wrote: unreadable, empty, columns missing,
    or a row without its numbers (a torn or hand-edited file)."""
    path = Path(path)
    if not path.exists():
        return None
    fix = f"rerun scripts/aggregate.py on its sweep folder into {path} (or scripts/reproduce.py --skip-runs)"
    # text columns stay text when every cell is empty (an all-NaN column would be float64)
    # (and a variant stays its hash: "12345e67" is no float, "00a1b2c3" keeps its zeros)
    text = {c: str for c in ("variant", "settings", "overrides", "seeds", "code", "data")}
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=text)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        why = getattr(e, "strerror", None) or str(e).strip().splitlines()[-1]
        raise DataError(f"{path} cannot be read as a results CSV ({type(e).__name__}: {why}): {fix}") from None
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise DataError(f"{path} lacks the columns {', '.join(missing)} of a results CSV: {fix}")
    bad = df[list(NUMBERS)].apply(pd.to_numeric, errors="coerce").isna().any(axis=1)
    if bad.any():
        raise DataError(f"{path} has {int(bad.sum())} row(s) without their numbers (the first: line "
                        f"{int(bad.to_numpy().argmax()) + 2}): {fix}")
    df["settings"] = df["settings"].fillna("") if "settings" in df else ""
    return df


def override_value(line: str, key: str) -> Optional[str]:
    """The value an ``overrides`` cell sets for ``key`` (the last, as Hydra applies them), or None."""
    found = [o.split("=", 1)[1] for o in str(line).split() if o.startswith(key + "=")]
    return found[-1] if found else None


def select(df: pd.DataFrame, split: str = "test", metric: str = "acc") -> pd.DataFrame:
    return df[(df.split == split) & (df.metric == metric)]


def end_of_epochs(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every (variant, epoch): one point per epoch (and the start)."""
    return df[df.step == df.groupby(["variant", "epoch"]).step.transform("max")]


def end_of_run(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every variant."""
    return df[df.step == df.groupby("variant").step.transform("max")]
