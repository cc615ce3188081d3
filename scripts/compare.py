#!/usr/bin/env python
"""Compare two sets of results cell by cell: did a rerun reproduce them?

    python scripts/compare.py results/full ../their-amtrain/results/full   # every results CSV both hold
    python scripts/compare.py results/quick/fig8_binary.csv mine/fig8_binary.csv
    python scripts/compare.py HEAD:results/quick results/quick   # a rerun against the committed numbers

A and B are aggregated CSVs (scripts/aggregate.py: what ``make reproduce-paper`` writes into
``results/<protocol>/``), or two folders of them; ``REV:PATH`` takes one from a git commit of
this checkout (``HEAD:results/quick``: the numbers a rerun has just overwritten). A *cell* is
one curve of one experiment: (dataset, model, optim, mode, split, metric) and the
experiment's command-line overrides (the ``overrides`` column: without the seed, the sweep's
name and how a run ran). Matching on the command rather than on ``variant`` (the hash of the
whole resolved config) lets results of two versions of amtrain meet even where a config key
was added since, which changes every hash; where the variants differ the cell says so.
``--match variant`` matches only identical configs; ``--ignore KEY`` matches whatever KEY says on the
command line (``--ignore epochs``: the quick protocol's shortened runs beside the full protocol's),
and a cell matched across it names the overrides that differ.
Each cell is judged at the last step both sides evaluated (the end of the run: what REPORT.md's
readings quote), B against A:

* ``same``: equal to the 6 significant digits the CSVs hold;
* ``within noise``: within ``--z`` standard errors of the difference of two means over seeds,
  sqrt(std_A^2 / n_A + std_B^2 / n_B) (default 3), or within ``--tol`` (default 0; a cell of
  one seed has no std, so only ``--tol`` can let it through);
* ``differs``: beyond both; ``no common step``: the two never evaluated at the same step.

Training amplifies float rounding, so the same seeds on another machine, BLAS or torch
version are rarely ``same`` but should be ``within noise``. The output is a line per file (its
counts, and the cell furthest from A that is still within noise), then a line per cell that
differs (``--all``: per cell) with the largest difference over the steps both have and what else
differs: a side that evaluated beyond the last common step, the config (``variant``), the seeds
averaged, the data read (another copy or version of the dataset's files), the code. Experiments one side lacks are listed with what the other side
has of that method instead.

Exit status: 0 when every cell both have is ``same`` or ``within noise`` and neither side lacks
a cell or a file of the other; 1 otherwise; 2 on bad input (a missing path, a file that is not
a results CSV, a folder beside a file).
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import pandas as pd

from amtrain.config import ENVIRONMENT_KEYS
from amtrain.errors import AmtrainError, ConfigError, DataError
from amtrain.results import COLUMNS, load

RUN = ["dataset", "model", "optim", "mode", "experiment"]  # one experiment: its command (or its config hash)
CELL = RUN + ["split", "metric"]  # one curve of it
POINT = ["step", "epoch", "samples_seen"]
VERDICTS = ("differs", "no common step", "within noise", "same")  # worst first
SIGNIFICANT = 1e-5  # two values written with %.6g (aggregate.py) that are one number differ by less, relatively


@dataclass
class Cell:
    """One cell both sides have, judged at the last step both evaluated."""
    key: tuple
    verdict: str
    step: Optional[int] = None
    epoch: Optional[int] = None
    a: float = math.nan
    b: float = math.nan
    se: float = math.nan  # standard error of b - a (0: no std, one seed on both sides)
    largest: float = 0.0  # the largest |b - a| over the common steps, and where
    largest_step: Optional[int] = None
    notes: List[str] = field(default_factory=list)


def judge(a: float, b: float, se: float, z: float, tol: float) -> str:
    diff = abs(b - a)
    if diff <= SIGNIFICANT * max(abs(a), abs(b)):
        return "same"
    if diff <= tol or (se > 0 and diff <= z * se):
        return "within noise"
    return "differs"


def _text(row, column: str) -> str:
    value = row.get(column, "")
    return "" if pd.isna(value) else str(value)


def _std(value) -> float:
    return 0.0 if pd.isna(value) else float(value)


def key_of(override: str) -> str:
    """``optim.lr`` of ``optim.lr=0.1`` (and of ``+optim.lr=0.1``, ``~optim.lr``)."""
    return override.split("=", 1)[0].lstrip("+~")


def command(overrides: str, ignore=frozenset()) -> str:
    """An ``overrides`` cell as the experiment's command: without the keys that say where and how
    it ran (a CSV aggregated before a key joined them may still hold it), nor the keys of
    ``ignore`` (``--ignore``), each spelling sorted."""
    drop = ENVIRONMENT_KEYS | {"seed", "name", "dataset.path"} | set(ignore)
    spellings = {" ".join(sorted(o for o in s.split() if key_of(o) not in drop)) for s in str(overrides).split(" | ")}
    return " | ".join(sorted(spellings))


def experiments(df: pd.DataFrame, match: str, path, ignore=frozenset()) -> pd.DataFrame:
    """``df`` with the ``experiment`` column cells are matched on: the variant, or the command
    (:func:`command`, less the keys of ``ignore``), and ``given``, the command whole. DataError
    when two configurations of one method share what they are matched on (a CSV that aggregated
    runs of two versions of a config file, or two experiments that only an ignored key told apart)."""
    if match == "variant":
        return df.assign(experiment=df["variant"], given=df["variant"])
    overrides = df["overrides"].fillna("") if "overrides" in df else pd.Series("", index=df.index)
    out = df.assign(experiment=overrides.map(lambda o: command(o, ignore)), given=overrides.map(command))
    configs = out.drop_duplicates(RUN + ["variant"])
    shared = configs[configs.duplicated(RUN, keep=False)]
    if len(shared):
        row = shared.iloc[0]
        if ignore and configs[configs.duplicated(RUN + ["given"], keep=False)].empty:
            told = sorted({o for o in " ".join(shared[(shared[RUN] == row[RUN]).all(axis=1)].given).split()
                           if key_of(o) in ignore})
            raise DataError(f"{path}: {row.optim} on {row.model} has several experiments that only the ignored "
                            f"{', '.join(told)} tell apart, so their cells would be paired wrongly: ignore fewer keys")
        raise DataError(f"{path}: {row.optim} on {row.model} has several configurations with the overrides "
                        f"{row.experiment!r}: compare with --match variant")
    return out


def set_keys(frames) -> set:
    """Every key the experiments of ``frames`` set on their command line."""
    return {key_of(o) for df in frames for given in df["given"].unique() for o in str(given).split()
            if "=" in o or o.startswith("~")}


def curves(df: pd.DataFrame, splits: Optional[List[str]], metrics: Optional[List[str]]) -> pd.DataFrame:
    """The rows of the splits and metrics asked for (all where None)."""
    keep = pd.Series(True, index=df.index)
    if splits:
        keep &= df["split"].isin(splits)
    if metrics:
        keep &= df["metric"].isin(metrics)
    return df[keep]


def compare(a: pd.DataFrame, b: pd.DataFrame, z: float = 3.0, tol: float = 0.0
            ) -> Tuple[List[Cell], pd.DataFrame, pd.DataFrame]:
    """The cells both frames have (they carry ``experiment``: :func:`experiments`), judged; and the
    cells only A has, only B has (a row each)."""
    cells_a, cells_b = a.drop_duplicates(CELL), b.drop_duplicates(CELL)
    keys_a, keys_b = set(cells_a[CELL].itertuples(index=False)), set(cells_b[CELL].itertuples(index=False))
    def lacked(cells: pd.DataFrame, other: set) -> pd.DataFrame:
        keep = [k not in other for k in cells[CELL].itertuples(index=False)]
        return cells[pd.Series(keep, index=cells.index, dtype=bool)]  # (a plain empty list picks no columns)

    only_a, only_b = lacked(cells_a, keys_b), lacked(cells_b, keys_a)
    both = a.merge(b, on=CELL + POINT, suffixes=("_a", "_b"))
    ends = {side: df.groupby(CELL).step.max() for side, df in (("A", a), ("B", b))}
    judged = {}
    for key, g in both.groupby(CELL, sort=False):
        g = g.sort_values("step")
        diffs = (g["mean_b"] - g["mean_a"]).abs()
        last = g.iloc[-1]
        se = math.sqrt(_std(last["std_a"]) ** 2 / last["n_seeds_a"] + _std(last["std_b"]) ** 2 / last["n_seeds_b"])
        worst = g.loc[diffs.idxmax()]
        cell = Cell(key, judge(last["mean_a"], last["mean_b"], se, z, tol), int(last["step"]), int(last["epoch"]), float(last["mean_a"]), float(last["mean_b"]), se,
                    float(diffs.max()), int(worst["step"]))
        for side in ("A", "B"):
            if ends[side][key] > cell.step:
                cell.notes.append(f"{side} goes on to step {ends[side][key]}")
        given = [set(_text(last, f"given_{side}").split()) - {"|"} for side in "ab"]
        if given[0] != given[1]:  # matched across keys --ignore dropped
            cell.notes.append("overrides " + " / ".join(" ".join(sorted(given[i] - given[1 - i])) or "-"
                                                        for i in (0, 1)))
        for what, column in (("config", "variant"), ("seeds", "seeds"), ("data", "data"), ("code", "code")):
            then, now = _text(last, f"{column}_a"), _text(last, f"{column}_b")
            if then and now and then != now:
                cell.notes.append(f"{what} {then} / {now}")
        judged[key] = cell
    for key in sorted(keys_a & keys_b - set(judged)):
        judged[key] = Cell(key, "no common step")
    cells = sorted(judged.values(), key=lambda c: (VERDICTS.index(c.verdict), c.key))
    return cells, only_a, only_b


# ----------------------------------------------------------------------------- words
def name_of(key) -> str:
    """optim model dataset mode (experiment) [split metric] for a RUN or CELL key."""
    d = dict(zip(CELL, key))
    text = f"{d['optim']} {d['model']} {d['dataset']} {d['mode']}" + (f" ({d['experiment']})" if d["experiment"] else "")
    return text + (f": {d['split']} {d['metric']}" if "split" in d else "")


def describe(cell: Cell) -> str:
    head = f"  {cell.verdict:<14} {name_of(cell.key)}"
    if cell.step is None:
        return head + ": the two sides never evaluated at the same step"
    diff = cell.b - cell.a
    noise = f", {abs(diff) / cell.se:.1f} s.e." if cell.se > 0 else ", no std: one seed"
    text = f"{head} at step {cell.step} (epoch {cell.epoch}): {cell.a:.6g} -> {cell.b:.6g} ({diff:+.3g}{noise})"
    if cell.largest_step != cell.step and cell.largest > abs(diff):
        text += f"; largest {cell.largest:.3g} at step {cell.largest_step}"
    return text + "".join(f"; {n}" for n in cell.notes)


def lacking(only: pd.DataFrame, other: pd.DataFrame, side: str) -> List[str]:
    """A line per experiment with cells only one side has, and what the other side has of that
    method on that data and model instead."""
    lines = []
    for key, g in only.groupby(RUN, sort=True):
        method = pd.Series(key[:-1], index=RUN[:-1])
        instead = sorted({f"({e})" if e else "(no overrides)"
                          for e in other[(other[RUN[:-1]] == method).all(axis=1)].experiment} - {f"({key[-1]})"})
        curves = ", ".join(sorted({f"{s} {m}" for s, m in zip(g.split, g.metric)}))
        lines.append(f"  only in {side:<6} {name_of(key)}: {curves}"
                     + (f"; the other side has this method as {', '.join(instead)}" if instead else ""))
    return lines


def codes(df: pd.DataFrame) -> str:
    found = sorted({c for c in df["code"].dropna() if c}) if "code" in df else []
    return ", ".join(found) or "not recorded"


def report_file(name: str, a: pd.DataFrame, b: pd.DataFrame, z: float, tol: float, every: bool
                ) -> Tuple[List[str], dict]:
    """A line for the file, then one per cell that differs (``every``: per cell) and per experiment
    one side lacks; and the counts of each verdict."""
    cells, only_a, only_b = compare(a, b, z, tol)
    counts = {v: sum(c.verdict == v for c in cells) for v in VERDICTS}
    counts["only in A"], counts["only in B"] = len(only_a), len(only_b)  # (cells)
    shown = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    head = f"{name}: {len(cells)} cells in both: {shown or 'nothing to compare'}"
    noisy = [c for c in cells if c.verdict == "within noise"]
    if noisy and not every:
        worst = max(noisy, key=lambda c: abs(c.b - c.a) / (max(z * c.se, tol) or 1.0))  # the most of its allowance
        head += f"; the furthest within noise: {describe(worst).split(maxsplit=2)[2]}"
    lines = [head]
    if codes(a) != codes(b):
        lines.append(f"  code A {codes(a)}, B {codes(b)}")
    lines += [describe(c) for c in cells if every or c.verdict in ("differs", "no common step")]
    lines += lacking(only_a, b, "A") + lacking(only_b, a, "B")
    early = sum(any(" goes on to step " in n for n in c.notes) for c in cells if c.verdict != "differs")
    if early and not every:
        lines.append(f"  ({early} cells that agree were judged before the end of one side's run, which "
                     "evaluated further: --all lists them)")
    one_seed = sum(c.verdict == "differs" and c.se == 0 for c in cells)
    if one_seed:
        lines.append(f"  ({one_seed} of the cells that differ have one seed a side, so no std to judge them by: "
                     "--tol sets the difference that counts as noise)")
    return lines, counts


# ----------------------------------------------------------------------------- files
def results_csv(path: Path) -> bool:
    """Whether ``path`` has the columns of an aggregated CSV (runs.csv, say, has not)."""
    try:
        header = pd.read_csv(path, nrows=0)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return True  # load() says what is wrong with it
    return all(c in header.columns for c in COLUMNS)


def from_git(spec: str, scratch: Path) -> Path:
    """``REV:PATH`` (``HEAD:results/quick``, git's own spelling) as that folder or file extracted
    from the commit into ``scratch``: a rerun's results against the ones it overwrote."""
    import io
    import subprocess
    import tarfile

    rev, path = spec.split(":", 1)
    path = path.strip("/") or "."
    try:
        out = subprocess.run(["git", "archive", "--format=tar", rev, "--", path], capture_output=True, check=True)
    except OSError as e:
        raise DataError(f"{spec}: git cannot be run here ({e.strerror}): extract {path} from {rev} yourself") from None
    except subprocess.CalledProcessError as e:
        why = (e.stderr.decode(errors="replace").strip().splitlines() or ["git archive failed"])[-1]
        raise DataError(f"{spec} is neither a path nor a git revision:path here ({why}): give a results folder, "
                        "or REV:PATH as git names it (HEAD:results/quick) from inside the checkout") from None
    folder = scratch / rev.replace("/", "_")
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.10.12 / 3.11.4 on
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)  # (git archive's own output: no links out of the folder)
    return folder / path


def pairs(a: Path, b: Path) -> Tuple[List[Tuple[str, Path, Path]], List[str], int]:
    """The (name, A file, B file) to compare; lines on what is not compared; how many files one side lacks."""
    for path in (a, b):
        if not path.exists():
            raise DataError(f"{path} does not exist: give two results folders (results/full) or two CSV files")
    if a.is_dir() != b.is_dir():
        folder, other = (a, b) if a.is_dir() else (b, a)
        raise DataError(f"{folder} is a folder and {other} a file: give two folders, or "
                        f"{folder / other.name} and {other}")
    if not a.is_dir():
        return [(a.name, a, b)], [], 0
    names = {side: {p.name for p in folder.glob("*.csv")} for side, folder in (("A", a), ("B", b))}
    notes, common = [], sorted(names["A"] & names["B"])
    # neither side's is a results CSV (runs.csv): not compared; one side's only: load() says what is wrong
    skipped = [n for n in common if not (results_csv(a / n) or results_csv(b / n))]
    if skipped:
        notes.append(f"not compared (not results CSVs): {', '.join(skipped)}")
    missing = 0
    for side, other in (("A", "B"), ("B", "A")):
        lacks = sorted(n for n in names[other] - names[side] if results_csv((a if other == "A" else b) / n))
        if lacks:
            missing += len(lacks)
            notes.append(f"only in {other}: {', '.join(lacks)}")
    found = [(n, a / n, b / n) for n in common if n not in skipped]
    if not found:
        raise DataError(f"{a} and {b} hold no results CSV of the same name: give the folders "
                        "scripts/reproduce.py wrote (results/<protocol>)")
    return found, notes, missing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="a results folder or CSV (the reference); REV:PATH takes it from a git "
                                        "commit (HEAD:results/quick: what a rerun overwrote)")
    p.add_argument("b", type=Path, help="the folder or CSV to compare with it")
    p.add_argument("--z", type=float, default=3.0, help="standard errors of the difference that count as seed "
                                                        "noise (default 3)")
    p.add_argument("--tol", type=float, default=0.0, help="an absolute difference that counts as noise too "
                                                          "(default 0)")
    p.add_argument("--match", choices=("overrides", "variant"), default="overrides",
                   help="match cells on the experiment's command-line overrides (default), or on the hash "
                        "of its whole config (identical configs only)")
    p.add_argument("--ignore", action="append", default=[], metavar="KEY",
                   help="match experiments whatever this command-line key says (repeatable, or KEY,KEY): "
                        "--ignore epochs sets a shortened run beside the whole one, judged where both were")
    p.add_argument("--split", action="append", help="compare only this split (train, val, test; repeatable)")
    p.add_argument("--metric", action="append", help="compare only this metric (acc, loss, ...; repeatable)")
    p.add_argument("--all", action="store_true", help="a line for every cell (default: the cells that differ)")
    args = p.parse_args(argv)
    for flag, value in (("--z", args.z), ("--tol", args.tol)):
        if not value >= 0:  # (NaN too)
            p.error(f"argument {flag}: {value} is below 0")
    ignore = frozenset(k.strip() for given in args.ignore for k in given.split(",") if k.strip())
    if ignore and args.match == "variant":
        p.error("argument --ignore: --match variant compares whole configs, so no key can be ignored: drop one")
    scratch = tempfile.TemporaryDirectory(prefix="amtrain-compare-")
    try:  # every file read and judged before a line is printed: bad input prints its one line alone
        a_path, b_path = (from_git(str(s), Path(scratch.name)) if not s.exists() and ":" in str(s) else s
                          for s in (args.a, args.b))
        files, notes, missing = pairs(a_path, b_path)
        frames = [(name, *(experiments(load(path), args.match, path, ignore) for path in (pa, pb)))
                  for name, pa, pb in files]
        given = set_keys(df for _, a, b in frames for df in (a, b))
        unset = sorted(ignore - given)
        if unset:  # a misspelt key would silently ignore nothing
            raise ConfigError(f"--ignore {', '.join(unset)}: no experiment of A or B sets "
                              f"{'it' if len(unset) == 1 else 'them'} on its command line (they set "
                              f"{', '.join(sorted(given))})")
        reports = [report_file(name, curves(a, args.split, args.metric), curves(b, args.split, args.metric),
                               args.z, args.tol, args.all) for name, a, b in frames]
    except AmtrainError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    finally:
        scratch.cleanup()
    totals: dict = {}
    for lines, counts in reports:
        print("\n".join(lines))
        for k, n in counts.items():
            totals[k] = totals.get(k, 0) + n
    for line in notes:
        print(line)
    shown = ", ".join(f"{n} {v}" for v, n in totals.items() if n)
    print(f"A = {args.a}, B = {args.b}: {len(files)} file{'s' * (len(files) != 1)}, "
          f"{sum(totals.get(v, 0) for v in VERDICTS)} cells in both: {shown or 'none'}")
    bad = totals.get("differs", 0) + totals.get("no common step", 0) + totals["only in A"] + totals["only in B"]
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
