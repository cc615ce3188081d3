#!/usr/bin/env python
"""Figure 9 (amtrain's own): the auxiliary-variable family beside online AM and backprop.

Two panels per dataset (MNIST, Fashion-MNIST), 784-100-100-10 without BatchNorm for every
method: test accuracy against passes over the training data (an online epoch, or one
full-batch iteration), and against training seconds (evaluation excluded), the axis these
papers argue about. Mean over seeds, +-std bands.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

import _plot

NAME, SWEEPS = "fig9_aux_family", ["fig9_aux_family"]
TITLE = "The auxiliary-variable family beside online AM and backprop: 784-100-100-10, no BatchNorm"
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
ORDER = ["am_adam", "am_mem", "sgd", "adam", "am_adam_off", "am_mem_off", "admm", "dladmm", "mdlam", "bcd"]


def draw(df, a):
    datasets = [d for d in DATASETS if d in set(df.dataset)] + sorted(set(df.dataset) - set(DATASETS))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11.0, 4.0 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets):
        d = df[df.dataset == dataset]
        _plot.curves(row[0], d, "epoch", order=ORDER)
        row[0].set_xlabel("passes over the training data (epochs; full-batch iterations)")
        if "wall_time" in d:
            _plot.curves(row[1], d[d.epoch >= 1], "wall_time", order=ORDER)
            row[1].set_xscale("log")
        row[1].set_xlabel("training seconds (log scale; evaluation excluded)")
        for ax, what in zip(row, ("per pass", "per second")):
            ax.set_title(f"{DATASETS.get(dataset, dataset)}: {what}", fontsize=10)
            ax.set_ylim(max(0.0, float(d[d.epoch >= 1]["mean"].min()) - 0.05) if (d.epoch >= 1).any() else 0, 1.0)
        row[0].legend(fontsize=7, ncol=2)
    fig.suptitle(TITLE, fontsize=11)
    note = _plot.protocol_note(df, a.protocol, extra="one pass = one online epoch or one full-batch iteration; "
                                                     "online methods mini-batch 200; seconds on this machine")
    return _plot.save(fig, a.results, NAME, note)


def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
