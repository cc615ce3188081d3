#!/usr/bin/env python
"""Paper Figure 8: binary net 784-500(sign)-500(tanh)-10, AM-Adam vs backprop+STE, test error per epoch."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig8_binary", ["fig8_binary"], 20
TITLE = "MNIST, binary network (sign, tanh): AM-Adam vs backprop with STE"


def draw(df, a):
    note = _plot.protocol_note(df, a.protocol, PAPER_EPOCHS,
                               "Adam = backprop with a straight-through estimator for sign; test error, log scale")
    return _plot.panels(df, NAME, TITLE, "epoch", "epochs", a.results, note, error=True, logy=True)

def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
