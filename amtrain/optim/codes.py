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

from typing import Callable

import torch
import torch.nn.functional as F

from amtrain.config import Mode
from amtrain.models.layered import LayeredNet


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
    return F.mse_loss(prediction, c_next)


def proximal_term(c: torch.Tensor, c0: torch.Tensor, mu: float, mode: Mode) -> torch.Tensor:
    """Second term of eqs. 4-5, mu ||c - c^0||^2 (paper); the release's has zero gradient."""
    if mode == Mode.paper:
        return mu * (c - c0).pow(2).sum()
    return c.new_zeros(())


def solve_code(c0: torch.Tensor, data_term: Callable[[torch.Tensor], torch.Tensor], mu: float,
               mode: Mode, lr: float, iters: int, momentum: float = 0.9,
               nesterov: bool = True) -> torch.Tensor:
    """K steps of SGD (Nesterov momentum, as torch.optim.SGD) on data_term(c) + proximal_term(c).

    Starts at the forward value c0 and returns the new code, detached. The data term's
    gradient comes from autograd; the proximal term's, 2 mu (c - c0), in closed form.
    """
    c0 = c0.detach()
    c = c0.clone()
    buf = None
    for _ in range(iters):
        with torch.enable_grad():
            c.requires_grad_(True)
            (g,) = torch.autograd.grad(data_term(c), c)
        c = c.detach()
        if mode == Mode.paper:
            g = g + 2.0 * mu * (c - c0)
        if momentum:
            buf = g.clone() if buf is None else buf.mul_(momentum).add_(g)
            g = g.add(buf, alpha=momentum) if nesterov else buf
        c = c - lr * g
    return c
