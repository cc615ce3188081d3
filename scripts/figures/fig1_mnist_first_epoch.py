#!/usr/bin/env python
"""Paper Figure 1: MNIST 2x100 / 2x500, online methods, test accuracy over the first 50 mini-batches."""
from __future__ import annotations

import _plot

NAME, SWEEPS = "fig1_mnist_first_epoch", ["fig1_mnist_first_epoch"]


def draw(df, a):
    return _plot.panels(df, NAME, "MNIST, fully connected: online methods, first epoch", "step",
                        "mini-batches (200 samples each)", a.results, _plot.protocol_note(df, a.protocol),
                        first_epoch=True, max_x=50)


def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
