"""Model builders: config -> :class:`LayeredNet`."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from amtrain.errors import ConfigError
from amtrain.models.layered import Block, LayeredNet
from amtrain.models.pooling import MaxPool2d

class _SignSTE(torch.autograd.Function):
    """sign(x) in {-1, +1} forward; straight-through backward (the gradient passes unchanged)."""

    @staticmethod
    def forward(ctx, x):
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad):
        return grad


class Sign(nn.Module):
    """The binary activation of Lee et al. (2015)'s network: non-differentiable, so backprop and
    AM's code steps use the straight-through estimator (as the authors' release does)."""

    def forward(self, x):
        return _SignSTE.apply(x)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "sign": Sign}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{name}': choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(in_shape: Sequence[int], n_outputs: int, hidden: Sequence[int], act="relu",
        batchnorm: bool = False, hidden_bias: bool = True) -> LayeredNet:
    """Fully-connected net ``prod(in_shape)-hidden[0]-...-hidden[-1]-n_outputs``.

    ``act`` is one activation for every hidden layer or a list, one per layer."""
    widths = [int(_prod(in_shape))] + [int(h) for h in hidden]
    acts = [act] * len(hidden) if isinstance(act, str) else list(act)
    if len(acts) != len(hidden):
        raise ConfigError(f"model.activations has {len(acts)} entries for {len(hidden)} hidden layers")
    blocks = []
    for m_prev, m, a in zip(widths[:-1], widths[1:], acts):
        lin = nn.Linear(m_prev, m, bias=hidden_bias)
        f = nn.Sequential(lin, nn.BatchNorm1d(m)) if batchnorm else nn.Sequential(lin)
        blocks.append(Block(f, activation(a)))
    head = nn.Linear(widths[-1], n_outputs)
    return LayeredNet(nn.Flatten(), blocks, head, n_outputs)


def lenet5(in_shape: Sequence[int], n_outputs: int, channels: Sequence[int] = (6, 16), kernel: int = 5,
           fc: Sequence[int] = (120, 84), act: str = "relu", batchnorm: bool = False,
           hidden_bias: bool = True) -> LayeredNet:
    """LeNet-5 (LeCun et al. 1998) as coded blocks: each conv and hidden FC layer has a code
    (its pre-activation map); pooling and flattening belong to the activation step sigma."""
    if len(in_shape) != 3:
        raise ConfigError(f"lenet5 needs image inputs (channels, height, width), the dataset gives {tuple(in_shape)}")
    c_in, h, w = (int(v) for v in in_shape)
    blocks = []
    for i, c_out in enumerate(channels):
        conv = nn.Conv2d(c_in, int(c_out), kernel, bias=hidden_bias)
        f = nn.Sequential(conv, nn.BatchNorm2d(int(c_out))) if batchnorm else nn.Sequential(conv)
        h, w = (h - kernel + 1) // 2, (w - kernel + 1) // 2
        if h < 1 or w < 1:
            raise ConfigError(f"lenet5: inputs of {tuple(in_shape)} are too small for {len(channels)} conv layers")
        last = i == len(channels) - 1
        sigma = nn.Sequential(activation(act), MaxPool2d(2), *([nn.Flatten()] if last else []))
        blocks.append(Block(f, sigma))
        c_in = int(c_out)
    width = c_in * h * w
    for m in fc:
        lin = nn.Linear(width, int(m), bias=hidden_bias)
        f = nn.Sequential(lin, nn.BatchNorm1d(int(m))) if batchnorm else nn.Sequential(lin)
        blocks.append(Block(f, activation(act)))
        width = int(m)
    return LayeredNet(nn.Identity(), blocks, nn.Linear(width, n_outputs), n_outputs)


def build_model(cfg, in_shape: Sequence[int], n_classes: int) -> LayeredNet:
    """Build the network named by ``cfg.model`` for inputs of ``in_shape`` and ``n_classes``."""
    if cfg.single_logit and n_classes != 2:
        raise ConfigError(f"model.single_logit needs a binary problem, the dataset has {n_classes} classes")
    n_outputs = 1 if cfg.single_logit else n_classes
    if cfg.arch == "mlp":
        if not cfg.hidden:
            raise ConfigError("model.hidden is empty: an MLP needs at least one hidden layer for AM")
        acts = list(cfg.activations) if cfg.activations else cfg.activation
        return mlp(in_shape, n_outputs, cfg.hidden, acts, cfg.batchnorm, cfg.hidden_bias)
    if cfg.arch == "rnn":
        from amtrain.models.rnn import ElmanRNN

        n_steps_inputs = _prod(in_shape)
        if n_steps_inputs % cfg.n_inputs:
            raise ConfigError(f"rnn: {n_steps_inputs} input values do not split into steps of {cfg.n_inputs}")
        return ElmanRNN(cfg.n_inputs, cfg.hidden, n_outputs, cfg.recurrent_init, cfg.readout,
                        n_steps_inputs // cfg.n_inputs)
    if cfg.arch == "lenet5":
        return lenet5(in_shape, n_outputs, cfg.channels, cfg.kernel, cfg.fc, cfg.activation, cfg.batchnorm,
                      cfg.hidden_bias)
    raise ConfigError(f"unknown model architecture '{cfg.arch}'")


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for v in xs:
        out *= int(v)
    return out


__all__ = ["Block", "LayeredNet", "Sign", "build_model", "lenet5", "mlp"]
