"""Model builders: config -> :class:`LayeredNet`."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from amtrain.errors import ConfigError
from amtrain.models.layered import Block, LayeredNet

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{name}': choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(in_shape: Sequence[int], n_outputs: int, hidden: Sequence[int], act: str = "relu",
        batchnorm: bool = False, hidden_bias: bool = True) -> LayeredNet:
    """Fully-connected net ``prod(in_shape)-hidden[0]-...-hidden[-1]-n_outputs``."""
    widths = [int(_prod(in_shape))] + [int(h) for h in hidden]
    blocks = []
    for m_prev, m in zip(widths[:-1], widths[1:]):
        lin = nn.Linear(m_prev, m, bias=hidden_bias)
        f = nn.Sequential(lin, nn.BatchNorm1d(m)) if batchnorm else nn.Sequential(lin)
        blocks.append(Block(f, activation(act)))
    head = nn.Linear(widths[-1], n_outputs)
    return LayeredNet(nn.Flatten(), blocks, head, n_outputs)


def build_model(cfg, in_shape: Sequence[int], n_classes: int) -> LayeredNet:
    """Build the network named by ``cfg.model`` for inputs of ``in_shape`` and ``n_classes``."""
    if cfg.single_logit and n_classes != 2:
        raise ConfigError(f"model.single_logit needs a binary problem, the dataset has {n_classes} classes")
    n_outputs = 1 if cfg.single_logit else n_classes
    if cfg.arch == "mlp":
        if not cfg.hidden:
            raise ConfigError("model.hidden is empty: an MLP needs at least one hidden layer for AM")
        return mlp(in_shape, n_outputs, cfg.hidden, cfg.activation, cfg.batchnorm, cfg.hidden_bias)
    raise ConfigError(f"unknown model architecture '{cfg.arch}'")


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for v in xs:
        out *= int(v)
    return out


__all__ = ["Block", "LayeredNet", "build_model", "mlp"]
