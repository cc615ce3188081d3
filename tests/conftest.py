"""Shared fixtures: composed configs on tiny synthetic data, tiny files in real formats."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from amtrain.cli import compose
from amtrain.data import fake

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AMTRAIN_SHARED_DATA", REPO.parent / "shared" / "data"))

# The suite runs on two pytest-xdist workers (pyproject.toml). Two workers with a torch thread
# per core each would oversubscribe the cores, and tiny tensor ops then wait on each other's
# threads (10x slower on 2 cores): one thread per worker, and per subprocess it starts,
# unless a test asks for more.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

# --dist loadfile hands whole files to the two workers. By default xdist sends the files with
# the most tests first, so test_slurm.py (few tests, 260 s: a cluster to bring up) went out
# last and ran alone at the end. The files that take longest go first (by their seconds in a
# run of 2026-12-05: --durations=0, summed per file), the rest after them in their usual
# order, so that they fill in beside the long ones (pyproject.toml: --no-loadscope-reorder).
LONGEST_FIRST = ("test_slurm.py", "test_faults.py", "test_reproduce.py", "test_seeds.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept


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

    Cfg.codes.lr, Cfg.codes.iters, Cfg.codes.momentum, Cfg.codes.nesterov = 0.3, 5, 0.9, True
    Cfg.codes.sign_step = sign_step
    Cfg.lr, Cfg.betas, Cfg.weight_iters, Cfg.fast = lr, (0.9, 0.999), 1, fast
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


@pytest.fixture
def mnist_root(tmp_path):
    """A tiny MNIST in torchvision's layout: 200 train / 100 test images, learnable labels."""
    return fake.write_mnist(tmp_path, n_train=200, n_test=100)


@pytest.fixture
def cifar_root(tmp_path):
    """A tiny CIFAR-10 in the python-pickle batch format: 5 x 40 train, 50 test."""
    return fake.write_cifar10(tmp_path, n_per_batch=40, n_test=50)
