"""A network as a chain of coded blocks (Section 2, eq. 1).

Block l maps the previous activation to a *code* and then to an activation::

    c_l = f_l(W_l, a_{l-1})      (Linear or Conv, optionally followed by BatchNorm)
    a_l = sigma_l(c_l)           (ReLU, tanh, sign; pooling/flatten belong here)

with ``a_0 = inputs(x)``. The output layer ``f_{L+1}`` (``head``) has no code; the
prediction is ``head(a_L)``. AM methods use :meth:`LayeredNet.encode` (the split
forward pass of Algorithm 2.2) and the pieces ``blocks[l].f``, ``blocks[l].sigma``,
``head``; backprop baselines just call the module.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn


class Block(nn.Module):
    """One coded layer: ``c = f(a_prev)``, ``a = sigma(c)``."""

    def __init__(self, f: nn.Module, sigma: nn.Module):
        super().__init__()
        self.f = f
        self.sigma = sigma

    def forward(self, a_prev: torch.Tensor) -> torch.Tensor:
        return self.sigma(self.f(a_prev))

    def linear(self) -> nn.Module:
        """The module holding W_l (the first module of f)."""
        return self.f[0] if isinstance(self.f, nn.Sequential) else self.f

    def is_linear_in_weights(self) -> bool:
        """True when c = W a (+ b) exactly, as AM-mem's eq. 7 requires."""
        from amtrain.models.stacked import StackedLinear

        linear = (nn.Linear, StackedLinear)
        return isinstance(self.f, linear) or (
            isinstance(self.f, nn.Sequential) and len(self.f) == 1 and isinstance(self.f[0], linear)
        )


class Classifier(nn.Module):
    """Loss and prediction for ``n_outputs`` logits: cross-entropy (eq. 2), or logistic for one.

    ``seeds`` is None for one network, or S for S copies stacked on a leading seed axis
    (:mod:`amtrain.models.stacked`): outputs (S, N, K), labels (S, N) or (N,) for all. Then
    ``loss`` reduces over each copy's samples only, giving (S,) per-copy values, and
    :meth:`n_samples` / :meth:`numel_per_copy` give one copy's counts. Anything that needs
    a scalar to differentiate sums the copies (``.sum()``): no copy's gradient sees another.
    """

    n_outputs: int
    seeds = None

    def loss(self, output: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.seeds is not None:
            per_sample = self._loss(output.flatten(0, -2), y.expand(output.shape[:-1]).flatten(), "none")
            per_sample = per_sample.view(output.shape[:-1])
            return per_sample if reduction == "none" else getattr(per_sample, reduction)(dim=-1)
        return self._loss(output, y, reduction)

    def _loss(self, output: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
        if self.n_outputs == 1:
            return nn.functional.binary_cross_entropy_with_logits(
                output.squeeze(-1), y.to(output.dtype), reduction=reduction
            )
        return nn.functional.cross_entropy(output, y, reduction=reduction)

    def loss_target(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """y as :meth:`loss_grad` wants it: one-hot rows, or a column of 0/1."""
        if self.n_outputs == 1:
            return y.to(dtype)[..., None]
        return nn.functional.one_hot(y, self.n_outputs).to(dtype)

    def loss_grad(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d loss(output, y, reduction="sum") / d output = softmax (or sigmoid) - target."""
        if self.n_outputs == 1:
            return torch.sigmoid(output).sub_(target)
        if self.seeds is not None:  # torch.softmax over 10 classes of 1000 rows: 96 us on the CPU, this 38 us
            e = (output - output.amax(dim=-1, keepdim=True)).exp_()
            return e.div_(e.sum(dim=-1, keepdim=True)).sub_(target)
        return torch.softmax(output, dim=-1).sub_(target)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        if self.n_outputs == 1:
            return (output.squeeze(-1) > 0).long()
        return output.argmax(dim=-1)

    def n_samples(self, t: torch.Tensor) -> int:
        """How many samples one copy's batch ``t`` holds (codes, outputs or labels)."""
        return t.shape[0 if self.seeds is None else 1]

    def numel_per_copy(self, t: torch.Tensor) -> int:
        return t.numel() // (self.seeds or 1)

    def sum_per_sample(self, t: torch.Tensor) -> torch.Tensor:
        """Each sample's sum over its own entries: (N,), or (S, N) with a seed axis."""
        return t.flatten(1 if self.seeds is None else 2).sum(-1)


class LayeredNet(Classifier):
    """``inputs`` -> blocks 1..L (coded) -> ``head`` (f_{L+1}), with a matching loss."""

    def __init__(self, inputs: nn.Module, blocks: List[Block], head: nn.Module, n_outputs: int):
        super().__init__()
        self.inputs = inputs
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.n_outputs = n_outputs

    @property
    def L(self) -> int:
        """Number of coded (hidden) layers."""
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inputs(x)
        for block in self.blocks:
            a = block(a)
        return self.head(a)

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """encodeInput (Alg. 2.2): the codes c_1..c_L of a forward pass."""
        c: List[torch.Tensor] = []
        a = self.inputs(x)
        for block in self.blocks:
            c.append(block.f(a))
            a = block.sigma(c[-1])
        return c

    def activations(self, x: torch.Tensor, c: List[torch.Tensor]) -> List[torch.Tensor]:
        """a_0..a_L from given codes: a_0 = inputs(x), a_l = sigma_l(c_l)."""
        return [self.inputs(x)] + [block.sigma(c_l) for block, c_l in zip(self.blocks, c)]
