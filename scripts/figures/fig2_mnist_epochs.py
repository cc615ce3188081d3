#!/usr/bin/env python
"""Paper Figure 2: MNIST 2x100 / 2x500, online vs offline methods vs ADMM, test accuracy per epoch."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig2_mnist_epochs", ["fig2_mnist_epochs"], 50
TITLE = "MNIST, fully connected: online vs offline methods vs Taylor et al.'s ADMM"


def draw(df, a):
    return _plot.epoch_panels(df, a, NAME, TITLE, PAPER_EPOCHS, "offline methods and ADMM: one iteration = one epoch")


def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
