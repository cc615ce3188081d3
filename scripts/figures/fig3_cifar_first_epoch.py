#!/usr/bin/env python
"""Paper Figure 3: CIFAR-10 2x100 / 2x500, online methods, test accuracy over the first epoch (250 mini-batches)."""
from __future__ import annotations

import _plot

NAME, SWEEPS = "fig3_cifar_first_epoch", ["fig3_cifar_first_epoch"]


def main(argv=None):
    a = _plot.args(argv, __doc__)
    df = _plot.load(a.results, SWEEPS[0])
    if df is None:
        return _plot.missing(a.results, NAME, SWEEPS)
    df = _plot.select(df)
    return _plot.panels(df, NAME, "CIFAR-10, fully connected: online methods, first epoch", "step",
                        "mini-batches (200 samples each)", a.results, _plot.protocol_note(df, a.protocol),
                        first_epoch=True, max_x=250)


if __name__ == "__main__":
    main()
