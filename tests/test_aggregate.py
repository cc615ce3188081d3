"""scripts/aggregate.py: mean/std/n over seeds, variants never mixed, unfinished runs listed."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from amtrain.errors import DivergenceError
from amtrain.train import run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "aggregate.py"


def test_aggregate_over_seeds_keeps_variants_apart(make_cfg, tmp_path):
    for lr in ("0.1", "0.05"):
        for seed in (0, 1):
            run(make_cfg("optim=sgd", f"optim.lr={lr}", f"seed={seed}"), tmp_path / "sweep" / f"lr{lr}_s{seed}")
    with pytest.raises(DivergenceError):
        run(make_cfg("optim=sgd", "optim.lr=1e12"), tmp_path / "sweep" / "diverged")
    out = tmp_path / "agg.csv"
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "sweep"), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "diverged" in r.stderr  # the unfinished run is listed
    agg = pd.read_csv(out)
    final = agg[(agg.split == "test") & (agg.metric == "acc") & (agg.epoch == 1) & (agg.step == agg.step.max())]
    assert len(final) == 2 and set(final.settings) == {"optim.lr=0.1", "optim.lr=0.05"}
    assert (final.n_seeds == 2).all() and (final.seeds == "0 1").all()
    raw = pd.concat(pd.read_csv(p / "metrics.csv") for p in (tmp_path / "sweep").glob("lr0.1_s*"))
    raw = raw[(raw.split == "test") & (raw.metric == "acc") & (raw.step == raw.step.max())]
    row = final[final.settings == "optim.lr=0.1"].iloc[0]
    assert row["mean"] == pytest.approx(raw.value.mean()) and row["std"] == pytest.approx(raw.value.std())


def test_seeds_run_with_other_threads_or_seed_batching_are_one_cell(make_cfg, tmp_path):
    """threads and seeds_per_process say how a run was executed, not what it computes: a cell
    whose seeds ran under different values of them (two sweeps at once, a rerun) is one cell."""
    how = {0: ["threads=1"], 1: ["seeds_per_process=1"], 2: []}
    for seed, extra in how.items():
        lines = "".join(f"- {o}\n" for o in ["optim=sgd", f"seed={seed}", *extra])
        run(make_cfg("optim=sgd", f"seed={seed}", *extra), tmp_path / "sweep" / f"s{seed}",
            {".hydra/overrides.yaml": lines})
    out = tmp_path / "agg.csv"
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "sweep"), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    agg = pd.read_csv(out)
    final = agg[(agg.split == "test") & (agg.metric == "acc") & (agg.step == agg.step.max())]
    assert len(final) == 1 and final.n_seeds.iloc[0] == 3 and final.seeds.iloc[0] == "0 1 2"
    assert final.overrides.iloc[0] == "optim=sgd"
