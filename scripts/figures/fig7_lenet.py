#!/usr/bin/env python
"""Paper Figure 7: LeNet-5 on MNIST, AM-Adam vs SGD vs Adam: first epoch and all epochs."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig7_lenet", ["fig7_lenet"], 10


def draw(df, a):
    note = _plot.protocol_note(df, a.protocol, PAPER_EPOCHS, "the paper does not state its epochs; 10 in ours")
    return _plot.first_epoch_and_epochs(df, NAME, "MNIST, LeNet-5: AM-Adam vs SGD vs Adam", a.results, note)

def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
