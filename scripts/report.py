#!/usr/bin/env python
"""REPORT.md: the paper's numbers beside ours, per figure, from the aggregated CSVs.

    python scripts/report.py --results results/quick --out results/REPORT.md
    python scripts/report.py --results results/full --fallback results/quick --out results/REPORT.md

With ``--fallback``, each figure comes from ``--results`` where that protocol has its CSVs
and from the fallback protocol otherwise; every section names its protocol.

For each figure of conf/reproduce.yaml: the checks of scripts/paper_claims.yaml (the
paper's statement, its number, ours as mean +- std over n seeds, a verdict), the final
test accuracy of every (model, method), the figure files, and the notes of
``<results>/notes.yaml`` (why a number differs; written by a person after reading the
numbers). Verdicts are mechanical: "reproduced" or "differs", by the rule in each check.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Optional

import pandas as pd
import yaml

from amtrain.results import METHOD_LABELS as LABELS
from amtrain.errors import AmtrainError, DataError
from amtrain.results import end_of_epochs, end_of_run, load, select, writable_file, write_atomically

REPO = Path(__file__).resolve().parents[1]


def _test_acc(results: Path, sweep: str) -> Optional[pd.DataFrame]:
    df = load(results / f"{sweep}.csv")
    return None if df is None else select(df)


def code_line(results: Path, sweeps) -> list:
    """Which amtrain code and data the figure's runs recorded (aggregate.py's ``code`` and
    ``data`` columns): a line when any did, and a warning when they ran on more than one version."""
    codes, data = set(), set()
    for sweep in sweeps:
        df = load(results / f"{sweep}.csv")
        if df is not None and "code" in df:
            codes |= {c for cell in df.code.dropna() for c in str(cell).split()}
        if df is not None and "data" in df:
            data |= {(name, d) for name, cell in zip(df.dataset, df.data.fillna("")) for d in str(cell).split()}
    if not codes:
        return []
    more = " (more than one version: see scripts/aggregate.py's notes)" if len(codes) > 1 else ""
    read = f"; data {', '.join(f'{d} ({name})' for name, d in sorted(data))}" if data else ""
    return ["", f"Code (amtrain/provenance.py): {', '.join(sorted(codes))}{more}{read}."]


def _at(df: pd.DataFrame, at) -> pd.DataFrame:
    """One row per variant: the evaluation at `at` (last, {epoch: N}, {step: N})."""
    if at == "last":
        return end_of_run(df)
    if "epoch" in at:
        return end_of_epochs(df[df.epoch == at["epoch"]])
    return df[df.step == at["step"]]


def _fmt(row) -> str:
    sd = "" if pd.isna(row["std"]) else f" ± {row['std']:.3f}"
    return f"{row['mean']:.3f}{sd} (n={int(row.n_seeds)})"


def _where(at) -> str:
    return "end of run" if at == "last" else ", ".join(f"{k} {v}" for k, v in at.items())


def check(results: Path, c: dict) -> dict:
    """One claim of paper_claims.yaml: its labels, our numbers and a verdict."""
    out = {"claim": c.get("paper_text") or c.get("paper"), "paper": "", "ours": "no data", "verdict": "not run"}
    if c["kind"] == "value":
        out["claim"] = c.get("paper_text") or f"{LABELS[c['optim']]} on {c['model']}, {_where(c['at'])}"
        out["paper"] = f"{c['paper']:.2f}"
    elif c["kind"] == "order":
        out["paper"] = f"{LABELS[c['higher']]} > " + ", ".join(LABELS[m] for m in c["than"])
    elif c["kind"] == "level":
        out["paper"] = f"{LABELS[c['optim']]} = {LABELS[c['as']]} (within {c['tol']})"
    elif c["kind"] == "reach":
        out["paper"] = f"< {c['paper_steps']:,} iterations"
    df = _test_acc(results, c["sweep"])
    if df is None:
        return out
    df = df[df.model == c["model"]]
    if "dataset" in c:
        df = df[df.dataset == c["dataset"]]
    if c["kind"] == "value":
        d = _at(df[df.optim == c["optim"]], c["at"])
        if len(d):
            r = d.iloc[0]
            out["ours"] = _fmt(r) + (f", epoch {int(r.epoch)}" if c["at"] == "last" else "")
            ok = abs(r["mean"] - c["paper"]) <= c["tol"]
            out["verdict"] = "reproduced" if ok else f"differs ({r['mean'] - c['paper']:+.3f}; tolerance {c['tol']})"
    elif c["kind"] == "order":
        d = _at(df, c["at"]).set_index("optim")
        methods = [c["higher"]] + c["than"]
        if all(m in d.index for m in methods):
            out["ours"] = f"{c['model']}, {_where(c['at'])}: " + "; ".join(
                f"{LABELS[m]} {d.loc[m, 'mean']:.4f}" for m in methods)
            lost = [m for m in c["than"] if d.loc[c["higher"], "mean"] <= d.loc[m, "mean"]]
            out["verdict"] = "reproduced" if not lost else "differs (not above " + ", ".join(LABELS[m] for m in lost) + ")"
    elif c["kind"] == "level":
        d = _at(df, c["at"]).set_index("optim")
        if c["optim"] in d.index and c["as"] in d.index:
            a, b = d.loc[c["optim"]], d.loc[c["as"]]
            out["ours"] = f"{c['model']}, {_where(c['at'])}: {LABELS[c['optim']]} {_fmt(a)}; {LABELS[c['as']]} {_fmt(b)}"
            gap = a["mean"] - b["mean"]
            out["verdict"] = "reproduced" if abs(gap) <= c["tol"] else f"differs ({gap:+.3f}; tolerance {c['tol']})"
    elif c["kind"] == "reach":
        runs = df[df.optim == c["optim"]]
        reached = runs[runs["mean"] >= c["threshold"]]
        if len(reached):
            first = int(reached.step.min())
            out["ours"] = f"{first:,} iterations (mean of {int(reached.n_seeds.min())} seeds, evaluated every few)"
            out["verdict"] = "reproduced" if first < c["paper_steps"] else "differs (slower)"
        elif len(runs):
            last = int(runs.step.max())
            out["ours"] = f"not within {last:,} iterations"
            out["verdict"] = "differs" if last >= c["paper_steps"] else "not reached in our budget"
    return out


def final_table(results: Path, sweeps) -> list:
    lines = []
    for sweep in sweeps:
        df = _test_acc(results, sweep)
        if df is None:
            continue
        d = end_of_run(df)
        many = d.dataset.nunique() > 1
        lines += ["", f"Test accuracy at the end of the run, `{sweep}.csv`:", "",
                  f"| {'dataset | ' if many else ''}model | method | epochs | test accuracy |",
                  f"|{'---|' if many else ''}---|---|---|---|"]
        for _, r in d.sort_values(["dataset", "model", "mean"], ascending=[True, True, False]).iterrows():
            extra = f" ({r.settings})" if r.settings else ""
            lines.append(f"| {r.dataset + ' | ' if many else ''}{r.model} | {LABELS.get(r.optim, r.optim)}{extra} | "
                         f"{int(r.epoch)} | {_fmt(r)} |")
    return lines


def _seconds_per_pass(run: pd.DataFrame) -> float:
    last = run[run.step == run.step.max()].iloc[0]
    return float(last.wall_time) / max(int(last.epoch), 1) if "wall_time" in run else float("nan")


def epochs_table(results: Path, sweeps, epochs) -> list:
    """Test accuracy after the given epochs (iterations of a full-batch method) and seconds per iteration."""
    lines = []
    for sweep in sweeps:
        df = _test_acc(results, sweep)
        if df is None:
            continue
        df = end_of_epochs(df)
        head = " | ".join(f"after {e}" for e in epochs)
        lines += ["", f"Test accuracy by iteration, and training seconds per iteration (`{sweep}.csv`):", "",
                  f"| dataset | model | method | {head} | s / iteration | seeds |",
                  "|---|---|---|" + "---|" * len(epochs) + "---|---|"]
        for (dataset, model, optim, settings), run in df.groupby(["dataset", "model", "optim", "settings"]):
            cells = []
            for e in epochs:
                at = run[run.epoch == e]
                cells.append(_fmt(at.iloc[0]) if len(at) else "not run")
            extra = f" ({settings})" if settings else ""
            lines.append(f"| {dataset} | {model} | {LABELS.get(optim, optim)}{extra} | {' | '.join(cells)} | "
                         f"{_seconds_per_pass(run):.2f} | {run.seeds.iloc[-1]} |")
    return lines


def standing(results: Path, sweeps, reference: str) -> list:
    """Where each method stands against ``reference`` (AM-Adam): per pass, and per second."""
    lines = []
    for sweep in sweeps:
        df = _test_acc(results, sweep)
        if df is None or "wall_time" not in df:
            continue
        df = end_of_epochs(df)
        for dataset, d in df.groupby("dataset"):
            ref = d[d.optim == reference].sort_values("epoch")
            if not len(ref):
                continue
            ref_last = ref.iloc[-1]
            lines += ["", f"{dataset}: each method beside {LABELS.get(reference, reference)} "
                          f"({_fmt(ref_last)} after {int(ref_last.epoch)} passes, {float(ref_last.wall_time):.1f} s).",
                      "'Same seconds' is " + LABELS.get(reference, reference) + "'s accuracy after as many training "
                      "seconds as the method's whole run took (the last epoch within them).", "",
                      "| method | after the last pass | vs " + LABELS.get(reference, reference) + " | seconds | "
                      "same seconds, " + LABELS.get(reference, reference) + " | passes to 90% of "
                      + LABELS.get(reference, reference) + "'s final |", "|---|---|---|---|---|---|"]
            goal = 0.9 * float(ref_last["mean"])
            for optim, run in sorted(d.groupby("optim"), key=lambda kv: -kv[1].sort_values("epoch").iloc[-1]["mean"]):
                run = run.sort_values("epoch")
                last = run.iloc[-1]
                seconds = float(last.wall_time)
                within = ref[ref.wall_time <= seconds]
                same = f"{float(within.iloc[-1]['mean']):.3f}" if len(within) else "(before its first epoch)"
                reach = run[run["mean"] >= goal]
                passes = str(int(reach.epoch.min())) if len(reach) else f"not within {int(last.epoch)}"
                lines.append(f"| {LABELS.get(optim, optim)} | {_fmt(last)} | {float(last['mean']) - float(ref_last['mean']):+.3f} | "
                             f"{seconds:.1f} | {same} | {passes} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results/quick")
    p.add_argument("--out", default=None, help="default: <results>/REPORT.md")
    p.add_argument("--fallback", default=None,
                   help="another protocol's results (e.g. results/quick) for the figures --results has no CSV for")
    a = p.parse_args(argv)
    primary = Path(a.results)
    fallback = Path(a.fallback) if a.fallback else None
    out = Path(a.out or primary / "REPORT.md")
    for folder, flag in ((primary, "--results"), (fallback, "--fallback")):
        if folder is not None and not folder.is_dir():
            raise SystemExit(f"report: error: {flag} {folder} is not a folder: give the folder of the aggregated "
                             "CSVs (results/quick or results/full)")
    try:
        writable_file(out, "choose another --out")
        write_report(primary, fallback, out)
    except AmtrainError as e:  # an output that cannot be written, a CSV that is not aggregate.py's
        raise SystemExit(f"report: error: {e}") from None


def write_report(primary: Path, fallback: Optional[Path], out: Path) -> None:
    """REPORT.md from the CSVs in ``primary`` (and ``fallback`` for the figures it lacks)."""
    plan = yaml.safe_load((REPO / "conf" / "reproduce.yaml").read_text())["figures"]
    claims = yaml.safe_load((REPO / "scripts" / "paper_claims.yaml").read_text())
    rel = lambda p: Path(os.path.relpath(Path(p).resolve(), out.parent.resolve())).as_posix()  # noqa: E731

    def notes_of(results: Path) -> dict:
        path = results / "notes.yaml"
        if not path.exists():
            return {}
        try:
            notes = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise DataError(f"{path} is not valid YAML ({str(e).splitlines()[0]}): mend it, or move it aside") from None
        if not isinstance(notes, dict):
            raise DataError(f"{path} is not a mapping of figure names to text: mend it, or move it aside")
        return notes

    def source(spec) -> Path:
        """The figure's protocol: --results where it has one of the figure's CSVs, else --fallback."""
        if fallback is None or any((primary / f"{sweep}.csv").exists() for sweep in spec["sweeps"]):
            return primary
        return fallback

    sources = [primary] + ([fallback] if fallback else [])
    names = " protocol, " .join(r.name for r in sources)
    lines = [f"# Our numbers beside the paper's ({names} protocol{' where the first was not run' if fallback else ''})",
             "", "Generated by `scripts/report.py` from the aggregated CSVs in "
             + " and ".join(f"`{rel(r)}/`" for r in sources) + "; every number is test accuracy (mean ± std over n "
             "seeds). Protocols: conf/reproduce.yaml; checks: scripts/paper_claims.yaml.", ""]
    for results in sources:
        intro = notes_of(results).get("intro")
        if intro:
            lines += ([f"### The {results.name} protocol", ""] if fallback else []) + [intro.strip(), ""]
    for results in sources:
        runs = results / "runs.csv"
        if runs.exists():
            rows = list(csv.DictReader(runs.open()))
            total = sum(float(r["seconds"] or 0) for r in rows)
            lines += [f"Sweep time summed over the {len(rows)} invocations in `{rel(runs)}`: {total / 60:.1f} min "
                      "(reruns included, whether they started afresh or resumed; not the time of one pass of "
                      "the protocol).", ""]
    verdicts = {"reproduced": 0, "differs": 0, "other": 0}
    for fig, spec in plan.items():
        results = source(spec)
        notes = notes_of(results)
        lines += [f"## {fig}: {spec['title']}", ""]
        if fallback is not None:
            lines += [f"Protocol: {results.name} (`{rel(results)}/`).", ""]
        png = results / "figures" / f"{fig}.png"
        if png.exists():
            lines += [f"![{fig}]({rel(png)})", ""]
        if claims.get(fig):
            lines += ["| claim | published value | ours | verdict |", "|---|---|---|---|"]
        for c in claims.get(fig, []):
            r = check(results, c)
            if r["verdict"] == "not run" and fallback is not None and results != fallback:
                r = check(fallback, c)  # a part of the figure the first protocol did not run
                if r["verdict"] != "not run":
                    r["ours"] += f" ({fallback.name} protocol)"
            key = r["verdict"].split(" ")[0]
            verdicts[key if key in verdicts else "other"] += 1
            lines.append(f"| {r['claim']} | {r['paper']} | {r['ours']} | {r['verdict']} |")
        if spec.get("table_epochs"):
            lines += epochs_table(results, spec["sweeps"], spec["table_epochs"])
        else:
            lines += final_table(results, spec["sweeps"])
        if spec.get("standing"):
            lines += standing(results, spec["sweeps"], spec["standing"])
        lines += code_line(results, spec["sweeps"])
        if fig in notes:
            lines += ["", notes[fig].strip()]
        lines.append("")
    lines.insert(4, f"Checks: {verdicts['reproduced']} reproduced, {verdicts['differs']} differ, "
                    f"{verdicts['other']} not run (no data or outside the budget).\n")
    write_atomically(out, lambda tmp: tmp.write_text("\n".join(lines) + "\n"), "choose another --out")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
