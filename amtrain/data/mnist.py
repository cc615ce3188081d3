"""MNIST and Fashion-MNIST from their IDX files, in torchvision's layout: <root>/MNIST/raw/,
<root>/FashionMNIST/raw/ (or any folder holding the four files: ``files``).

The two datasets share the format and the file names. Files may be plain or gzipped (as
Debian's ``dataset-fashion-mnist`` ships them, in /usr/share/datasets/fashion-mnist/).
Missing files are downloaded with torchvision when ``download`` is on; otherwise, or when
that fails, the error lists the expected paths. Pixels are standardised with the training
set's published mean and std (``scale=standard``), or kept in [0, 1] (``scale=unit``).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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


@dataclass(frozen=True)
class IDXSet:
    folder: str  # <root>/<folder>/raw, and torchvision's class of the same name
    title: str
    mean: float  # of the training pixels in [0, 1]
    std: float


MNIST = IDXSet("MNIST", "MNIST", 0.1307, 0.3081)  # the usual normalisation (as in the authors' release)
FASHION_MNIST = IDXSet("FashionMNIST", "Fashion-MNIST", 0.2860, 0.3530)
MEAN, STD = MNIST.mean, MNIST.std


def raw_dir(root, spec: IDXSet = MNIST, files: Optional[str] = None) -> Path:
    return Path(files).expanduser() if files else Path(root).expanduser() / spec.folder / "raw"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (unsigned-byte data), plain or gzipped, checking its declared size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path} ({e}): the file is corrupt; delete it and download it again") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number): replace it with the original file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (header incomplete): replace it with the original file")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path} has {len(data)} bytes but its header declares {expected} "
                        "(truncated or corrupt): replace it with the original file")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, stem: str):
    for name in (stem, stem + ".gz"):
        p = folder / name
        if p.exists():
            return p
    return None


def _download(root, spec: IDXSet) -> None:
    try:
        import torchvision

        dataset = getattr(torchvision.datasets, spec.folder)
        dataset(str(Path(root).expanduser()), train=True, download=True)
        dataset(str(Path(root).expanduser()), train=False, download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(
            f"{spec.title} files are missing under {raw_dir(root, spec)} and the download failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): put "
            f"{', '.join(FILES.values())} (optionally .gz) there, or set dataset.root / AMTRAIN_DATA "
            f"to a folder containing {spec.folder}/raw/{_debian_hint(spec)}") from e


def _debian_hint(spec: IDXSet) -> str:
    if spec is FASHION_MNIST:
        return (", or `apt-get install dataset-fashion-mnist` and dataset.files=/usr/share/datasets/fashion-mnist")
    return ""


def load(root, download: bool, spec: IDXSet = MNIST, scale: str = "standard", files: Optional[str] = None) -> TensorData:
    folder = raw_dir(root, spec, files)
    paths = {k: _find(folder, v) for k, v in FILES.items()}
    if any(p is None for p in paths.values()) and download and not files:
        _download(root, spec)
        paths = {k: _find(folder, v) for k, v in FILES.items()}
    missing = [FILES[k] for k, p in paths.items() if p is None]
    if missing:
        where = "dataset.files to the folder holding them" if files else \
            f"dataset.root or AMTRAIN_DATA to a folder containing {spec.folder}/raw/, or dataset.download=true"
        raise DataError(f"{spec.title} files missing in {folder}: {', '.join(missing)} (optionally .gz); set "
                        f"{where}{_debian_hint(spec)}")
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if xi.ndim != 3 or yi.ndim != 1 or xi.shape[0] != yi.shape[0]:
            raise DataError(f"{spec.title} {split} images {xi.shape} and labels {yi.shape} do not match: "
                            f"replace the files in {folder}")
    mean, std = (spec.mean, spec.std) if scale == "standard" else (0.0, 1.0)
    norm = lambda x: ((torch.from_numpy(x.copy()).float() / 255.0 - mean) / std).unsqueeze(1)  # noqa: E731
    label = lambda y: torch.from_numpy(y.astype(np.int64))  # noqa: E731
    return TensorData(norm(arrays["train_images"]), label(arrays["train_labels"]),
                      norm(arrays["test_images"]), label(arrays["test_labels"]), n_classes=10,
                      source=str(folder))
