#!/usr/bin/env python
"""Paper Figure 6: sequential MNIST, Elman RNN d=15, AM-Adam vs SGD: first epoch and 10 epochs."""
from __future__ import annotations

import _plot

NAME, SWEEPS, PAPER_EPOCHS = "fig6_rnn", ["fig6_rnn"], 10


def main(argv=None):
    a = _plot.args(argv, __doc__)
    df = _plot.load(a.results, SWEEPS[0])
    if df is None:
        return _plot.missing(a.results, NAME, SWEEPS)
    df = _plot.select(df)
    rows = "overrides" in df and df.overrides.fillna("").str.contains("model.n_inputs=28").all()
    extra = "batch 1024; " + ("T = 28 steps of one image row (the paper: T = 784 pixels)" if rows
                              else "T = 784 steps of one pixel")
    note = _plot.protocol_note(df, a.protocol, PAPER_EPOCHS, extra)
    return _plot.first_epoch_and_epochs(df, NAME, "Sequential MNIST, Elman RNN (d = 15): AM-Adam vs SGD",
                                        a.results, note)


if __name__ == "__main__":
    main()
