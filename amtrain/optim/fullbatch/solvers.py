"""The iterative pieces of mDLAM and dlADMM: bounded backtracking, and FISTA for z_L.

**Backtracking on a quadratic bound.** A gradient step x+ = x0 - g/alpha (or its projection,
or its proximal form) is accepted when f(x+) <= f(x0) + <g, x+ - x0> + (alpha/2) ||x+ - x0||^2;
otherwise alpha is multiplied by ``factor``, at most ``max_tries`` times, after which the
step is refused and the old point kept (the authors' mDLAM gives up after 10; their dlADMM
loop has no bound, and its own comment warns that it can loop forever).

Every sub-problem these methods backtrack on is quadratic in its block, so
f(x0 + d) - f(x0) - <g, d> = (1/2) d^T H d exactly, and the bound reads
d^T H d <= alpha ||d||^2. When the direction does not depend on alpha (a plain or proximal
gradient step), that is alpha >= d^T H d / ||d||^2 =: the step's curvature, and
:func:`backtrack` walks the same ladder alpha = start * factor^k without recomputing
anything. A projected step changes direction with alpha: :func:`backtrack_projected`
evaluates d^T H d for each candidate.

**FISTA for the output code** (:func:`fista_output`): z_L = argmin_z sum_i loss(z_i, y_i) +
(rho/2) ||z - c||^2, with a gradient step of length ``step`` on the loss, then the prox of
the quadratic, and Nesterov's momentum; it stops when the summed objective changes by less
than ``tol`` or after ``max_steps``, as in the authors' code. The problem separates over
samples, so each row keeps whichever of its start and FISTA's last iterate is lower: the
step never raises the objective.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch


def backtrack(curvature: float, start: float, factor: float, max_tries: int) -> Optional[float]:
    """The first alpha in start, start*factor, ... (``max_tries`` increases at most) with alpha >=
    curvature, i.e. for which the quadratic bound holds; None when none does (keep the old point)."""
    if not math.isfinite(curvature):
        return None
    alpha = float(start)
    for _ in range(int(max_tries) + 1):
        if alpha >= curvature:
            return alpha
        alpha *= factor
    return None


def backtrack_projected(x0: torch.Tensor, grad: torch.Tensor, project: Callable, quad: Callable, start: float,
                        factor: float, max_tries: int):
    """Projected gradient step x = project(x0 - grad/t) with backtracking on t.

    ``quad(d)`` is d^T H d for a step d (the exact second-order term of the quadratic f).
    Returns (x, t), or (x0, None) when no t within ``max_tries`` increases satisfies the bound.
    """
    t = float(start)
    for _ in range(int(max_tries) + 1):
        x = project(x0 - grad / t)
        d = x - x0
        dd = float((d * d).sum())
        if dd == 0.0 or quad(d) <= t * dd:
            return x, t
        t *= factor
    return x0, None


@torch.no_grad()
def fista_output(net, y: torch.Tensor, target: torch.Tensor, center: torch.Tensor, rho: float, z0: torch.Tensor,
                 step: float, tol: float, max_steps: int) -> torch.Tensor:
    """argmin_z sum_i loss(z_i, y_i) + (rho/2) ||z - center||^2 by FISTA from z0 (see the module doc).

    ``y`` are the labels, ``target`` the same as one-hot rows or a 0/1 column. The loop works
    on (outputs, samples) arrays, the authors' layout: on the CPU a softmax over the 10
    classes is about 20 times faster along the leading dimension than along the trailing one."""
    Y, C, Z0 = target.t().contiguous(), center.t().contiguous(), z0.t().contiguous()
    single = Z0.shape[0] == 1

    def loss_and_grad(Z):
        """Per sample: the loss and its gradient in Z (cross-entropy of a softmax, or logistic)."""
        if single:
            return torch.nn.functional.softplus(Z[0]) - Y[0] * Z[0], torch.sigmoid(Z) - Y
        lsm = Z.log_softmax(0)
        return -(lsm * Y).sum(0), lsm.exp_() - Y

    def per_sample(Z):
        return loss_and_grad(Z)[0] + (rho / 2) * ((Z - C) ** 2).sum(0)

    Z, zeta = Z0.clone(), Z0.clone()
    lam, f = 1.0, math.inf
    for _ in range(int(max_steps)):
        loss, g = loss_and_grad(Z)
        f_old, f = f, float(loss.sum() + (rho / 2) * ((Z - C) ** 2).sum())
        if abs(f - f_old) < tol:
            break
        lam_old, lam = lam, (1 + math.sqrt(1 + 4 * lam * lam)) / 2
        gamma = (1 - lam_old) / lam
        zeta_old = zeta
        # a gradient step on the loss, then the prox of (rho/2)||. - center||^2
        zeta = (rho * C + (Z - step * g) / step) / (rho + 1 / step)
        Z = (1 - gamma) * zeta + gamma * zeta_old
    better = per_sample(Z) <= per_sample(Z0)
    return torch.where(better[None, :], Z, Z0).t().contiguous()


def output_loss(net, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The network's loss per sample for outputs z (cross-entropy, or logistic for one logit)."""
    out = net.loss(z, y, reduction="none")
    return out.reshape(z.shape[0], -1).sum(1)
