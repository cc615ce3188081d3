"""A small, learnable, non-linear classification problem generated on the fly.

Each class owns ``clusters_per_class`` Gaussian clusters with random centres; with two
or more clusters per class the classes are not linearly separable. The problem is
fixed by ``data_seed``; the run's seed changes only initialisation and data order.
"""
from __future__ import annotations

import torch

from amtrain.data.base import TensorData
from amtrain.provenance import tensors_fingerprint


def make(n_train: int, n_test: int, n_features: int, n_classes: int, clusters_per_class: int = 2,
         noise: float = 0.6, data_seed: int = 1234) -> TensorData:
    g = torch.Generator().manual_seed(data_seed)
    k = n_classes * clusters_per_class
    centres = torch.randn(k, n_features, generator=g)
    cluster_class = torch.arange(k) % n_classes

    def sample(n):
        cluster = torch.randint(0, k, (n,), generator=g)
        x = centres[cluster] + noise * torch.randn(n, n_features, generator=g)
        return x, cluster_class[cluster]

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    # identity: the samples before standardising, whose mean and std (reductions) may differ in
    # the last bit between CPUs; the samples themselves are element-wise, the same everywhere
    identity = tensors_fingerprint([x_train, y_train, x_test, y_test])
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    return TensorData((x_train - mean) / std, y_train, (x_test - mean) / std, y_test, n_classes=n_classes,
                      identity=identity)
