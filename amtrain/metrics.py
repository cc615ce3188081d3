"""Tidy (long-format) metrics, one row per (step, split, metric).

Rows go to ``metrics.partial.csv`` as they come (flushed, so a crash leaves evidence);
``close()`` renames it to ``metrics.csv``. A run that did not finish therefore never
has a ``metrics.csv`` that looks complete. Every row names its run (``run_id``), the
same id as the run's ``config.yaml`` and ``DONE`` (:mod:`amtrain.rundir`), and the data it
read (``data``: the dataset's fingerprint, :mod:`amtrain.provenance`).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict

COLUMNS = ["step", "epoch", "samples_seen", "split", "metric", "value", "wall_time",
           "dataset", "model", "optim", "mode", "seed", "data", "run_id"]
FINAL, PARTIAL = "metrics.csv", "metrics.partial.csv"


class MetricsWriter:
    """``append``: go on writing a resumed run's partial file (cut back to its checkpoint)."""

    def __init__(self, out_dir, ids: Dict[str, object], append: bool = False):
        self.dir = Path(out_dir)
        self.ids = [ids[c] for c in COLUMNS[7:]]  # dataset .. run_id, in column order
        self.path = self.dir / PARTIAL
        self._fh = open(self.path, "a" if append else "w", newline="")
        self._csv = csv.writer(self._fh)
        if not append:
            self._csv.writerow(COLUMNS)

    def offset(self) -> int:
        """Bytes written so far (flushed): where a checkpoint's resumed run goes on writing."""
        self._fh.flush()
        return self._fh.tell()

    def write(self, step: int, epoch: int, samples_seen: int, split: str, metrics: Dict[str, float],
              wall_time: float) -> None:
        for name, value in metrics.items():
            self._csv.writerow([step, epoch, samples_seen, split, name, repr(float(value)),
                                f"{wall_time:.4f}", *self.ids])
        self._fh.flush()

    def close(self) -> Path:
        """Finish: flush to disk and give the file its final name."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        final = self.dir / FINAL
        os.replace(self.path, final)
        return final

    def abort(self) -> None:
        """Leave the partial file (for inspection) under its partial name."""
        if not self._fh.closed:
            self._fh.close()
