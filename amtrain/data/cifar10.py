"""CIFAR-10 from the python-pickle batches, in torchvision's layout: <root>/cifar-10-batches-py/.

Each batch file is a pickle of a dict with ``data`` (N x 3072 uint8, channel-major)
and ``labels``. Missing files are downloaded with torchvision when ``download`` is on.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from amtrain.data.base import TensorData
from amtrain.errors import DataError

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = ["test_batch"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def batch_dir(root) -> Path:
    return Path(root).expanduser() / "cifar-10-batches-py"


def read_batch(path: Path):
    try:
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
    except Exception as e:
        raise DataError(f"cannot read CIFAR-10 batch {path} ({type(e).__name__}): the file is truncated "
                        "or corrupt; delete it and download it again") from e
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise DataError(f"{path} is not a CIFAR-10 python batch (no 'data'/'labels'): replace it")
    x = np.asarray(d["data"])
    if x.dtype != np.uint8:  # the real batches hold bytes; floats (possibly NaN) mean another file
        raise DataError(f"{path} holds {x.dtype} pixels, CIFAR-10 batches hold uint8: replace it with the "
                        "original batch file")
    y = np.asarray(d["labels"], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or x.shape[0] != y.shape[0]:
        raise DataError(f"{path} holds data {x.shape} / labels {y.shape}, expected N x 3072 and N: replace it")
    return x, y


def _download(root) -> None:
    try:
        import torchvision

        torchvision.datasets.CIFAR10(str(Path(root).expanduser()), train=True, download=True)
    except Exception as e:
        raise DataError(
            f"CIFAR-10 files are missing under {batch_dir(root)} and the download failed "
            f"({type(e).__name__}): put {', '.join(TRAIN + TEST)} there (from cifar-10-python.tar.gz), "
            "or set dataset.root / AMTRAIN_DATA to a folder containing cifar-10-batches-py/") from e


def load(root, download: bool, scale: str = "standard") -> TensorData:
    names = TRAIN + TEST
    if any(not (batch_dir(root) / n).exists() for n in names) and download:
        _download(root)
    missing = [n for n in names if not (batch_dir(root) / n).exists()]
    if missing:
        raise DataError(
            f"CIFAR-10 files missing in {batch_dir(root)}: {', '.join(missing)}; set dataset.root or "
            "AMTRAIN_DATA to a folder containing cifar-10-batches-py/, or dataset.download=true")
    mean = torch.tensor(MEAN if scale == "standard" else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
    std = torch.tensor(STD if scale == "standard" else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)

    def stack(files):
        xs, ys = zip(*(read_batch(batch_dir(root) / f) for f in files))
        x = torch.from_numpy(np.concatenate(xs)).view(-1, 3, 32, 32).float() / 255.0
        return (x - mean) / std, torch.from_numpy(np.concatenate(ys))

    x_train, y_train = stack(TRAIN)
    x_test, y_test = stack(TEST)
    return TensorData(x_train, y_train, x_test, y_test, n_classes=10, source=str(batch_dir(root)))
