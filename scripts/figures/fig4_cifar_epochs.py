#!/usr/bin/env python
"""Paper Figure 4: CIFAR-10 2x100 / 2x500, online vs offline methods, test accuracy per epoch."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig4_cifar_epochs", ["fig4_cifar_epochs"], 50
TITLE = "CIFAR-10, fully connected: online vs offline methods"


def draw(df, a):
    return _plot.epoch_panels(df, a, NAME, TITLE, PAPER_EPOCHS, "offline methods: one iteration = one epoch")


def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
