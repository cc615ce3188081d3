#!/usr/bin/env python
"""Paper Figure 6: sequential MNIST, Elman RNN d=15, AM-Adam vs SGD: first epoch and 10 epochs."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig6_rnn", ["fig6_rnn"], 10


def draw(df, a):
    rows = "overrides" in df and df.overrides.fillna("").str.contains("model.n_inputs=28").all()
    extra = "batch 1024; " + ("T = 28 steps of one image row (the paper: T = 784 pixels)" if rows
                              else "T = 784 steps of one pixel")
    return _plot.first_epoch_and_epochs(df, NAME, "Sequential MNIST, Elman RNN (d = 15): AM-Adam vs SGD",
                                        a.results, _plot.protocol_note(df, a.protocol, PAPER_EPOCHS, extra))

def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
