"""mDLAM: Wang, Li, Zhao, "Accelerated Gradient-free Neural Network Training by Multi-convex
Alternating Optimization" (Neurocomputing 2022): monotone, Nesterov-accelerated alternating
minimisation with the ReLU constraints relaxed to a box. Full batch.

Variables for every training sample: z_l, a_l (l < L) and the output code z_L. The
equality a_l = ReLU(z_l) is relaxed to |a_l - ReLU(z_l)| <= eps (entry-wise), and::

    F = R(z_L; y) + sum_l phi_l + (mu/2) sum_l ||W_l||^2,   phi_l = (rho/2) ||z_l - a_{l-1} W_l^T - b_l||^2

eps starts at eps0 and is halved after every iteration, down to eps_min, so the relaxation
tightens towards the original problem. One iteration runs forward, block by block::

    for l = 1 .. L-1:  W_l, b_l, z_l, a_l
    then:             W_L, b_L, z_L

    W_l <- prox-gradient step on phi_l + (mu/2)||W||^2: W = (alpha S - G) / (alpha + mu), G = grad phi_l(S),
           alpha by backtracking from 1 (doubling, at most 10 times, else the old W)
    b_l <- mean over samples of (z_l - a_{l-1} W_l^T)                                  (exact)
    z_l <- argmin phi_l subject to the box: m = a_{l-1} W_l^T + b_l clipped to it       (exact)
    a_l <- projected gradient step on phi_{l+1} inside [ReLU(z_l) - eps, ReLU(z_l) + eps], backtracking as for W
    z_L <- argmin R(z; y) + phi_L(z) by FISTA (step 4, tolerance 1e-4, at most 500 steps)

**Acceleration and monotonicity** (the paper's contribution). With t_0 = 1 and
t_k = (1 + sqrt(1 + 4 t_{k-1}^2)) / 2, every block that a gradient step updates (W_l, a_l,
z_L) starts from the extrapolated point X^ = X_k + ((t_{k-1} - 1) / t_k) (X_k - X_{k-1});
if F after that update is above F at X_k, the update is redone from X_k. Each step from
X_k does not raise F, so with eps fixed F never rises. The exact blocks (b_l, z_l) do not
depend on where they start, so they are not extrapolated. ``optim.accelerate=false`` runs
the un-accelerated method: what the released script actually runs, because its
extrapolation is always zero (it sets X_{k-1} = X_k just before extrapolating, and t stays 0).

When eps halves, the box around a_l shrinks and the exact z_l can be forced to a higher
phi_l: F may then rise, by the price of the tighter relaxation, not by a step.

Memory: z_l, a_l, their previous values and the a-step's gradient for every sample:
about N (5 sum of hidden widths + 2 outputs) floats, plus chunks.
"""
from __future__ import annotations

import math
from typing import List

import torch

from amtrain.models.layered import LayeredNet
from amtrain.optim.fullbatch import steps
from amtrain.optim.fullbatch.base import FullBatch, rows
from amtrain.optim.fullbatch.solvers import backtrack, backtrack_projected, fista_output, output_loss


class MDLAM(FullBatch):
    diverge_hint = "raise optim.mu or lower optim.rho"

    def __init__(self, net: LayeredNet, cfg):
        super().__init__(net, cfg)
        self.rho = float(cfg.rho)
        self.decay = float(cfg.mu)  # the paper's mu (the loop's `mu` is the AM penalty schedule)
        self.eps = float(cfg.eps0)
        self.accelerate = bool(cfg.accelerate)
        self.t = 1.0  # t_{k-1}
        self.z: List[torch.Tensor] = []  # z_1..z_L
        self.a: List[torch.Tensor] = []  # a_1..a_{L-1}
        self.prev = {}  # X_{k-1} of the extrapolated blocks: ("W", l), ("a", l), ("z", L-1)
        self.refused = 0  # W and a steps whose backtracking ran out (the old block kept)
        self.redone = 0  # extrapolated updates redone from X_k by the safeguard

    # ------------------------------------------------------------------ one iteration
    def iterate(self, x, y) -> None:
        if not self.z:
            self._init_state(x, y)
        t_next = (1 + math.sqrt(1 + 4 * self.t * self.t)) / 2
        omega = (self.t - 1) / t_next if self.accelerate else 0.0
        L = self.L
        inputs = lambda l: x if l == 0 else self.a[l - 1]  # noqa: E731  a_{l-1}, with a_0 = x
        for l in range(L):
            self.block(("W", l), omega, lambda S, l=l: self.weight_step(l, S, inputs(l))[0],
                       lambda l=l: self.W[l], lambda v, l=l: self.W.__setitem__(l, v),
                       lambda l=l: self.F_weights(l, inputs(l)))
            self.update_bias(l, inputs(l))
            if l < L - 1:
                self.update_preactivations(l, inputs(l))
                self.block(("a", l), omega, lambda S, l=l: self.activation_step(l, S)[0],
                           lambda l=l: self.a[l], lambda v, l=l: self.a.__setitem__(l, v),
                           lambda l=l: self.phi(l + 1, self.a[l]))
        self.block(("z", L - 1), omega, lambda S: self.output_step(S, inputs(L - 1), y),
                   lambda: self.z[L - 1], lambda v: self.z.__setitem__(L - 1, v),
                   lambda: self.F_output(inputs(L - 1), y))
        self.t = t_next
        self.eps = max(self.eps * float(self.cfg.eps_decay), float(self.cfg.eps_min))

    def block(self, key, omega: float, update, get, put, local_F) -> None:
        """Update one block from its extrapolated point, with the monotone safeguard.

        ``update(S)`` returns the block's new value started from S; ``local_F()`` is F's part
        that depends on the block (the rest of F does not change). X_k = get()."""
        X_k = get()
        X_prev = self.prev.get(key)
        if omega == 0.0 or X_prev is None:
            new = update(X_k)
        else:
            F_k = local_F()
            put(update(X_k + omega * (X_k - X_prev)))
            if local_F() > F_k:  # the safeguard: redo the update from the un-extrapolated X_k
                self.redone += 1
                put(X_k)
                new = update(X_k)
            else:
                new = get()
        self.prev[key] = X_k
        put(new)

    # ------------------------------------------------------------------ the blocks
    def weight_step(self, l: int, S: torch.Tensor, a_prev):
        """W = (alpha S - G) / (alpha + mu) with G = grad phi_l(S), alpha by backtracking on phi_l's bound.

        Returns (W, alpha), or (S, None) when the backtracking ran out."""
        G = torch.zeros_like(S, dtype=torch.float64)
        for sl in self.chunks(len(a_prev)):
            r = self._affine(a_prev[sl], S, self.b[l]) - self.z[l][sl]
            G += (self.rho * r).T.matmul(a_prev[sl]).double()
        G = G.to(S.dtype)
        D = G + self.decay * S  # W - S = -D / (alpha + mu): the direction does not depend on alpha
        dd = float((D * D).sum())
        if dd == 0.0:
            return S, None
        # phi_l is quadratic in W: phi(S + d) = phi(S) + <G, d> + rho/2 ||a d^T||^2, so the bound
        # holds iff alpha >= rho ||a D^T||^2 / ||D||^2
        curv = sum(float(((a_prev[sl] @ D.T) ** 2).sum()) for sl in self.chunks(len(a_prev)))
        alpha = backtrack(self.rho * curv / dd, self.cfg.backtrack_start, self.cfg.backtrack_factor,
                          self.cfg.backtrack_max)
        if alpha is None:
            self.refused += 1
            return S, None
        return (alpha * S - G) / (alpha + self.decay), alpha

    def update_bias(self, l: int, a_prev) -> None:
        """b_l <- the mean over samples of z_l - a_{l-1} W_l^T (exact)."""
        if self.b[l] is None:
            return
        total = torch.zeros_like(self.b[l], dtype=torch.float64)
        for sl in self.chunks(len(a_prev)):
            total += (self.z[l][sl] - a_prev[sl] @ self.W[l].T).sum(0).double()
        self.b[l] = (total / len(a_prev)).to(self.b[l].dtype)

    def update_preactivations(self, l: int, a_prev) -> None:
        """z_l <- a_{l-1} W_l^T + b_l, clipped to the box around a_l (exact)."""
        for sl in self.chunks(len(a_prev)):
            self.z[l][sl] = steps.box_preactivations(self.linear(l, a_prev[sl]), self.a[l][sl], self.eps)

    def activation_step(self, l: int, S: torch.Tensor):
        """A projected gradient step on phi_{l+1} in a_l, inside the box; backtracking on t.

        Returns (a, t), or (the projected start, None) when the backtracking ran out."""
        project = lambda a: steps.box_activations(a, self.z[l], self.eps)  # noqa: E731
        S = project(S)  # an extrapolated start may leave the box
        W_next, b_next, z_next, n = self.W[l + 1], self.b[l + 1], self.z[l + 1], len(S)
        g = torch.empty_like(S)
        for sl in self.chunks(n):
            g[sl] = self.rho * ((self._affine(S[sl], W_next, b_next) - z_next[sl]) @ W_next)
        # phi_{l+1} is quadratic in a: phi(S + d) - phi(S) - <g, d> = rho/2 ||d W^T||^2
        quad = lambda d: self.rho * sum(float(((d[sl] @ W_next.T) ** 2).sum()) for sl in self.chunks(n))  # noqa: E731
        a, t = backtrack_projected(S, g, project, quad, self.cfg.backtrack_start, self.cfg.backtrack_factor,
                                   self.cfg.backtrack_max)
        if t is None:
            self.refused += 1
        return a, t

    def output_step(self, S: torch.Tensor, a_prev, y) -> torch.Tensor:
        """z_L <- argmin R(z; y) + rho/2 ||z - (a_{L-1} W_L^T + b_L)||^2 by FISTA from S."""
        c = self.cfg
        m = self._output_input(a_prev)
        return fista_output(self.net, y, self.targets(y), m, self.rho, S, c.fista_step, c.fista_tol, c.fista_max)

    # ------------------------------------------------------------------ F and its parts
    @staticmethod
    def _affine(a, W, b):
        return a @ W.T if b is None else torch.addmm(b, a, W.T)

    def _output_input(self, a_prev) -> torch.Tensor:
        return torch.cat([self.linear(self.L - 1, a_prev[sl]) for sl in self.chunks(len(a_prev))])

    def phi(self, l: int, a_prev) -> float:
        """phi_l = rho/2 ||z_l - a_{l-1} W_l^T - b_l||^2 (summed over samples)."""
        return self.rho / 2 * sum(float(((self.z[l][sl] - self.linear(l, a_prev[sl])) ** 2).sum())
                                  for sl in self.chunks(len(a_prev)))

    def F_weights(self, l: int, a_prev) -> float:
        return self.phi(l, a_prev) + self.decay / 2 * float((self.W[l] ** 2).sum())

    def F_output(self, a_prev, y) -> float:
        return float(output_loss(self.net, self.z[self.L - 1], y).sum()) + self.phi(self.L - 1, a_prev)

    @torch.no_grad()
    def F(self, x, y) -> float:
        """F (the module doc), summed over the training samples."""
        inputs = lambda l: x if l == 0 else self.a[l - 1]  # noqa: E731
        total = float(output_loss(self.net, self.z[self.L - 1], y).sum())
        return total + sum(self.F_weights(l, inputs(l)) for l in range(self.L))

    def box_gap(self) -> float:
        """max |a_l - ReLU(z_l)| over every entry: how far the relaxation is from a = ReLU(z)."""
        return max(float((a - torch.relu(z)).abs().max()) for a, z in zip(self.a, self.z))

    def objective(self, data) -> dict:
        if not self.z:
            return {}
        x, y = rows(data)
        return {"objective": self.F(x, y) / len(y), "eps": self.eps, "box_gap": self.box_gap(),
                "refused": self.refused, "redone": self.redone}  # counts since the start

    # ------------------------------------------------------------------ state
    @torch.no_grad()
    def _init_state(self, x, y) -> None:
        """z_l, a_l from a forward pass of the initial network; z_L = +1 for the label, -1 elsewhere."""
        self.z, self.a = self.forward_state(x, len(y))
        self.z[-1] = 2 * self.targets(y) - 1
