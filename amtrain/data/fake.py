"""Tiny datasets written in the real file formats, for ``make smoke`` and the tests.

Every dataset reader of amtrain runs unchanged on these files: MNIST and Fashion-MNIST
(gzipped) as IDX files in torchvision's layout, CIFAR-10 as the python-pickle batches, HIGGS as the UCI text
format passed through :func:`amtrain.data.higgs_convert.convert`. The labels are
learnable (a class-dependent pattern in the inputs), so a few batches of training
move the accuracy above chance. Nothing here downloads anything.

    python -m amtrain.data.fake DIR        # MNIST, Fashion-MNIST, CIFAR-10 and HIGGS under DIR
"""
from __future__ import annotations

import argparse
import gzip
import pickle
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """Write an unsigned-byte IDX file exactly as the MNIST distribution does."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def write_mnist(root, n_train: int = 200, n_test: int = 100, seed: int = 0, folder: str = "MNIST",
                gz: bool = False) -> Path:
    """<root>/<folder>/raw/*-ubyte[.gz]: noise images with a bright block whose position is the class
    (folder="FashionMNIST", gz=True: Fashion-MNIST's layout as Debian ships it)."""
    rng = np.random.default_rng(seed)

    def images(labels):
        x = rng.integers(0, 40, size=(len(labels), 28, 28))
        for i, y in enumerate(labels):
            r, c = divmod(int(y), 5)
            x[i, 4 + 10 * r: 12 + 10 * r, 2 + 5 * c: 6 + 5 * c] = 255
        return x

    raw = Path(root) / folder / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images(labels), gz=gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return Path(root)


def write_fashion_mnist(root, n_train: int = 200, n_test: int = 100, seed: int = 1) -> Path:
    """<root>/FashionMNIST/raw/*-ubyte.gz, gzipped as Debian's dataset-fashion-mnist ships them."""
    return write_mnist(root, n_train, n_test, seed, folder="FashionMNIST", gz=True)


def write_cifar10(root, n_per_batch: int = 40, n_test: int = 50, seed: int = 0) -> Path:
    """<root>/cifar-10-batches-py: five training batches and a test batch, the first pixels encode the class."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = rng.integers(0, 10, size=n)
        data = rng.integers(0, 256, size=(n, 3072)).astype(np.uint8)
        data[:, :10] = (labels[:, None] * 25).astype(np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({"batch_label": name, "labels": labels.tolist(), "data": data,
                         "filenames": [f"{i}.png" for i in range(n)]}, fh)
    return Path(root)


def higgs_rows(n: int, seed: int = 0) -> np.ndarray:
    """Rows in the UCI layout: a 0/1 label (learnable from the features), then 28 features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 28)).astype(np.float32)
    y = (x[:, :4].sum(1) + 0.5 * x[:, 4] * x[:, 5] > 0).astype(np.float32)
    return np.column_stack([y, x]).astype(np.float32)


def write_higgs(root, n_train: int = 800, n_test: int = 200, seed: int = 0) -> Path:
    """<root>/HIGGS/HIGGS.h5 through the real converter, from a gzipped UCI-format text file."""
    from amtrain.data.higgs_convert import convert

    folder = Path(root) / "HIGGS"
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "HIGGS.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("\n".join(",".join(f"{v:.6e}" for v in r) for r in higgs_rows(n_train + n_test, seed)) + "\n")
    convert(src, folder / "HIGGS.h5", test_rows=n_test, overwrite=True)
    src.unlink()
    return Path(root)


def write_all(root) -> Path:
    write_mnist(root, n_train=600, n_test=200)
    write_fashion_mnist(root, n_train=600, n_test=200)
    write_cifar10(root, n_per_batch=120, n_test=200)
    write_higgs(root, n_train=1600, n_test=400)
    return Path(root)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="folder to write MNIST/, FashionMNIST/, cifar-10-batches-py/ and HIGGS/ into")
    root = write_all(p.parse_args(argv).root)
    print(f"wrote tiny MNIST, Fashion-MNIST, CIFAR-10 and HIGGS under {root}")


if __name__ == "__main__":
    main()
