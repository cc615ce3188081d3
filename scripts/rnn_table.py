#!/usr/bin/env python
"""The Elman RNN's read-out x method x d table: test accuracy at the end of chosen epochs.

    python scripts/aggregate.py multirun/rnn_table -o results/quick/rnn_readouts.csv
    python scripts/rnn_table.py results/quick/rnn_readouts.csv results/quick/fig6_rnn.csv

Reads aggregated CSVs (scripts/aggregate.py) of sequential-MNIST runs and prints one
markdown row per (read-out, d, method): mean ± std over the seeds of the test accuracy at
the end of each epoch asked for, and the seeds. A run's read-out and width come from its
overrides (``model.readout=``, ``model.hidden=``), else from ``--readout`` / ``--hidden``
(Figure 6's experiment: sequence, 15).
"""
from __future__ import annotations

import argparse

import pandas as pd

from amtrain.errors import AmtrainError
from amtrain.results import load, override_value


def table(df: pd.DataFrame, epochs, readout: str, hidden: str) -> str:
    df = df[(df.split == "test") & (df.metric == "acc")].copy()
    lines = df["overrides"].fillna("") if "overrides" in df else pd.Series("", index=df.index)
    df["readout"] = [override_value(o, "model.readout") or readout for o in lines]
    df["d"] = [int(override_value(o, "model.hidden") or hidden) for o in lines]
    ends = df.sort_values("step").groupby(["readout", "d", "optim", "epoch"]).tail(1)  # each epoch's last evaluation
    out = ["| read-out | d | method | " + " | ".join(f"epoch {e}" for e in epochs) + " | seeds |",
           "|---|---|---|" + "---|" * (len(epochs) + 1)]
    for (ro, d, optim), g in ends.groupby(["readout", "d", "optim"]):
        by_epoch = g.set_index("epoch")
        cells = []
        for e in epochs:
            if e not in by_epoch.index:
                cells.append("n/a")
                continue
            row = by_epoch.loc[e]
            std = "" if pd.isna(row["std"]) or int(row["n_seeds"]) < 2 else f" ± {row['std']:.3f}"
            cells.append(f"{row['mean']:.3f}{std}")
        seeds = str(g.sort_values("epoch").iloc[-1]["seeds"])
        out.append(f"| {ro} | {d} | {optim} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csvs", nargs="+")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 6, 10])
    p.add_argument("--readout", default="sequence", help="the read-out of runs without a model.readout override")
    p.add_argument("--hidden", default="15", help="d of runs without a model.hidden override")
    a = p.parse_args(argv)
    frames = []
    for f in a.csvs:
        try:
            df = load(f)
        except AmtrainError as e:
            raise SystemExit(f"rnn_table: error: {e}") from None
        if df is None:
            raise SystemExit(f"rnn_table: error: no file {f}: give aggregated CSVs (scripts/aggregate.py -o ...)")
        frames.append(df)
    print(table(pd.concat(frames, ignore_index=True), a.epochs, a.readout, a.hidden))


if __name__ == "__main__":
    main()
