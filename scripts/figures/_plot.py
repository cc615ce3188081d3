"""Shared drawing code of the figure scripts: mean curves with std bands from aggregated CSVs.

Every figure script reads only ``<results>/<sweep>.csv`` (written by scripts/aggregate.py)
and writes ``<results>/figures/<figure>.png`` and ``.pdf``. The protocol that produced
the numbers (seeds, epochs, training samples, reductions) is printed under each figure.
"""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from amtrain.errors import AmtrainError  # noqa: E402
from amtrain.results import METHOD_LABELS, end_of_epochs, load as load_csv, select, write_atomically  # noqa: E402

LABELS = {**METHOD_LABELS, "admm": "ADMM (Taylor et al.)"}
COLORS = {"am_adam": "C3", "am_mem": "C1", "sgd": "C0", "adam": "C2", "am_adam_off": "C5", "am_mem_off": "C4",
          "admm": "C7", "dladmm": "C8", "mdlam": "C9", "bcd": "C6"}
MODELS = {"mlp_2x100": "784-100-100-10", "mlp_2x500": "784-500-500-10", "mlp_2x1000": "784-1000-1000-10",
          "mlp_3x1500": "784-1500-1500-1500-10", "higgs_mlp": "28-300-1",
          "lenet5": "LeNet-5", "binary_mlp": "784-500(sign)-500(tanh)-10", "rnn": "Elman RNN"}


def args(argv=None, doc: str = "") -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--results", default="results/quick", help="folder with the aggregated CSVs")
    p.add_argument("--protocol", default=None, help="label for the caption (default: the folder's name)")
    a = p.parse_args(argv)
    a.results = Path(a.results)
    a.protocol = a.protocol or a.results.name
    return a


def run(argv, doc: str, name: str, sweeps: List[str], draw) -> List[Path]:
    """A figure script's main: read the first sweep's CSV (test accuracy) and ``draw(df, args)``."""
    a = args(argv, doc)
    try:
        df = load(a.results, sweeps[0])
        if df is None:
            return missing(a.results, name, sweeps)
        return draw(select(df), a)
    except AmtrainError as e:  # a CSV that is not aggregate.py's, an output that cannot be written
        raise SystemExit(f"{name}: error: {e}") from None


def load(results: Path, sweep: str) -> Optional[pd.DataFrame]:
    return load_csv(Path(results) / f"{sweep}.csv")


def curves(ax, df: pd.DataFrame, x: str, error: bool = False, first_epoch: bool = False,
           every_eval: bool = False, order: Optional[List[str]] = None) -> None:
    """One line per method (and per variant), mean over seeds with a +-std band."""
    if first_epoch:  # the evaluations inside epoch 1 and the starting point
        df = df[df.epoch <= 1]
    elif not every_eval:  # one point per epoch: the end-of-epoch evaluations (and the start)
        df = end_of_epochs(df)
    methods = [m for m in (order or LABELS) if m in set(df.optim)] + sorted(set(df.optim) - set(order or LABELS))
    for m in methods:
        for (v, settings), g in df[df.optim == m].groupby(["variant", "settings"]):
            g = g.sort_values(x)
            y = 1 - g["mean"] if error else g["mean"]
            sd = g["std"].fillna(0)
            label = LABELS.get(m, m) + (f" ({settings})" if settings and df[df.optim == m].variant.nunique() > 1
                                         else "")
            ax.plot(g[x], y, label=label, color=COLORS.get(m), lw=1.5)
            ax.fill_between(g[x], y - sd, y + sd, color=COLORS.get(m), alpha=0.2, lw=0)
    ax.grid(alpha=0.3)
    ax.set_ylabel("test error" if error else "test accuracy")


def protocol_note(df: pd.DataFrame, protocol: str, paper_epochs: Optional[int] = None, extra: str = "") -> str:
    """What was run: seeds, epochs, training samples per epoch, settings that differ from the paper."""
    seeds = f"{int(df.n_seeds.min())}" + (f"-{int(df.n_seeds.max())}" if df.n_seeds.max() != df.n_seeds.min()
                                           else "")
    parts = [f"{protocol} protocol", f"mean +- std over {seeds} seeds"]
    per_model = []
    for model, g in df.groupby("model"):
        epochs = int(g.epoch.max())
        per_epoch = g[g.epoch == 1].samples_seen.max()
        txt = f"{MODELS.get(model, model)}: {epochs} epoch{'s' if epochs != 1 else ''}"
        if paper_epochs and epochs < paper_epochs:
            txt += f" (paper {paper_epochs})"
        if per_epoch and per_epoch == per_epoch:
            txt += f", {int(per_epoch):,} training samples/epoch"
        runs = _overrides(g)
        if runs:
            txt += f"; run with {runs}"
        per_model.append(txt)
    return "; ".join(parts) + "\n" + "; ".join(per_model) + (f"\n{extra}" if extra else "")


def _overrides(df: pd.DataFrame) -> str:
    """The command-line overrides the runs had, less the grid's own keys (method, model, figure)."""
    if "overrides" not in df:
        return ""
    seen = []
    for line in df.overrides.fillna("").unique():
        for o in str(line).split():
            if o != "|" and o.split("=")[0] not in ("optim", "model", "experiment") and o not in seen:
                seen.append(o)
    return " ".join(seen)


def save(fig, results: Path, name: str, note: str) -> List[Path]:
    width = int(fig.get_figwidth() * 19)  # characters of 7-point text across the figure
    note = "\n".join(textwrap.fill(line, width) for line in note.splitlines())
    fig.text(0.01, 0.005, note, fontsize=7, va="bottom", ha="left", color="0.3")
    fig.tight_layout(rect=(0, 0.03 + 0.025 * note.count("\n"), 1, 1))
    out = Path(results) / "figures"
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    try:  # each file whole or not at all (an interrupted redraw keeps the old figure)
        write_atomically(paths[0], lambda tmp: fig.savefig(tmp, format="png", dpi=150), "choose another --results")
        write_atomically(paths[1], lambda tmp: fig.savefig(tmp, format="pdf", metadata={"CreationDate": None}),
                         "choose another --results")  # reproducible bytes: redraws leave git clean
    finally:
        plt.close(fig)
    return paths


def missing(results: Path, name: str, sweeps: List[str]) -> List[Path]:
    print(f"{name}: no aggregated results ({', '.join(s + '.csv' for s in sweeps)}) in {results}; nothing drawn")
    return []


def panels(df: pd.DataFrame, name: str, title: str, x: str, xlabel: str, results: Path, note: str,
           first_epoch: bool = False, error: bool = False, max_x=None, hline=None,
           every_eval: bool = False, logy: bool = False) -> List[Path]:
    """One panel per model, the figure's methods as lines."""
    models = [m for m in MODELS if m in set(df.model)] + sorted(set(df.model) - set(MODELS))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models):
        d = df[df.model == model]
        if max_x is not None:
            d = d[d[x] <= max_x]
        curves(ax, d, x, error=error, first_epoch=first_epoch, every_eval=every_eval)
        if logy:
            ax.set_yscale("log")
        for (y, label), ls in zip(hline or [], ["--", ":", "-.", (0, (5, 1))] * 4):
            ax.axhline(y, ls=ls, color="0.35", lw=1, label=label)
        ax.set_xlabel(xlabel)
        ax.set_title(MODELS.get(model, model), fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save(fig, results, name, note)


def first_epoch_and_epochs(df: pd.DataFrame, name: str, title: str, results: Path, note: str,
                           error: bool = False) -> List[Path]:
    """Two panels for one model: the first epoch by mini-batch (the paper's inset), then by epoch."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.4, 4.0))
    curves(a1, df, "step", error=error, first_epoch=True)
    a1.set_xlabel("mini-batches (first epoch)")
    a1.set_title("first epoch", fontsize=10)
    curves(a2, df, "epoch", error=error)
    a2.set_xlabel("epochs")
    a2.set_title("all epochs", fontsize=10)
    for ax in (a1, a2):
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save(fig, results, name, note)


def epoch_panels(df: pd.DataFrame, a, name: str, title: str, paper_epochs: int, extra: str) -> List[Path]:
    """One panel per model, test accuracy at the end of every epoch (Figures 2 and 4)."""
    note = protocol_note(df, a.protocol, paper_epochs, extra)
    return panels(df, name, title, "epoch", "epochs", a.results, note)
