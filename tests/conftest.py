"""Shared fixtures: composed configs on tiny synthetic data, tiny files in real formats."""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from amtrain.cli import compose

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AMTRAIN_SHARED_DATA", REPO.parent / "shared" / "data"))

# Fast, CPU-only, quiet: what every test run uses unless it says otherwise.
TINY = ["dataset=synthetic", "dataset.n_train=600", "dataset.n_test=300", "device=cpu",
        "progress=false", "eval.first_epoch_batches=3", "batch_size=50"]


def am_adam_cfg(lr: float = 0.01, fast: bool = False, sign_step: str = "ste"):
    """A hand-built AM-Adam config (release code-step defaults) for tests that build trainers directly."""

    class Cfg:
        class codes:
            pass

        class schedule:
            step_epochs, gamma = 0, 0.5

    Cfg.codes.lr, Cfg.codes.iters, Cfg.codes.momentum, Cfg.codes.nesterov, Cfg.codes.fast = 0.3, 5, 0.9, True, fast
    Cfg.codes.sign_step = sign_step
    Cfg.lr, Cfg.betas, Cfg.weight_iters = lr, (0.9, 0.999), 1
    return Cfg


@pytest.fixture
def make_cfg():
    """compose(overrides) on the tiny synthetic problem; later overrides win."""

    def _make(*overrides: str):
        base = TINY
        if any(o.startswith("dataset=") for o in overrides):  # another dataset: drop synthetic's keys
            base = [o for o in TINY if not o.startswith("dataset")]
        return compose(base + list(overrides))

    return _make


def amtrain_cmd() -> list:
    """The installed console script next to this interpreter (falls back to ``python -m amtrain``)."""
    script = Path(sys.executable).parent / "amtrain"
    if script.exists():
        return [str(script)]
    found = shutil.which("amtrain")
    return [found] if found else [sys.executable, "-m", "amtrain"]


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


@pytest.fixture
def mnist_root(tmp_path):
    """A tiny MNIST in torchvision's layout: 200 train / 100 test images, learnable labels."""
    rng = np.random.default_rng(0)

    def images(labels):
        x = rng.integers(0, 40, size=(len(labels), 28, 28))
        for i, y in enumerate(labels):  # a bright block whose position encodes the class
            r, c = divmod(int(y), 5)
            x[i, 4 + 10 * r: 12 + 10 * r, 2 + 5 * c: 6 + 5 * c] = 255
        return x

    raw = tmp_path / "MNIST" / "raw"
    for prefix, n in (("train", 200), ("t10k", 100)):
        labels = rng.integers(0, 10, size=n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images(labels))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return tmp_path


@pytest.fixture
def cifar_root(tmp_path):
    """A tiny CIFAR-10 in the python-pickle batch format: 5 x 40 train, 50 test."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, n in [(f"data_batch_{i}", 40) for i in range(1, 6)] + [("test_batch", 50)]:
        labels = rng.integers(0, 10, size=n)
        data = rng.integers(0, 256, size=(n, 3072)).astype(np.uint8)
        data[:, :10] = (labels[:, None] * 25).astype(np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({"batch_label": name, "labels": labels.tolist(), "data": data,
                         "filenames": [f"{i}.png" for i in range(n)]}, fh)
    return tmp_path
