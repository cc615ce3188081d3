#!/usr/bin/env python
"""Paper Figure 8: binary net 784-500(sign)-500(tanh)-10, AM-Adam vs backprop+STE, test error per epoch."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig8_binary", ["fig8_binary"], 20


def main(argv=None):
    a = _plot.args(argv, __doc__)
    df = _plot.load(a.results, SWEEPS[0])
    if df is None:
        return _plot.missing(a.results, NAME, SWEEPS)
    df = _plot.select(df)
    note = _plot.protocol_note(df, a.protocol, PAPER_EPOCHS, "Adam = backprop with a straight-through estimator "
                                                            "for sign; test error on a log scale")
    return _plot.panels(df, NAME, "MNIST, binary network (sign, tanh): AM-Adam vs backprop with STE", "epoch",
                        "epochs", a.results, note, error=True, logy=True)


if __name__ == "__main__":
    main()
