"""Datasets: config -> :class:`TensorData` (MNIST, Fashion-MNIST, CIFAR-10, synthetic) or
:class:`HiggsStream`. ``LOADERS`` maps each ``conf/dataset/<name>.yaml``'s name to its loader."""
from __future__ import annotations

from amtrain.errors import ConfigError


def _mnist(cfg):
    from amtrain.data import mnist

    return mnist.load(cfg.root, cfg.download, mnist.MNIST, cfg.scale, cfg.files)


def _fashion_mnist(cfg):
    from amtrain.data import mnist

    return mnist.load(cfg.root, cfg.download, mnist.FASHION_MNIST, cfg.scale, cfg.files)


def _cifar10(cfg):
    from amtrain.data import cifar10

    return cifar10.load(cfg.root, cfg.download, cfg.scale)


def _synthetic(cfg):
    from amtrain.data import synthetic

    return synthetic.make(cfg.n_train, cfg.n_test, cfg.n_features, cfg.n_classes, cfg.clusters_per_class, cfg.noise,
                          cfg.data_seed)


def _higgs(cfg):
    from amtrain.data import higgs, higgs_convert

    if cfg.val_size:
        raise ConfigError("dataset.val_size is not supported for higgs (streamed); use dataset.train_size")
    path = cfg.path or higgs_convert.default_path(cfg.root)
    return higgs.HiggsStream(path, cfg.standardize, cfg.block_rows, cfg.buffer_blocks, cfg.train_size, cfg.num_workers)


LOADERS = {"mnist": _mnist, "fashion_mnist": _fashion_mnist, "cifar10": _cifar10, "synthetic": _synthetic,
           "higgs": _higgs}
STREAMED = ("higgs",)  # served from disk in blocks: no train_size/val_size subset here


def build_data(cfg):
    """A dataset with ``train_batches``, ``eval_batches``, ``in_shape``, ``n_classes``, ``splits``
    and ``identity`` (what the whole dataset is, before any subset: amtrain.provenance)."""
    if cfg.name not in LOADERS:
        raise ConfigError(f"unknown dataset '{cfg.name}': choose one of {', '.join(LOADERS)}")
    data = LOADERS[cfg.name](cfg)
    if cfg.name in STREAMED:
        return data
    try:
        return data.check().fingerprinted().subset(cfg.train_size, cfg.val_size)
    except ValueError as e:
        raise ConfigError(str(e)) from e


__all__ = ["LOADERS", "build_data"]
