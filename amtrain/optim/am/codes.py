"""The code sub-problems of Algorithm 2.2 (updateCodes), eqs. 4 and 5.

Top code (eq. 4)::

    c_L <- argmin_c  loss(y, f_{L+1}(W_{L+1}, sigma_L(c))) + mu ||c - c_L^0||^2

Hidden codes, l = L-1 .. 1 (eq. 5), with c*_{l+1} the code already updated above::

    c_l <- argmin_c  mu ||c*_{l+1} - f_{l+1}(W_{l+1}, sigma_l(c))||^2 + mu ||c - c_l^0||^2

Each is solved approximately by K steps of SGD with Nesterov momentum started at the
forward value c^0. Two readings (``Mode``):

* ``paper``: the equations as written, summed over the samples of the batch; the
  proximal term's gradient 2 mu (c - c^0) is added in closed form.
* ``release``: the authors' code: ``(1/mu) * mean loss`` on top, ``mse(f(sigma(c)), c*)``
  (mean-reduced, mu cancels) below, and a proximal term whose gradient is zero.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from amtrain.config import Mode
from amtrain.models.layered import LayeredNet
from amtrain.optim.am.linear_bn import LinearBN


def top_data_term(net: LayeredNet, c: torch.Tensor, y: torch.Tensor, mu: float, mode: Mode) -> torch.Tensor:
    """First term of eq. 4: the loss of the prediction made from the top code."""
    output = net.head(net.blocks[-1].sigma(c))
    if mode == Mode.paper:
        return net.loss(output, y, reduction="sum")
    return net.loss(output, y, reduction="mean") / mu


def hidden_data_term(net: LayeredNet, l: int, c: torch.Tensor, c_next: torch.Tensor, mu: float,
                     mode: Mode) -> torch.Tensor:
    """First term of eq. 5: how well code c_l predicts the (updated) code above, c*_{l+1}."""
    prediction = net.blocks[l + 1].f(net.blocks[l].sigma(c))
    if mode == Mode.paper:
        return mu * (c_next - prediction).pow(2).sum()
    if net.seeds is None:
        return F.mse_loss(prediction, c_next)
    return F.mse_loss(prediction, c_next, reduction="sum") / net.numel_per_copy(c_next)  # each copy's mean


def proximal_term(c: torch.Tensor, c0: torch.Tensor, mu: float, mode: Mode) -> torch.Tensor:
    """Second term of eqs. 4-5, mu ||c - c^0||^2 (paper); the release's has zero gradient."""
    if mode == Mode.paper:
        return mu * (c - c0).pow(2).sum()
    return c.new_zeros(())


def solve_code(c0: torch.Tensor, data_term: Callable[[torch.Tensor], torch.Tensor], mu: float,
               mode: Mode, lr: float, iters: int, momentum: float = 0.9,
               nesterov: bool = True, data_grad: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """K steps of SGD (Nesterov momentum, as torch.optim.SGD) on data_term(c) + proximal_term(c).

    Starts at the forward value c0 and returns the new code, detached. The data term's
    gradient is ``data_grad(c)`` when given (closed form, see below), else autograd's;
    the proximal term's, 2 mu (c - c0), is added in closed form.
    """
    c0 = c0.detach()
    c = c0.clone()
    buf = None
    for _ in range(iters):
        if data_grad is not None:
            g = data_grad(c)
        else:
            with torch.enable_grad():
                c.requires_grad_(True)
                (g,) = torch.autograd.grad(data_term(c).sum(), c)  # (.sum(): the copies of a seed axis)
            c = c.detach()
        if mode == Mode.paper:  # mu a number, or a 0-d tensor (a compiled pass: amtrain.optim.am.rnn)
            g = torch.add(g, c - c0, alpha=2.0 * mu) if not torch.is_tensor(mu) else g + (c - c0) * (2.0 * mu)
        if not momentum:
            c.add_(g, alpha=-lr)
            continue
        buf = g if buf is None else torch.add(g, buf, alpha=momentum)  # buf <- momentum buf + g
        if nesterov:  # c <- c - lr (g + momentum buf)
            c.add_(g, alpha=-lr).add_(buf, alpha=-lr * momentum)
        else:
            c.add_(buf, alpha=-lr)
    return c


# ----------------------------------------------------------------------------- closed forms
# The same gradients as autograd's on the data terms above, written out for the layers of
# the MLPs (f = Linear, optionally BatchNorm; sigma = ReLU / tanh / identity), so a code
# step is a few tensor operations with no graph. Anything else returns None and the solver
# falls back to autograd; ``optim.fast=false`` always uses autograd.
#
# Each solve starts at the forward value c^0, whose prediction the encoding already made
# with the same weights: ``z0`` (f's linear part there) spares the first step's matmul.
# Constant factors of the data terms (mu, 1/N) are folded into a scaled copy of W once
# per solve: the backward through f is linear in its upstream gradient.

def _sigma_grad(sigma: nn.Module, c: torch.Tensor, upstream: torch.Tensor) -> Optional[torch.Tensor]:
    if isinstance(sigma, nn.ReLU):
        return torch.ops.aten.threshold_backward(upstream, c, 0)  # upstream where c > 0, else 0
    if isinstance(sigma, nn.Tanh):
        t = torch.tanh(c)
        return upstream * (1 - t * t)
    if isinstance(sigma, nn.Identity):
        return upstream
    return None


def _supported(sigma: nn.Module) -> bool:
    return isinstance(sigma, (nn.ReLU, nn.Tanh, nn.Identity))


def _first_then_none(z0: Optional[torch.Tensor]):
    """z0 for the first call (the solve's first step is at c^0), None after."""
    pending = [z0]
    return lambda: pending.pop() if pending else None


def top_data_grad(net: LayeredNet, y: torch.Tensor, mu: float, mode: Mode, z0: Optional[torch.Tensor] = None):
    """d/dc of top_data_term, or None when the head is not Linear or sigma_L is unsupported.
    ``z0``: the head's output at c = c^0 (the encoding's prediction)."""
    head, sigma = LinearBN.of(net.head), net.blocks[-1].sigma
    if head is None or head.bn is not None or not _supported(sigma):
        return None
    target = net.loss_target(y, head.weight.dtype)
    # d/d output of the summed loss (paper); the release's mean loss / mu scales it by 1/(N mu)
    W = head.weight if mode == Mode.paper else head.weight * (1.0 / (net.n_samples(y) * mu))
    first = _first_then_none(z0)

    @torch.no_grad()
    def grad(c: torch.Tensor) -> torch.Tensor:
        out = first()
        if out is None:
            out = head.linear(sigma(c))
        return _sigma_grad(sigma, c, net.loss_grad(out, target) @ W)

    return grad


def hidden_data_grad(net: LayeredNet, l: int, c_next: torch.Tensor, mu: float, mode: Mode,
                     z0: Optional[torch.Tensor] = None):
    """d/dc of hidden_data_term for layer l, or None when f_{l+1} is not Linear [+ BatchNorm1d].
    ``z0``: f_{l+1}'s linear part W_{l+1} sigma(c^0) + b (the encoding's)."""
    f, sigma = LinearBN.of(net.blocks[l + 1].f), net.blocks[l].sigma
    if f is None or not _supported(sigma):
        return None
    # d/dpred = 2 mu (pred - c*) (paper) or 2 (pred - c*) / numel (release's mse)
    W = f.weight * (2.0 * mu if mode == Mode.paper else 2.0 / net.numel_per_copy(c_next))
    first = _first_then_none(z0)

    @torch.no_grad()
    def grad(c: torch.Tensor) -> torch.Tensor:
        pred, saved = f.forward(sigma(c), z=first())  # moves BN's running statistics, as the module does
        return _sigma_grad(sigma, c, f.grad_input(pred - c_next, saved, W))

    return grad


# ----------------------------------------------------------------------------- sign layers
def hidden_objective_rows(net: LayeredNet, l: int, c: torch.Tensor, c_next: torch.Tensor, c0: torch.Tensor,
                          mu: float, mode: Mode) -> torch.Tensor:
    """eq. 5 sample by sample (the data term plus the proximal term, one value per row)."""
    prediction = net.blocks[l + 1].f(net.blocks[l].sigma(c))
    data = net.sum_per_sample((c_next - prediction).pow(2))
    if mode == Mode.paper:
        return mu * data + mu * net.sum_per_sample((c - c0).pow(2))
    return data / (net.numel_per_copy(c_next) // net.n_samples(c_next))  # release: mean-reduced, proximal term without gradient


@torch.no_grad()
def accept_if_better(net: LayeredNet, l: int, c_new: torch.Tensor, c0: torch.Tensor, c_next: torch.Tensor,
                     mu: float, mode: Mode) -> torch.Tensor:
    """Gradient-free safeguard for codes under a sign: keep each sample's proposed code only if
    it lowers that sample's eq. 5 (separable over samples, so the total cannot rise; exact
    without BatchNorm, whose batch statistics couple the samples)."""
    better = hidden_objective_rows(net, l, c_new, c_next, c0, mu, mode) < hidden_objective_rows(
        net, l, c0, c_next, c0, mu, mode)
    return torch.where(better.view(*better.shape, *([1] * (c0.dim() - better.dim()))), c_new, c0)
