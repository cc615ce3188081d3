"""scripts/compare.py: two sets of results judged cell by cell, against the seeds' own spread."""
import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from amtrain.train import run

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "compare.py"
AGGREGATE = REPO / "scripts" / "aggregate.py"



def script(path: Path):
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (a dataclass looks its module up while it is made)
    spec.loader.exec_module(module)
    return module


compare = script(SCRIPT)


def rows(optim="am_adam", mean=(0.5, 0.9), std=0.01, n=5, variant="aaaa1111", overrides=None, metric="acc",
         steps=(0, 100), code="c0de", data="da7a"):
    """An aggregated CSV's rows of one cell: one row per step, as scripts/aggregate.py writes them."""
    overrides = f"experiment=fig optim={optim}" if overrides is None else overrides
    return pd.DataFrame([dict(figure="fig", dataset="mnist", model="mlp_2x100", optim=optim, mode="release",
                              variant=variant, split="test", metric=metric, step=s, epoch=i, samples_seen=200 * s,
                              settings="", overrides=overrides, mean=m, std=std, wall_time=float(s), n_seeds=n,
                              seeds=" ".join(map(str, range(n))), code=code, data=data)
                         for i, (s, m) in enumerate(zip(steps, mean))])


def write(path: Path, *frames) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames).to_csv(path, index=False, float_format="%.6g")
    return path


def main(capsys, *argv):
    code = compare.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_same_runs_aggregated_twice_compare_the_same(make_cfg, tmp_path, capsys):
    """End to end: runs aggregated into one results folder, and a copy of them into another,
    compare as ``same``, every cell of every curve, and the script exits 0."""
    import shutil

    for seed in (0, 1):
        run(make_cfg("optim=sgd", f"seed={seed}"), tmp_path / "a" / "sweep" / f"s{seed}")
    shutil.copytree(tmp_path / "a" / "sweep", tmp_path / "b" / "sweep")
    aggregate = script(AGGREGATE)
    for side in ("a", "b"):
        aggregate.main([str(tmp_path / side / "sweep"), "-o", str(tmp_path / side / "results" / "fig.csv")])
    code, out, _ = main(capsys, tmp_path / "a" / "results", tmp_path / "b" / "results", "--all")
    assert code == 0, out
    cells = [line for line in out.splitlines() if line.startswith("  ")]
    n = len(pd.read_csv(tmp_path / "a" / "results" / "fig.csv").drop_duplicates(["split", "metric"]))
    assert len(cells) == n > 3 and all(line.split()[0] == "same" for line in cells)
    assert f"1 file, {n} cells in both: {n} same" in out


@pytest.mark.parametrize("b_mean, tol, verdict", [
    (0.9000004, 0.0, "same"),  # the CSVs' 6 digits
    (0.905, 0.0, "within noise"),  # 0.005 against a s.e. of sqrt(2 * 0.01^2 / 5) = 0.0063: 0.8 s.e.
    (0.925, 0.0, "differs"),  # 4.0 s.e.
    (0.925, 0.03, "within noise"),  # --tol lets it through
])
def test_a_cell_is_judged_at_its_last_step_against_the_standard_error(b_mean, tol, verdict):
    a = rows(mean=(0.5, 0.9))
    b = rows(mean=(0.5, b_mean))
    cells, only_a, only_b = compare.compare(*(compare.experiments(f, "overrides", "x") for f in (a, b)), tol=tol)
    assert only_a.empty and only_b.empty
    (cell,) = cells
    assert cell.verdict == verdict and cell.step == 100 and cell.a == 0.9 and cell.b == b_mean
    assert cell.se == pytest.approx(math.sqrt(2 * 0.01 ** 2 / 5))


def test_one_seed_has_no_std_so_only_tol_judges_it(tmp_path, capsys):
    a = write(tmp_path / "a.csv", rows(mean=(0.5, 0.9), std=float("nan"), n=1))
    b = write(tmp_path / "b.csv", rows(mean=(0.5, 0.901), std=float("nan"), n=1))
    code, out, _ = main(capsys, a, b)
    assert code == 1 and "differs" in out and "no std: one seed" in out and "--tol sets" in out
    code, out, _ = main(capsys, a, b, "--tol", "0.002")
    assert code == 0 and "1 within noise" in out


def test_the_largest_difference_over_the_steps_is_reported_where_it_was(tmp_path, capsys):
    a = write(tmp_path / "a.csv", rows(mean=(0.5, 0.7, 0.9), steps=(0, 50, 100), std=0.001))
    b = write(tmp_path / "b.csv", rows(mean=(0.5, 0.8, 0.95), steps=(0, 50, 100), std=0.001))
    code, out, _ = main(capsys, a, b)
    assert code == 1
    assert "at step 100 (epoch 2): 0.9 -> 0.95 (+0.05, " in out and "largest 0.1 at step 50" in out


def test_cells_match_on_the_command_across_config_versions(tmp_path, capsys):
    """Two versions of amtrain hash the same command's config differently once a key is added:
    matched on the overrides (how-run keys such as threads dropped), the cell says the configs
    differ; --match variant matches identical configs only."""
    a = write(tmp_path / "a.csv", rows(variant="0a0a0a0a", overrides="experiment=fig optim=am_adam threads=1"),
              rows(optim="adam", variant="0b0b0b0b"))
    b = write(tmp_path / "b.csv", rows(variant="1a1a1a1a", mean=(0.5, 0.95), std=0.001),
              rows(optim="adam", variant="0b0b0b0b"))
    code, out, _ = main(capsys, a, b)
    assert code == 1, out
    assert "2 cells in both: 1 differs, 1 same" in out
    assert "config 0a0a0a0a / 1a1a1a1a" in out
    code, out, _ = main(capsys, a, b, "--match", "variant")
    assert code == 1 and "1 cells in both: 1 same, 1 only in A, 1 only in B" in out
    assert "only in A      am_adam mlp_2x100 mnist release (0a0a0a0a): test acc; the other side has this method " \
           "as (1a1a1a1a)" in out


def test_the_seeds_data_and_code_that_differ_are_named(tmp_path, capsys):
    a = write(tmp_path / "a.csv", rows(n=3, code="c0de0001", data="da7a0001"))
    b = write(tmp_path / "b.csv", rows(n=5, code="c0de0002", data="da7a0002", mean=(0.5, 0.99), std=0.001))
    code, out, _ = main(capsys, a, b)
    assert code == 1
    assert "seeds 0 1 2 / 0 1 2 3 4; data da7a0001 / da7a0002; code c0de0001 / c0de0002" in out
    assert "code A c0de0001, B c0de0002" in out


def test_folders_compare_their_results_csvs_and_say_what_one_lacks(tmp_path, capsys):
    write(tmp_path / "a" / "fig.csv", rows(), rows(optim="adam"))
    write(tmp_path / "a" / "extra.csv", rows())
    write(tmp_path / "b" / "fig.csv", rows())
    for side in ("a", "b"):  # runs.csv is not a results CSV: not compared, and not missing
        (tmp_path / side / "runs.csv").write_text("finished,figure,sweep,status,seconds,command\n")
    code, out, _ = main(capsys, tmp_path / "a", tmp_path / "b")
    assert code == 1
    assert "fig.csv: 1 cells in both: 1 same, 1 only in A" in out
    assert "only in A      adam mlp_2x100 mnist release (experiment=fig optim=adam): test acc" in out
    assert "not compared (not results CSVs): runs.csv" in out and "only in A: extra.csv" in out
    write(tmp_path / "b" / "fig.csv", rows(), rows(optim="adam"))
    write(tmp_path / "b" / "extra.csv", rows())
    code, out, _ = main(capsys, tmp_path / "a", tmp_path / "b")
    assert code == 0 and "2 files, 3 cells in both: 3 same" in out


def test_a_side_that_ran_further_is_judged_where_both_were_and_said(tmp_path, capsys):
    a = write(tmp_path / "a.csv", rows(mean=(0.5, 0.9, 0.95), steps=(0, 100, 200)))
    b = write(tmp_path / "b.csv", rows(mean=(0.5, 0.9)))
    code, out, _ = main(capsys, a, b, "--all")
    assert code == 0 and "same           am_adam" in out and "at step 100 (epoch 1)" in out
    assert "A goes on to step 200" in out
    code, out, _ = main(capsys, a, b)
    assert code == 0 and "(1 cells that agree were judged before the end of one side's run" in out


def test_cells_that_never_met_at_a_step(tmp_path, capsys):
    a = write(tmp_path / "a.csv", rows(steps=(0, 100)))
    b = write(tmp_path / "b.csv", rows(steps=(10, 110)))
    code, out, _ = main(capsys, a, b)
    assert code == 1 and "no common step" in out and "never evaluated at the same step" in out


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist: give two results folders"),
    ("folder and file", "is a folder and"),
    ("not results", "lacks the columns"),
    ("torn", "row(s) without their numbers"),
    ("nothing in common", "hold no results CSV of the same name"),
    ("ambiguous", "compare with --match variant"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, message):
    a = write(tmp_path / "a" / "fig.csv", rows())
    b = tmp_path / "b" / "fig.csv"
    if case == "missing":
        paths = (a, b)
    elif case == "folder and file":
        write(b, rows())
        paths = (tmp_path / "a", b)
    elif case == "not results":
        b.parent.mkdir()
        b.write_text("finished,figure,sweep,status,seconds,command\n1,fig,s,ok,3,amtrain\n")
        paths = (a, b)
    elif case == "torn":
        text = a.read_text()
        b.parent.mkdir()
        b.write_text(text[:text.rindex("\n", 0, len(text) - 1) + 1] + "fig,mnist,mlp_2x100,am_adam\n")
        paths = (a, b)
    elif case == "nothing in common":
        write(tmp_path / "b" / "other.csv", rows())
        paths = (tmp_path / "a", tmp_path / "b")
    else:  # two configs of one method under one command: only their variants tell them apart
        write(b, rows(), rows(variant="bbbb2222", metric="acc"))
        paths = (a, b)
    code, out, err = main(capsys, *paths)
    assert code == 2 and out == ""
    assert err.startswith("compare: error: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--z", "--tol"])
def test_a_negative_threshold_is_a_usage_error(tmp_path, capsys, flag):
    a = write(tmp_path / "a.csv", rows())
    with pytest.raises(SystemExit) as e:
        compare.main([str(a), str(a), flag, "-1"])
    assert e.value.code == 2 and f"argument {flag}: -1.0 is below 0" in capsys.readouterr().err


def test_split_and_metric_choose_the_curves(tmp_path, capsys):
    a = write(tmp_path / "a.csv", rows(metric="acc"), rows(metric="loss", mean=(2.0, 1.0)))
    b = write(tmp_path / "b.csv", rows(metric="acc"), rows(metric="loss", mean=(2.0, 3.0)))
    code, out, _ = main(capsys, a, b)
    assert code == 1 and "2 cells in both: 1 differs, 1 same" in out
    code, out, _ = main(capsys, a, b, "--split", "test", "--metric", "acc")
    assert code == 0 and "1 cells in both: 1 same" in out
    code, out, _ = main(capsys, a, b, "--split", "train")
    assert code == 0 and "0 cells in both: nothing to compare" in out


def test_a_variant_that_looks_like_a_number_stays_its_hash(tmp_path, capsys):
    """A variant id is 8 hex digits: "0012e345" would read back as the float 1.2e346 (inf) and
    "00123456" lose its zeros; amtrain.results.load keeps both as text, so they still match."""
    from amtrain.results import load

    a = write(tmp_path / "a.csv", rows(variant="0012e345"), rows(optim="adam", variant="00123456"))
    assert sorted(load(a).variant) == ["00123456", "00123456", "0012e345", "0012e345"]
    code, out, _ = main(capsys, a, a, "--match", "variant")
    assert code == 0 and "2 cells in both: 2 same" in out


def test_a_bad_file_in_a_folder_prints_its_error_alone(tmp_path, capsys):
    """Every file is read before a line is printed: no half a comparison above the error."""
    for side in ("a", "b"):
        write(tmp_path / side / "fig1.csv", rows())
    write(tmp_path / "a" / "fig2.csv", rows())
    (tmp_path / "b" / "fig2.csv").write_text("figure,dataset,model\n")
    code, out, err = main(capsys, tmp_path / "a", tmp_path / "b")
    assert code == 2 and out == "" and "fig2.csv lacks the columns" in err


def test_a_rerun_against_the_commit_it_overwrote(tmp_path, capsys, monkeypatch):
    """REV:PATH reads the results from a git commit of the checkout (git's own spelling), so a
    rerun that wrote over results/quick compares with the numbers it replaced in one command."""
    import subprocess

    repo = tmp_path / "repo"
    write(repo / "results" / "quick" / "fig.csv", rows(mean=(0.5, 0.9)))
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "results")
    write(repo / "results" / "quick" / "fig.csv", rows(mean=(0.5, 0.95), std=0.001))  # the rerun
    monkeypatch.chdir(repo)
    code, out, _ = main(capsys, "HEAD:results/quick", "results/quick")
    assert code == 1 and "fig.csv: 1 cells in both: 1 differs" in out and "0.9 -> 0.95" in out
    code, out, _ = main(capsys, "HEAD:results/quick/fig.csv", "HEAD:results/quick/fig.csv")
    assert code == 0 and "1 same" in out
    code, out, err = main(capsys, "HEAD:results/quik", "results/quick")
    assert code == 2 and out == "" and err.startswith("compare: error: HEAD:results/quik is neither a path nor")
    assert len(err.strip().splitlines()) == 1


def test_ignore_sets_a_shortened_run_beside_the_whole_one(tmp_path, capsys):
    """The quick protocol's 15 epochs against the full protocol's 50: the commands differ in
    ``epochs`` only, so nothing matches until --ignore epochs; then the cell is judged at the
    shorter run's end, and says what was ignored and that the other side went on."""
    a = write(tmp_path / "a.csv", rows(overrides="epochs=15 experiment=fig optim=am_adam", variant="aaaa0015", n=3))
    b = write(tmp_path / "b.csv", rows(mean=(0.5, 0.9001, 0.95), steps=(0, 100, 200), variant="aaaa0050"))
    code, out, _ = main(capsys, a, b)
    assert code == 1 and "0 cells in both: 1 only in A, 1 only in B" in out
    code, out, _ = main(capsys, a, b, "--ignore", "epochs", "--all")
    assert code == 0, out
    assert "within noise   am_adam mlp_2x100 mnist release (experiment=fig optim=am_adam): test acc at step 100" in out
    assert "B goes on to step 200; overrides epochs=15 / -; config aaaa0015 / aaaa0050; seeds 0 1 2 / 0 1 2 3 4" in out


def test_ignore_takes_keys_repeated_or_comma_separated(tmp_path, capsys):
    a = write(tmp_path / "a.csv", rows(overrides="epochs=15 experiment=fig optim=am_adam optim.lr=0.1"))
    b = write(tmp_path / "b.csv", rows(overrides="experiment=fig optim=am_adam optim.lr=0.2"))
    for flags in (["--ignore", "epochs,optim.lr"], ["--ignore", "epochs", "--ignore", "optim.lr"]):
        code, out, _ = main(capsys, a, b, *flags)
        assert code == 0 and "1 cells in both: 1 same" in out, flags


@pytest.mark.parametrize("case, message", [
    ("misspelt", "--ignore epoch: no experiment of A or B sets it on its command line (they set epochs, "
                 "experiment, optim, optim.lr)"),
    ("merges two", "adam on mlp_2x100 has several experiments that only the ignored optim.lr=0.1, optim.lr=0.2 "
                   "tell apart, so their cells would be paired wrongly: ignore fewer keys"),
])
def test_an_ignored_key_that_is_not_there_or_merges_experiments_is_refused(tmp_path, capsys, case, message):
    """A misspelt key would ignore nothing and say nothing; a key that was all that told two
    experiments of one method apart would pair the wrong runs: each is one line and exit 2."""
    a = write(tmp_path / "a.csv", rows(overrides="epochs=15 experiment=fig optim=am_adam"),
              rows(optim="adam", overrides="experiment=fig optim=adam optim.lr=0.1", variant="bbbb0001"),
              rows(optim="adam", overrides="experiment=fig optim=adam optim.lr=0.2", variant="bbbb0002"))
    key = "epoch" if case == "misspelt" else "optim.lr"
    code, out, err = main(capsys, a, a, "--ignore", key)
    assert code == 2 and out == ""
    assert err.startswith("compare: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_ignore_needs_the_overrides_to_match_on(tmp_path, capsys):
    a = write(tmp_path / "a.csv", rows())
    with pytest.raises(SystemExit) as e:
        compare.main([str(a), str(a), "--ignore", "epochs", "--match", "variant"])
    assert e.value.code == 2 and "argument --ignore: --match variant compares whole configs" in capsys.readouterr().err
