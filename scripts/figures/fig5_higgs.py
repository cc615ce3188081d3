#!/usr/bin/env python
"""Paper Figure 5: HIGGS 28-300-1, online methods' test accuracy over iterations; ADMM and Taylor's 0.64."""
from __future__ import annotations

import _plot

NAME, SWEEPS = "fig5_higgs", ["fig5_higgs", "fig5_higgs_admm"]
TAYLOR = 0.64  # Taylor et al. (2016), whole dataset on 7200 cores


def draw(df, a):
    lines = [(TAYLOR, "Taylor et al. 2016: 0.64 (reported)")]
    admm = _plot.load(a.results, SWEEPS[1])
    if admm is not None:
        admm = _plot.select(admm)
        for _, r in admm[admm.step == admm.step.max()].iterrows():
            lines.append((r["mean"], f"ADMM (ours), {int(r.step)} iterations: {r['mean']:.3f} +- {r['std']:.3f}"))
    iters = df[df.epoch >= 1].groupby("variant").step.max().max()
    note = _plot.protocol_note(df, a.protocol, extra=f"online methods: {iters:,} iterations of 200 samples; "
                                                     "the paper: one epoch of 10.5M rows = 52,500 iterations")
    return _plot.panels(df, NAME, "HIGGS, 28-300-1: online methods vs Taylor et al.'s ADMM", "step",
                        "iterations (mini-batches of 200)", a.results, note, hline=lines, every_eval=True)

def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
