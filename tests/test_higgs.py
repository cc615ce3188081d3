"""HIGGS: text -> HDF5 conversion (round trip, last rows = test, atomicity, errors) and streaming."""
import gzip
import shutil

import h5py
import numpy as np
import pytest
import torch

from amtrain.cli import compose
from amtrain.data.fake import higgs_rows
from amtrain.data.higgs import HiggsStream
from amtrain.data.higgs_convert import check_file, convert
from amtrain.data.higgs_convert import main as convert_main
from amtrain.errors import DataError
from amtrain.train import run
from conftest import SHARED_DATA

SUBSET = SHARED_DATA / "HIGGS-subset"


def write_text(path, rows, sep=",", gz=True):
    text = "\n".join(sep.join(f"{v:.6e}" for v in r) for r in rows) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def higgs_gz(tmp_path):
    rows = higgs_rows(1000)
    return write_text(tmp_path / "HIGGS.csv.gz", rows), rows


@pytest.mark.parametrize("chunk_rows", [64, 100, 999, 5000])
def test_round_trip_and_last_rows_are_test(tmp_path, higgs_gz, chunk_rows):
    src, rows = higgs_gz
    out = convert(src, tmp_path / "h.h5", test_rows=150, chunk_rows=chunk_rows, block_rows=64)
    assert out["n_train"] == 850 and out["n_test"] == 150
    with h5py.File(tmp_path / "h.h5") as f:
        np.testing.assert_allclose(f["train/x"][:], rows[:850, 1:], rtol=1e-6)
        np.testing.assert_array_equal(f["train/y"][:], rows[:850, 0])
        np.testing.assert_allclose(f["test/x"][:], rows[850:, 1:], rtol=1e-6)
        np.testing.assert_array_equal(f["test/y"][:], rows[850:, 0])
        np.testing.assert_allclose(f["stats/mean"][:], f["train/x"][:].astype(np.float64).mean(0), atol=1e-9)
        np.testing.assert_allclose(f["stats/std"][:], f["train/x"][:].astype(np.float64).std(0, ddof=1), rtol=1e-9)
        assert f["train/x"].chunks == (64, 28) and f.attrs["complete"]


def test_tab_separated_plain_files_read_in_order(tmp_path):
    a, b = higgs_rows(300, seed=1), higgs_rows(100, seed=2)
    src = [write_text(tmp_path / "a.train", a, sep="\t", gz=False), write_text(tmp_path / "b.test", b, sep="\t", gz=False)]
    convert(src, tmp_path / "h.h5", test_rows=100, chunk_rows=128)
    with h5py.File(tmp_path / "h.h5") as f:
        np.testing.assert_allclose(f["test/x"][:], b[:, 1:], rtol=1e-6)
        np.testing.assert_allclose(f["train/x"][:], a[:, 1:], rtol=1e-6)


def test_truncated_gzip_leaves_no_output(tmp_path, higgs_gz):
    src, _ = higgs_gz
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="ends early or is corrupt") as e:
        convert(src, tmp_path / "out" / "h.h5", test_rows=100, chunk_rows=100)
    assert "\n" not in str(e.value)
    assert list((tmp_path / "out").iterdir()) == []  # no file, no temporary left behind


def test_wrong_column_count(tmp_path):
    rows = higgs_rows(50)[:, :20]
    with pytest.raises(DataError, match="20 columns, expected 29"):
        convert(write_text(tmp_path / "x.csv", rows, gz=False), tmp_path / "h.h5", test_rows=10)
    ragged = tmp_path / "ragged.csv"
    lines = [",".join(["1"] * 29)] * 5 + [",".join(["1"] * 12)] + [",".join(["1"] * 29)] * 5
    ragged.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 6"):
        convert(ragged, tmp_path / "h.h5", test_rows=2)
    assert not (tmp_path / "h.h5").exists()


def test_missing_source_and_too_few_rows(tmp_path):
    with pytest.raises(DataError, match="not found"):
        convert(tmp_path / "HIGGS.csv.gz", tmp_path / "h.h5")
    with pytest.raises(DataError, match="nothing would be left to train on"):
        convert(write_text(tmp_path / "s.csv", higgs_rows(10), gz=False), tmp_path / "h.h5", test_rows=10)


def test_incomplete_or_corrupt_hdf5_is_refused(tmp_path, higgs_gz):
    src, _ = higgs_gz
    good = tmp_path / "h.h5"
    convert(src, good, test_rows=100)
    with h5py.File(good, "a") as f:
        del f.attrs["complete"]
    with pytest.raises(DataError, match="unfinished"):
        check_file(good)
    convert(src, good, test_rows=100, overwrite=True)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        check_file(cut)
    with pytest.raises(DataError, match="amtrain-higgs-convert"):
        check_file(tmp_path / "none.h5")


@pytest.fixture
def higgs_h5(tmp_path, higgs_gz):
    convert(higgs_gz[0], tmp_path / "HIGGS" / "HIGGS.h5", test_rows=200)
    return tmp_path / "HIGGS" / "HIGGS.h5"


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_shuffles_order_not_content(higgs_h5, workers):
    stream = HiggsStream(higgs_h5, standardize=False, block_rows=100, buffer_blocks=3, num_workers=workers)
    with h5py.File(higgs_h5) as f:
        file_x = f["train/x"][:]

    def epoch(seed):
        batches = list(stream.train_batches(64, torch.Generator().manual_seed(seed)))
        short = sum(len(y) != 64 for _, y in batches)  # each reader ends on one short batch
        assert short <= max(workers, 1) and batches[0][1].dtype == torch.int64
        return torch.cat([x for x, _ in batches]).numpy()

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert a.shape == file_x.shape
    np.testing.assert_array_equal(a, b)  # same seed, same order
    assert not np.array_equal(a, file_x) and not np.array_equal(a, c)  # shuffled, and per seed
    key = lambda m: m[np.lexsort(m.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(key(a), key(file_x))  # same rows


def test_stream_standardises_with_stored_statistics(higgs_h5):
    stream = HiggsStream(higgs_h5, standardize=True)
    x, _ = next(stream.eval_batches("test", 1000))
    with h5py.File(higgs_h5) as f:
        expected = (f["test/x"][:] - f["stats/mean"][:]) / f["stats/std"][:]
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert abs(torch.cat([x for x, _ in stream.train_batches(500, torch.Generator())]).mean()) < 1e-5


def test_stream_is_picklable_for_workers(higgs_h5):
    import pickle

    stream = HiggsStream(higgs_h5)
    next(stream.eval_batches("test", 10))  # opens the file in this process
    clone = pickle.loads(pickle.dumps(stream))
    assert clone._file is None and next(clone.eval_batches("test", 10))[0].shape == (10, 28)


@pytest.mark.parametrize("optim", ["am_adam", "am_mem", "sgd", "adam"])
def test_each_method_learns_higgs_shaped_data(tmp_path, higgs_h5, optim):
    cfg = compose(["dataset=higgs", f"dataset.path={higgs_h5}", "model=higgs_mlp", f"optim={optim}",
                   "device=cpu", "progress=false", "batch_size=50", "epochs=3", "eval.every_batches=5"])
    metrics = run(cfg, tmp_path / "run")
    assert metrics["test/acc"] > 0.7


def test_convert_command(tmp_path, higgs_gz, capsys):
    assert convert_main([str(higgs_gz[0]), "-o", str(tmp_path / "o.h5"), "--test-rows", "100"]) == 0
    assert "900 train + 100 test rows" in capsys.readouterr().out
    assert convert_main([str(tmp_path / "missing.csv.gz"), "-o", str(tmp_path / "p.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("amtrain-higgs-convert: error: HIGGS source file not found")


@pytest.mark.skipif(not SUBSET.exists(), reason="real HIGGS subset not present")
@pytest.mark.parametrize("optim", ["am_adam", "sgd", "adam"])
def test_real_higgs_subset_beats_060(tmp_path, optim):
    h5 = tmp_path / "HIGGS.h5"
    convert([SUBSET / "binary.train", SUBSET / "binary.test"], h5, test_rows=500)
    cfg = compose(["dataset=higgs", f"dataset.path={h5}", "model=higgs_mlp", f"optim={optim}", "device=cpu",
                   "progress=false", "epochs=5", "eval.every_batches=0"])
    assert run(cfg, tmp_path / "run")["test/acc"] > 0.60


def test_full_batch_methods_refuse_the_stream(tmp_path, higgs_h5):
    from amtrain.errors import ConfigError

    cfg = compose(["dataset=higgs", f"dataset.path={higgs_h5}", "model=higgs_mlp", "optim=am_adam_off", "device=cpu"])
    with pytest.raises(ConfigError, match="full batch"):
        run(cfg, tmp_path / "run")


def test_admm_streams_higgs_with_state_on_disk_and_matches_in_memory(tmp_path, higgs_h5):
    """The same ADMM iterations whether the rows come from memory or stream from HDF5 with disk state."""
    from amtrain.data.base import TensorData
    from amtrain.models import build_model
    from amtrain.optim import build_trainer
    import gc

    from amtrain.optim.fullbatch.base import DiskArray

    stream = HiggsStream(higgs_h5)
    x, y = stream._read("train", 0, stream.n_train)
    memory = TensorData(torch.from_numpy(x), torch.from_numpy(y).long(), torch.zeros(1, 28), torch.zeros(1).long(), 2)
    weights = []
    for data, gb in ((memory, 4.0), (stream, 0.0)):
        cfg = compose(["dataset=higgs", f"dataset.path={higgs_h5}", "model=higgs_mlp", "optim=admm", "device=cpu",
                       "optim.chunk_rows=128", f"optim.state_memory_gb={gb}", f"optim.state_dir={tmp_path}",
                       "optim.warm_start=1"])
        torch.manual_seed(0)
        net = build_model(cfg.model, (28,), 2)
        admm = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
        for _ in range(3):
            admm.epoch(data, 50, torch.Generator())
        assert isinstance(admm.z[0], DiskArray) == (gb == 0.0)
        weights.append([p.detach().clone() for p in net.parameters()])
        state_dir = admm._state_dir
        del admm
        gc.collect()  # the files go with the trainer (or at exit): collect it now
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert state_dir is not None and not state_dir.exists()  # temporary state removed


def test_admm_learns_streamed_higgs_through_run(tmp_path, higgs_h5):
    cfg = compose(["dataset=higgs", f"dataset.path={higgs_h5}", "model=higgs_mlp", "optim=admm", "device=cpu",
                   "progress=false", "epochs=8", "optim.state_memory_gb=0", "optim.warm_start=3"])
    assert run(cfg, tmp_path / "run")["test/acc"] > 0.7


def test_a_streamed_file_is_identified_by_its_rows_not_its_bytes(tmp_path, higgs_gz):
    """Two HIGGS files of one name with other rows are other data (amtrain.provenance); the same
    rows converted twice, in two places (the file records its source), are the same data."""
    convert(higgs_gz[0], tmp_path / "a" / "HIGGS.h5", test_rows=200)
    convert(higgs_gz[0], tmp_path / "b" / "HIGGS.h5", test_rows=300)
    (tmp_path / "c").mkdir()
    shutil.copy(higgs_gz[0], tmp_path / "c" / "copy.csv.gz")
    convert(tmp_path / "c" / "copy.csv.gz", tmp_path / "c" / "HIGGS.h5", test_rows=200)
    a, b, c = (HiggsStream(tmp_path / n / "HIGGS.h5").identity for n in "abc")
    assert (tmp_path / "a" / "HIGGS.h5").read_bytes() != (tmp_path / "c" / "HIGGS.h5").read_bytes()
    assert len(a) == 16 and a == c != b
    convert(higgs_gz[0], tmp_path / "a" / "HIGGS.h5", test_rows=300, overwrite=True)  # converted again, in place
    assert HiggsStream(tmp_path / "a" / "HIGGS.h5").identity == b
