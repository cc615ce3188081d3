"""Datasets: config -> :class:`TensorData` (MNIST, CIFAR-10, synthetic) or :class:`HiggsStream`."""
from __future__ import annotations

from amtrain.errors import ConfigError


def build_data(cfg):
    """A dataset with ``train_batches``, ``eval_batches``, ``in_shape``, ``n_classes``, ``splits``."""
    # imported here so that torch-free tools (the HIGGS converter) can import amtrain.data cheaply
    from amtrain.data import cifar10, higgs, higgs_convert, mnist, synthetic
    if cfg.name == "higgs":
        if cfg.val_size:
            raise ConfigError("dataset.val_size is not supported for higgs (streamed); use dataset.train_size")
        path = cfg.path or higgs_convert.default_path(cfg.root)
        return higgs.HiggsStream(path, cfg.standardize, cfg.block_rows, cfg.buffer_blocks, cfg.train_size,
                                 cfg.num_workers)
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
        return data.check().subset(cfg.train_size, cfg.val_size)
    except ValueError as e:
        raise ConfigError(str(e)) from e


__all__ = ["build_data"]
