"""Datasets: real file formats written by the tests, error paths, and the real MNIST when present."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from amtrain.data import build_data, cifar10, mnist, synthetic
from amtrain.errors import ConfigError, DataError
from amtrain.data.fake import write_idx
from conftest import SHARED_DATA


def test_mnist_reads_idx_files(mnist_root):
    data = mnist.load(mnist_root, download=False)
    assert data.x_train.shape == (200, 1, 28, 28) and data.x_test.shape == (100, 1, 28, 28)
    assert data.y_train.dtype == torch.int64 and data.n_classes == 10
    # normalised with the usual MNIST mean/std
    assert data.x_train.max().item() == pytest.approx((1 - mnist.MEAN) / mnist.STD, rel=1e-5)


def test_mnist_reads_gzipped_files(tmp_path, mnist_root):
    raw = mnist.raw_dir(mnist_root)
    for f in list(raw.iterdir()):
        with open(f, "rb") as src, gzip.open(str(f) + ".gz", "wb") as dst:
            dst.write(src.read())
        f.unlink()
    assert mnist.load(mnist_root, download=False).x_train.shape[0] == 200


def test_mnist_missing_files_named(tmp_path):
    with pytest.raises(DataError) as e:
        mnist.load(tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "AMTRAIN_DATA" in msg


def test_mnist_truncated_file(mnist_root):
    path = mnist.raw_dir(mnist_root) / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        mnist.load(mnist_root, download=False)


def test_mnist_bad_magic(mnist_root):
    path = mnist.raw_dir(mnist_root) / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(DataError, match="magic"):
        mnist.load(mnist_root, download=False)


def test_mnist_mismatched_labels(mnist_root):
    write_idx(mnist.raw_dir(mnist_root) / "train-labels-idx1-ubyte", np.zeros(7))
    with pytest.raises(DataError, match="do not match"):
        mnist.load(mnist_root, download=False)


def test_failed_download_says_where_files_go(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="download failed") as e:
        mnist.load(tmp_path, download=True)
    assert "\n" not in str(e.value) and "MNIST/raw" in str(e.value)


def test_cifar10_reads_python_batches(cifar_root):
    data = cifar10.load(cifar_root, download=False)
    assert data.x_train.shape == (200, 3, 32, 32) and data.x_test.shape == (50, 3, 32, 32)
    assert data.y_train.max() < 10


def test_cifar10_missing_and_corrupt(cifar_root, tmp_path):
    (cifar10.batch_dir(cifar_root) / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        cifar10.load(cifar_root, download=False)
    path = cifar10.batch_dir(cifar_root) / "data_batch_3"
    path.write_bytes(pickle.dumps({"data": 1})[:-3])
    with pytest.raises(DataError, match="truncated or corrupt"):
        cifar10.load(cifar_root, download=False)


def test_train_subset_and_validation_split(make_cfg, cifar_root):
    cfg = make_cfg("dataset=cifar10", f"dataset.root={cifar_root}", "dataset.download=false",
                   "dataset.train_size=150", "dataset.val_size=30")
    data = build_data(cfg.dataset)
    full = cifar10.load(cifar_root, download=False)
    assert data.n_train == 120 and data.x_val.shape[0] == 30 and data.splits == ("val", "test")
    torch.testing.assert_close(data.x_train, full.x_train[:120])
    torch.testing.assert_close(data.x_val, full.x_train[120:150])
    with pytest.raises(ConfigError, match="train_size"):
        build_data(make_cfg("dataset.train_size=100000").dataset)


def test_synthetic_is_fixed_by_data_seed_and_learnable_size():
    a = synthetic.make(100, 50, 5, 3, data_seed=7)
    b = synthetic.make(100, 50, 5, 3, data_seed=7)
    c = synthetic.make(100, 50, 5, 3, data_seed=8)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert set(a.y_train.tolist()) == {0, 1, 2}


def test_batches_cover_the_epoch_in_a_seeded_order():
    data = synthetic.make(103, 10, 4, 2)
    order = lambda s: torch.cat([y for _, y in data.train_batches(20, torch.Generator().manual_seed(s))])  # noqa: E731
    assert len(order(0)) == 103 and data.n_batches(20) == 6
    assert torch.equal(order(0), order(0)) and not torch.equal(order(0), order(1))
    assert sorted(order(0).tolist()) == sorted(data.y_train.tolist())


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").exists(), reason="real MNIST not present")
def test_real_mnist_loads():
    data = mnist.load(SHARED_DATA, download=False)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.y_test).tolist()[0] == 980


def test_fashion_mnist_reads_gzipped_files_in_torchvisions_layout(tmp_path, make_cfg):
    from amtrain.data import build_data
    from amtrain.data.fake import write_fashion_mnist

    root = write_fashion_mnist(tmp_path, n_train=120, n_test=40)
    assert sorted(p.name for p in (root / "FashionMNIST" / "raw").iterdir())[0].endswith(".gz")
    data = build_data(make_cfg("dataset=fashion_mnist", f"dataset.root={root}", "dataset.download=false").dataset)
    assert data.x_train.shape == (120, 1, 28, 28) and data.x_test.shape == (40, 1, 28, 28)
    assert data.x_train.min() == pytest.approx(-mnist.FASHION_MNIST.mean / mnist.FASHION_MNIST.std, rel=1e-5)
    # the files given directly (Debian's /usr/share/datasets/fashion-mnist is flat), pixels in [0, 1]
    flat = build_data(make_cfg("dataset=fashion_mnist", f"dataset.files={root / 'FashionMNIST' / 'raw'}",
                               "dataset.scale=unit", "dataset.download=false").dataset)
    assert flat.x_train.min() >= 0 and flat.x_train.max() == pytest.approx(1.0)
    torch.testing.assert_close(flat.x_train * 1.0, data.x_train * mnist.FASHION_MNIST.std + mnist.FASHION_MNIST.mean,
                               rtol=1e-5, atol=1e-5)


def test_fashion_mnist_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DataError, match="FashionMNIST/raw.*apt-get install dataset-fashion-mnist"):
        mnist.load(tmp_path, download=False, spec=mnist.FASHION_MNIST)
    with pytest.raises(DataError, match="dataset.files to the folder holding them"):
        mnist.load(tmp_path, download=False, spec=mnist.FASHION_MNIST, files=str(tmp_path / "flat"))


def test_failed_fashion_download_says_where_files_go(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError, match=r"Fashion-MNIST files are missing under .*FashionMNIST/raw and the download failed"):
        mnist.load(tmp_path, download=True, spec=mnist.FASHION_MNIST)


@pytest.mark.skipif(not (SHARED_DATA / "FashionMNIST" / "raw").exists(), reason="real Fashion-MNIST not present")
def test_real_fashion_mnist_loads():
    data = mnist.load(SHARED_DATA, download=False, spec=mnist.FASHION_MNIST, scale="unit")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.y_train).tolist() == [6000] * 10 and torch.bincount(data.y_test).tolist() == [1000] * 10
    assert float(data.x_train.mean()) == pytest.approx(0.2860, abs=5e-4)


def test_a_dataset_is_identified_by_its_samples_not_its_files(tmp_path, make_cfg):
    """``identity`` (amtrain.provenance) tells another copy or version of a dataset from the same
    one: the same images as raw IDX or gzipped files agree; one changed pixel, another draw of
    the images, or a train_size subset of the same files (which the config says) do not matter
    or do, as they should."""
    from amtrain.data.fake import write_mnist

    def identity(root, *extra):
        return build_data(make_cfg("dataset=mnist", f"dataset.root={root}", "dataset.download=false",
                                   *extra).dataset).identity

    raw, gz, other = (write_mnist(tmp_path / n, seed=s, gz=z) for n, s, z in (("a", 0, False), ("b", 0, True),
                                                                             ("c", 5, False)))
    assert len(identity(raw)) == 16 and identity(raw) == identity(gz) != identity(other)
    assert identity(raw, "dataset.train_size=50") == identity(raw)  # the whole dataset's, before any subset
    images = mnist.raw_dir(raw) / "t10k-images-idx3-ubyte"
    b = bytearray(images.read_bytes())
    b[-1] ^= 1  # one pixel of one test image
    images.write_bytes(bytes(b))
    assert identity(raw) != identity(gz)
    assert build_data(make_cfg().dataset).identity == build_data(make_cfg().dataset).identity  # generated: fixed
    assert build_data(make_cfg().dataset).identity != build_data(make_cfg("dataset.data_seed=9").dataset).identity


def test_fingerprints_see_dtype_shape_and_every_value():
    from amtrain.provenance import tensors_fingerprint

    x = torch.arange(12, dtype=torch.float32)
    assert tensors_fingerprint([x]) == tensors_fingerprint([x.clone()])
    for y in (x.reshape(3, 4), x.double(), torch.cat([x[:-1], x[-1:] + 1]), x[::2]):
        assert tensors_fingerprint([y]) != tensors_fingerprint([x])
    assert tensors_fingerprint([x[::2]]) == tensors_fingerprint([x[::2].contiguous()])  # a view: its values
