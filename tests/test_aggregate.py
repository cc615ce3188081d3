"""scripts/aggregate.py: mean/std/n over seeds, variants never mixed, unfinished runs listed."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

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


def test_each_seed_counts_once_however_the_folders_are_given(make_cfg, tmp_path):
    """A folder given twice, inside another given folder, or copied: read once. Another run of
    the same seed and configuration: an error, since the mean would weigh that seed double."""
    import shutil

    for seed in (0, 1, 2):
        run(make_cfg("optim=sgd", f"seed={seed}"), tmp_path / "a" / f"s{seed}")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    out = tmp_path / "agg.csv"

    def aggregate(*dirs):
        return subprocess.run([sys.executable, str(SCRIPT), *map(str, dirs), "-o", str(out)], capture_output=True,
                              text=True)

    r = aggregate(tmp_path / "a")
    assert r.returncode == 0, r.stderr
    once = pd.read_csv(out)
    for dirs, notes in (((tmp_path / "a", tmp_path / "a"), 0), ((tmp_path / "a", tmp_path / "a" / "s1"), 0),
                        ((tmp_path / "a", tmp_path / "copy"), 3)):
        r = aggregate(*dirs)
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("note: ") == notes and r.stderr.count(": read once") == notes
        pd.testing.assert_frame_equal(pd.read_csv(out), once)  # the same means, stds and n_seeds
    assert (once.n_seeds == 3).all()
    run(make_cfg("optim=sgd", "seed=1"), tmp_path / "b" / "s1")  # seed 1 again, in another folder
    out.write_text("kept")
    r = aggregate(tmp_path / "a", tmp_path / "b")
    a, b = tmp_path / "a" / "s1", tmp_path / "b" / "s1"
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        f"aggregate: error: seed 1 of one configuration ran twice, in {a} and {b}")
    assert out.read_text() == "kept"


def test_a_configuration_whose_seeds_ran_on_other_code_is_said_and_each_cell_names_its_code(make_cfg, tmp_path):
    """A sweep resumed after the code changed skips its finished seeds: the mean then mixes two
    versions of the method. aggregate.py says which seeds ran on which, and the CSV's ``code``
    column lists every cell's (amtrain.provenance)."""
    from amtrain import provenance

    for seed in (0, 1, 2):
        run(make_cfg("optim=sgd", f"seed={seed}"), tmp_path / "sweep" / f"s{seed}")
    out = tmp_path / "agg.csv"
    cmd = [sys.executable, str(SCRIPT), str(tmp_path / "sweep"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    now = provenance.code_fingerprint()[:8]
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
    assert (pd.read_csv(out, dtype={"code": str}).code == now).all()
    for seed, line in ((1, "# code 0123456789abcdef git 0000000 torch 2.0\n"), (2, "")):  # older code; none recorded
        config = tmp_path / "sweep" / f"s{seed}" / "config.yaml"
        head, _, rest = config.read_text().split("\n", 2)
        config.write_text(f"{head}\n{line}{rest}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (f"note: synthetic mlp_2x100 sgd (variant {pd.read_csv(out).variant.iloc[0]}): its seeds ran on 3 versions "
            f"of amtrain's code (not recorded: seed 2; 01234567: seed 1; {now}: seed 0); rerun the older ones with "
            "resume=false to compare like with like") in r.stderr
    assert (pd.read_csv(out, dtype={"code": str}).code == " ".join(sorted(["01234567", now]))).all()
    assert provenance.other_code(tmp_path / "sweep" / "s1") == (
        f"on other amtrain code (01234567, git 0000000; this is {now}, git {provenance.git_commit()[:8]})")
    assert provenance.other_code(tmp_path / "sweep" / "s0") is None
    assert provenance.other_code(tmp_path / "sweep" / "s2") is None  # nothing recorded to compare


def test_seeds_that_read_different_data_are_refused_and_each_cell_names_its_data(make_cfg, tmp_path):
    """Two copies of a dataset under one name (a cluster node with its own copy, a re-download
    of another version) are two experiments: aggregate.py refuses to average them, naming each
    fingerprint's seeds. The same samples in another folder or format are one dataset. A run
    whose rows read two datasets is left out; runs that recorded none are noted."""
    from amtrain.data.fake import write_mnist

    roots = {"same": write_mnist(tmp_path / "d0", seed=0), "same_gz": write_mnist(tmp_path / "d1", seed=0, gz=True),
             "other": write_mnist(tmp_path / "d2", seed=5)}

    def seed_on(seed, root, where="sweep"):
        run(make_cfg("dataset=mnist", f"dataset.root={roots[root]}", "dataset.download=false", "optim=sgd",
                     f"seed={seed}"), tmp_path / where / f"s{seed}")

    seed_on(0, "same")
    seed_on(1, "same_gz")
    seed_on(2, "same")
    out = tmp_path / "agg.csv"
    cmd = [sys.executable, str(SCRIPT), str(tmp_path / "sweep"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
    agg = pd.read_csv(out, dtype={"data": str})
    recorded = pd.read_csv(tmp_path / "sweep" / "s0" / "metrics.csv", dtype={"data": str}).data.iloc[0]
    assert (agg.data == recorded[:8]).all() and (agg.n_seeds == 3).all()

    seed_on(3, "other")
    theirs = pd.read_csv(tmp_path / "sweep" / "s3" / "metrics.csv", dtype={"data": str}).data.iloc[0]
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    each = sorted([f"data {recorded[:8]}: seeds 0 1 2 (e.g. {tmp_path / 'sweep' / 's0'})",
                   f"data {theirs[:8]}: seed 3 (e.g. {tmp_path / 'sweep' / 's3'})"])
    assert lines[0].startswith(f"aggregate: error: mnist mlp_2x100 sgd (variant {agg.variant.iloc[0]}): its seeds "
                               f"read different data ({'; '.join(each)}): the dataset's files differ")
    assert pd.read_csv(out, dtype={"data": str}).equals(agg)  # the CSV written before is kept

    import shutil

    shutil.rmtree(tmp_path / "sweep" / "s3")
    metrics = tmp_path / "sweep" / "s2" / "metrics.csv"
    rows = pd.read_csv(metrics, dtype={"data": str})
    rows.loc[rows.index[-1], "data"] = theirs  # went on after its data changed
    rows.to_csv(metrics, index=False)
    legacy = tmp_path / "sweep" / "s1" / "metrics.csv"
    pd.read_csv(legacy).drop(columns=["data"]).to_csv(legacy, index=False)  # made before runs recorded it
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (f"missing cell: {tmp_path / 'sweep' / 's2'}: its rows read different data "
            f"({', '.join(sorted([recorded, theirs]))}): it went on from a checkpoint after the dataset's files "
            "changed; rerun it with resume=false") in r.stderr
    assert "1 of its seeds recorded no data fingerprint" in r.stderr
    agg = pd.read_csv(out, dtype={"data": str})
    assert (agg.seeds == "0 1").all() and (agg.data == recorded[:8]).all()


def test_a_data_file_counts_by_its_name_not_its_folder(tmp_path):
    """HIGGS.h5 and HIGGS-subset.h5 are different data: never one variant. The same file in
    another folder (another machine, another AMTRAIN_DATA) is the same data."""
    spec = importlib.util.spec_from_file_location("aggregate_under_test", SCRIPT)
    aggregate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aggregate)
    variants = {}
    for name, path in (("a", "/data/HIGGS/HIGGS.h5"), ("b", "/scratch/me/HIGGS.h5"), ("c", "data/HIGGS-subset.h5")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(f"dataset:\n  name: higgs\n  path: {path}\nseed: 0\n")
        variants[name] = aggregate.variant(tmp_path / name)
    assert variants["a"]["variant"] == variants["b"]["variant"] != variants["c"]["variant"]
    assert variants["c"]["config"]["dataset.file"] == "HIGGS-subset.h5" and "dataset.path" not in variants["c"]["config"]


def test_every_key_resume_ignores_is_one_variant_too(tmp_path):
    """A key added to ENVIRONMENT_KEYS (how a run executes) is how-run for aggregate.py as well:
    seeds differing in it are one cell. (keep_freed_memory once was in one list only.)"""
    from amtrain.config import ENVIRONMENT_KEYS

    spec = importlib.util.spec_from_file_location("aggregate_under_test", SCRIPT)
    aggregate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aggregate)
    assert set(aggregate.HOW_RUN) == (ENVIRONMENT_KEYS - aggregate.KEPT_IN_VARIANT) | {"seed", "dataset.path"}
    ids = set()
    for i, value in enumerate(("a", "b")):
        folder = tmp_path / value
        folder.mkdir()
        cfg = {"seed": i, "optim": {"lr": 0.1}}
        for key in ENVIRONMENT_KEYS - aggregate.KEPT_IN_VARIANT:  # each at a value of its own per folder
            *heads, leaf = key.split(".")
            node = cfg
            for h in heads:
                node = node.setdefault(h, {})
            node[leaf] = value
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
        ids.add(aggregate.variant(folder)["variant"])
    assert len(ids) == 1


def final_test_acc(make_cfg, tmp_path, overrides_by_seed):
    """Run each seed with its overrides (also written as its .hydra/overrides.yaml), aggregate
    the folder, and return the aggregate and its rows of the final test accuracy."""
    for seed, ovr in overrides_by_seed.items():
        lines = "".join(f"- {o}\n" for o in [*ovr, f"seed={seed}"])
        run(make_cfg(*ovr, f"seed={seed}"), tmp_path / "sweep" / f"s{seed}", {".hydra/overrides.yaml": lines})
    out = tmp_path / "agg.csv"
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "sweep"), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    agg = pd.read_csv(out)
    return agg, agg[(agg.split == "test") & (agg.metric == "acc") & (agg.step == agg.step.max())]


def test_seeds_run_with_other_threads_or_seed_batching_are_one_cell(make_cfg, tmp_path):
    """threads, seeds_per_process and keep_freed_memory say how a run was executed, not what it
    computes: a cell whose seeds ran under different values of them (two sweeps at once, a rerun)
    is one cell."""
    agg, final = final_test_acc(make_cfg, tmp_path, {0: ["optim=sgd", "threads=1"],
                                                     1: ["optim=sgd", "seeds_per_process=1"],
                                                     2: ["optim=sgd", "keep_freed_memory=false"]})
    assert len(final) == 1 and final.n_seeds.iloc[0] == 3 and final.seeds.iloc[0] == "0 1 2"
    assert final.overrides.iloc[0] == "optim=sgd"


def test_one_configuration_spelled_two_ways_is_one_cell(make_cfg, tmp_path):
    """A seed run with the default step written out (optim.lr=<default>) computes what a seed
    without it computes: one cell over both seeds, with both spellings in ``overrides``
    (it was two cells of one variant, which the figures then drew twice)."""
    lr = make_cfg("optim=sgd").optim.lr
    agg, final = final_test_acc(make_cfg, tmp_path, {0: ["optim=sgd", f"optim.lr={lr}"], 1: ["optim=sgd"]})
    assert len(final) == 1 and final.n_seeds.iloc[0] == 2 and final.seeds.iloc[0] == "0 1"
    assert final.overrides.iloc[0] == f"optim.lr={lr} optim=sgd | optim=sgd"
    assert agg.groupby(["variant", "split", "metric", "step"]).size().max() == 1


def test_rnn_table_reads_readout_and_width_from_the_overrides(tmp_path):
    """scripts/rnn_table.py: one row per (read-out, d, method), each epoch's last test accuracy,
    ± std where there are seeds to have one, n/a for an epoch a run did not reach."""
    rows = []
    for overrides, optim, seeds, accs in [
            ("model.hidden=50 model.readout=last optim=sgd", "sgd", "0", {1: [0.10], 3: [0.11]}),
            ("experiment=fig6_rnn optim=am_adam", "am_adam", "0 1 2", {1: [0.5, 0.78], 3: [0.87]})]:
        step = 0
        for epoch, values in accs.items():
            for v in values:  # several evaluations in an epoch: the first epoch's inset
                step += 1
                for split, metric in (("test", "acc"), ("val", "acc"), ("test", "loss")):
                    rows.append(dict(dataset="mnist", model="rnn", mode="release", variant=optim, optim=optim,
                                     samples_seen=200 * step, split=split, metric=metric, step=step, epoch=epoch,
                                     overrides=overrides, mean=v if metric == "acc" else 2.3,
                                     std=0.0 if seeds == "0" else 0.01, n_seeds=len(seeds.split()), seeds=seeds))
    csv = tmp_path / "agg.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "rnn_table.py"), str(csv),
                          "--epochs", "1", "3", "6"], capture_output=True, text=True, check=True).stdout
    assert "| last | 50 | sgd | 0.100 | 0.110 | n/a | 0 |" in out
    assert "| sequence | 15 | am_adam | 0.780 ± 0.010 | 0.870 ± 0.010 | n/a | 0 1 2 |" in out
    # a CSV that is not aggregate.py's is one line
    pd.DataFrame(rows).drop(columns=["variant"]).to_csv(csv, index=False)
    r = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "rnn_table.py"), str(csv)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("rnn_table: error: ") and "lacks the columns variant" in r.stderr
