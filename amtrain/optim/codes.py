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
                (g,) = torch.autograd.grad(data_term(c), c)
            c = c.detach()
        if mode == Mode.paper:
            g = torch.add(g, c - c0, alpha=2.0 * mu)
        if momentum:
            buf = g.clone() if buf is None else buf.mul_(momentum).add_(g)
            g = g.add(buf, alpha=momentum) if nesterov else buf
        c = torch.add(c, g, alpha=-lr)
    return c


# ----------------------------------------------------------------------------- closed forms
# The same gradients as autograd's on the data terms above, written out for the layers of
# the MLPs (Linear, optionally BatchNorm in train mode, then ReLU / tanh / identity), so a
# code step is a few tensor operations with no graph. Anything else returns None and the
# solver falls back to autograd. ``optim.codes.fast=false`` always uses autograd.

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


def top_data_grad(net: LayeredNet, y: torch.Tensor, mu: float, mode: Mode):
    """d/dc of top_data_term, or None when the head is not Linear or sigma_L is unsupported."""
    head, sigma = net.head, net.blocks[-1].sigma
    if not isinstance(head, nn.Linear) or not _supported(sigma):
        return None

    target = (y[:, None] if net.n_outputs == 1 else F.one_hot(y, net.n_outputs)).to(head.weight.dtype)
    scale = 1.0 if mode == Mode.paper else 1.0 / (y.shape[0] * mu)

    @torch.no_grad()
    def grad(c: torch.Tensor) -> torch.Tensor:
        out = F.linear(sigma(c), head.weight, head.bias)
        d_out = torch.sigmoid(out) if net.n_outputs == 1 else torch.softmax(out, dim=1)
        d_out.sub_(target)  # d loss / d output
        if scale != 1.0:
            d_out.mul_(scale)
        return _sigma_grad(sigma, c, d_out @ head.weight)

    return grad


def hidden_data_grad(net: LayeredNet, l: int, c_next: torch.Tensor, mu: float, mode: Mode):
    """d/dc of hidden_data_term for layer l, or None when f_{l+1} is not Linear [+ BatchNorm1d]."""
    f, sigma = net.blocks[l + 1].f, net.blocks[l].sigma
    mods = list(f) if isinstance(f, nn.Sequential) else [f]
    if not _supported(sigma) or not isinstance(mods[0], nn.Linear) or len(mods) > 2:
        return None
    lin = mods[0]
    bn = mods[1] if len(mods) == 2 else None
    if bn is not None and (not isinstance(bn, nn.BatchNorm1d) or (bn.training and bn.momentum is None)):
        return None

    @torch.no_grad()
    def grad(c: torch.Tensor) -> torch.Tensor:
        x = F.linear(sigma(c), lin.weight, lin.bias)
        if bn is None:
            pred = x
        elif bn.training:  # batch statistics; running statistics move, as in the module's forward
            pred, mean, rstd = torch.native_batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                                       True, bn.momentum, bn.eps)
            if bn.track_running_stats:
                bn.num_batches_tracked.add_(1)
        else:
            pred = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        d = (pred - c_next).mul_(2.0 * mu if mode == Mode.paper else 2.0 / pred.numel())
        if bn is not None:
            if bn.training:  # backward of batch normalisation with batch statistics (one fused kernel)
                d = torch.ops.aten.native_batch_norm_backward(d, x, bn.weight, bn.running_mean, bn.running_var,
                                                              mean, rstd, True, bn.eps, [True, False, False])[0]
            else:
                gamma = bn.weight if bn.weight is not None else 1.0
                d = d * gamma * torch.rsqrt(bn.running_var + bn.eps)
        return _sigma_grad(sigma, c, d @ lin.weight)

    return grad


# ----------------------------------------------------------------------------- sign layers
def hidden_objective_rows(net: LayeredNet, l: int, c: torch.Tensor, c_next: torch.Tensor, c0: torch.Tensor,
                          mu: float, mode: Mode) -> torch.Tensor:
    """eq. 5 sample by sample (the data term plus the proximal term, one value per row)."""
    prediction = net.blocks[l + 1].f(net.blocks[l].sigma(c))
    data = (c_next - prediction).pow(2).flatten(1).sum(1)
    if mode == Mode.paper:
        return mu * data + mu * (c - c0).pow(2).flatten(1).sum(1)
    return data / c_next[0].numel()  # release: mean-reduced, proximal term without gradient


@torch.no_grad()
def accept_if_better(net: LayeredNet, l: int, c_new: torch.Tensor, c0: torch.Tensor, c_next: torch.Tensor,
                     mu: float, mode: Mode) -> torch.Tensor:
    """Gradient-free safeguard for codes under a sign: keep each sample's proposed code only if
    it lowers that sample's eq. 5 (separable over samples, so the total cannot rise; exact
    without BatchNorm, whose batch statistics couple the samples)."""
    better = hidden_objective_rows(net, l, c_new, c_next, c0, mu, mode) < hidden_objective_rows(
        net, l, c0, c_next, c0, mu, mode)
    return torch.where(better.view(-1, *([1] * (c0.dim() - 1))), c_new, c0)
