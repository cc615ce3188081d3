"""MNIST from the original IDX files, in torchvision's layout: <root>/MNIST/raw/.

Files may be plain or gzipped. Missing files are downloaded with torchvision when
``download`` is on; otherwise, or when that fails, the error lists the expected paths.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from amtrain.data.base import TensorData
from amtrain.errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MEAN, STD = 0.1307, 0.3081  # the usual MNIST normalisation (as in the authors' release)


def raw_dir(root) -> Path:
    return Path(root).expanduser() / "MNIST" / "raw"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (unsigned-byte data), plain or gzipped, checking its declared size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path} ({e}): the file is corrupt; delete it and download it again") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number): replace it with the original MNIST file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (header incomplete): replace it with the original MNIST file")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path} has {len(data)} bytes but its header declares {expected} "
                        "(truncated or corrupt): replace it with the original MNIST file")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(root, stem: str):
    for name in (stem, stem + ".gz"):
        p = raw_dir(root) / name
        if p.exists():
            return p
    return None


def _download(root) -> None:
    try:
        import torchvision

        torchvision.datasets.MNIST(str(Path(root).expanduser()), train=True, download=True)
        torchvision.datasets.MNIST(str(Path(root).expanduser()), train=False, download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(
            f"MNIST files are missing under {raw_dir(root)} and the download failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): put "
            f"{', '.join(FILES.values())} (optionally .gz) there, or set dataset.root / AMTRAIN_DATA "
            "to a folder containing MNIST/raw/") from e


def load(root, download: bool) -> TensorData:
    paths = {k: _find(root, v) for k, v in FILES.items()}
    if any(p is None for p in paths.values()) and download:
        _download(root)
        paths = {k: _find(root, v) for k, v in FILES.items()}
    missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataError(
            f"MNIST files missing in {raw_dir(root)}: {', '.join(missing)} (optionally .gz); "
            "set dataset.root or AMTRAIN_DATA to a folder containing MNIST/raw/, or dataset.download=true")
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if xi.ndim != 3 or yi.ndim != 1 or xi.shape[0] != yi.shape[0]:
            raise DataError(f"MNIST {split} images {xi.shape} and labels {yi.shape} do not match: "
                            f"replace the files in {raw_dir(root)}")
    norm = lambda x: ((torch.from_numpy(x.copy()).float() / 255.0 - MEAN) / STD).unsqueeze(1)  # noqa: E731
    label = lambda y: torch.from_numpy(y.astype(np.int64))  # noqa: E731
    return TensorData(norm(arrays["train_images"]), label(arrays["train_labels"]),
                      norm(arrays["test_images"]), label(arrays["test_labels"]), n_classes=10,
                      source=str(raw_dir(root)))
