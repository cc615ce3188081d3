#!/usr/bin/env python
"""Paper Figure 6: sequential MNIST, Elman RNN d=15, AM-Adam vs SGD (and Adam): first epoch and 10 epochs."""
from __future__ import annotations

from pathlib import Path

import _plot
from omegaconf import OmegaConf

from amtrain.results import override_value

NAME, SWEEPS, PAPER_EPOCHS = "fig6_rnn", ["fig6_rnn"], 10
EXPERIMENT = Path(__file__).resolve().parents[2] / "conf" / "experiment" / "fig6_rnn.yaml"
READOUTS = {"last": "the read-out of the last step's ReLU'd state", "mean": "the read-out of the ReLU'd states' mean",
            "sequence": "the read-out of the whole ReLU'd output sequence"}


def readout(df) -> str:
    """The runs' model.readout: an override where every run has the same one, else the experiment's."""
    lines = df["overrides"].fillna("") if "overrides" in df else []
    found = {v for v in (override_value(line, "model.readout") for line in lines) if v is not None}
    if len(found) == 1:
        return found.pop()
    return "several" if found else str(OmegaConf.load(EXPERIMENT).model.readout)


def draw(df, a):
    rows = "overrides" in df and df.overrides.fillna("").str.contains("model.n_inputs=28").all()
    extra = "batch 1024; " + ("T = 28 steps of one image row (the paper: T = 784 pixels)" if rows
                              else "T = 784 steps of one pixel")
    kind = readout(df)
    extra += f"; {READOUTS.get(kind, 'model.readout=' + kind)} (model.readout={kind})"
    return _plot.first_epoch_and_epochs(df, NAME, "Sequential MNIST, Elman RNN (d = 15): AM-Adam vs SGD and Adam",
                                        a.results, _plot.protocol_note(df, a.protocol, PAPER_EPOCHS, extra))

def main(argv=None):
    return _plot.run(argv, __doc__, NAME, SWEEPS, draw)


if __name__ == "__main__":
    main()
