"""Datasets: config -> :class:`TensorData` (MNIST, CIFAR-10, synthetic)."""
from __future__ import annotations

from amtrain.data import cifar10, mnist, synthetic
from amtrain.data.base import TensorData
from amtrain.errors import ConfigError


def build_data(cfg) -> TensorData:
    if cfg.name == "mnist":
        data = mnist.load(cfg.root, cfg.download)
    elif cfg.name == "cifar10":
        data = cifar10.load(cfg.root, cfg.download)
    elif cfg.name == "synthetic":
        data = synthetic.make(cfg.n_train, cfg.n_test, cfg.n_features, cfg.n_classes,
                              cfg.clusters_per_class, cfg.noise, cfg.data_seed)
    else:
        raise ConfigError(f"unknown dataset '{cfg.name}'")
    try:
        return data.subset(cfg.train_size, cfg.val_size)
    except ValueError as e:
        raise ConfigError(str(e)) from e


__all__ = ["TensorData", "build_data"]
