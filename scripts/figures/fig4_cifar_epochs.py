#!/usr/bin/env python
"""Paper Figure 4: CIFAR-10 2x100 / 2x500, online vs offline methods, test accuracy per epoch."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig4_cifar_epochs", ["fig4_cifar_epochs"], 50
TITLE = "CIFAR-10, fully connected: online vs offline methods"


def main(argv=None):
    a = _plot.args(argv, __doc__)
    df = _plot.load(a.results, SWEEPS[0])
    if df is None:
        return _plot.missing(a.results, NAME, SWEEPS)
    df = _plot.select(df)
    note = _plot.protocol_note(df, a.protocol, PAPER_EPOCHS, "offline methods: one iteration = one epoch")
    return _plot.panels(df, NAME, TITLE, "epoch", "epochs", a.results, note)


if __name__ == "__main__":
    main()
