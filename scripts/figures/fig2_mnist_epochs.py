#!/usr/bin/env python
"""Paper Figure 2: MNIST 2x100 / 2x500, online vs offline methods vs ADMM, test accuracy per epoch."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig2_mnist_epochs", ["fig2_mnist_epochs"], 50
TITLE = "MNIST, fully connected: online vs offline methods vs Taylor et al.'s ADMM"


def main(argv=None):
    a = _plot.args(argv, __doc__)
    df = _plot.load(a.results, SWEEPS[0])
    if df is None:
        return _plot.missing(a.results, NAME, SWEEPS)
    df = _plot.select(df)
    note = _plot.protocol_note(df, a.protocol, PAPER_EPOCHS, "offline methods and ADMM: one iteration = one epoch")
    return _plot.panels(df, NAME, TITLE, "epoch", "epochs", a.results, note)


if __name__ == "__main__":
    main()
