#!/usr/bin/env python
"""Paper Figure 3: CIFAR-10 2x100 / 2x500, online methods, test accuracy over the first epoch (250 mini-batches)."""
from __future__ import annotations

import _plot

NAME, SWEEPS = "fig3_cifar_first_epoch", ["fig3_cifar_first_epoch"]


def draw(df, a):
    note = _plot.protocol_note(df, a.protocol)
    return _plot.panels(df, NAME, "CIFAR-10, fully connected: online methods, first epoch", "step",
                        "mini-batches (200 samples each)", a.results, note, first_epoch=True, max_x=250)


def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
