"""dlADMM: Wang, Yu, Chen, Zhao, "ADMM for Efficient Deep Learning with Global Convergence"
(KDD 2019). Full batch, with a dual variable u on the output layer's constraint only.

Variables for every training sample: z_l (pre-activations), a_l = ~ReLU(z_l) (l < L), the
output code z_L, and the dual u. The augmented Lagrangian (rows are samples, R the loss)::

    L_rho = R(z_L; y) + <u, z_L - a_{L-1} W_L^T - b_L>
            + rho/2 sum_l ||z_l - a_{l-1} W_l^T - b_l||^2 + rho/2 sum_{l<L} ||a_l - ReLU(z_l)||^2

Up to a constant in the primal blocks, the output layer's two terms are
rho/2 ||(z_L + u/rho) - a_{L-1} W_L^T - b_L||^2, so every layer's linear term has a target
t_l = z_l (+ u/rho on the output layer). One iteration::

    backward:  z_L, b_L, W_L, a_{L-1}, z_{L-1}, b_{L-1}, W_{L-1}, ..., a_1, z_1, b_1, W_1
    forward:   W_1, b_1, z_1, a_1, ..., W_L, b_L, z_L
    dual:      u <- u + rho (z_L - a_{L-1} W_L^T - b_L)

with the blocks::

    z_L <- argmin_z R(z; y) + rho/2 ||z - (a_{L-1} W_L^T + b_L - u/rho)||^2     (FISTA)
    b_l <- mean over samples of (t_l - a_{l-1} W_l^T)                          (exact)
    W_l <- W_l - G/theta,  G = rho (a_{l-1} W_l^T + b_l - t_l)^T a_{l-1}       (backtracking on theta)
    a_l <- a_l - g/tau,    g = rho (a_l W_{l+1}^T + b_{l+1} - t_{l+1}) W_{l+1} + rho (a_l - ReLU(z_l))
    z_l <- argmin_z (z - m_l)^2 + (a_l - ReLU(z))^2,  m_l = a_{l-1} W_l^T + b_l  (two branches)

The rho schedule: when the training loss has risen 3 iterations in a row, rho <- min(10 rho,
rho_max) and both backtracking starts (theta, tau) are multiplied by 10. The W and a steps
backtrack at most ``backtrack_max`` times (the authors' loop is unbounded), and keep the
old block when that is not enough.

Memory: z_l, a_l, the a-step's gradient for every sample and u: about N (3 sum of hidden
widths + 2 outputs) floats (784-1000-1000-10 on 60,000 images: 1.4 GB), plus chunks.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch

from amtrain.models.layered import LayeredNet
from amtrain.optim.fullbatch import steps
from amtrain.optim.fullbatch.base import FullBatch, rows
from amtrain.optim.fullbatch.solvers import backtrack, fista_output, output_loss


class LayerSums(NamedTuple):
    """Sums over samples of one layer's input a and target t (see DLADMM.layer_sums)."""
    A: torch.Tensor
    s_a: torch.Tensor
    T: torch.Tensor
    s_t: torch.Tensor
    n: int


class DLADMM(FullBatch):
    diverge_hint = "lower optim.rho_max, or raise optim.backtrack_max"

    def __init__(self, net: LayeredNet, cfg):
        super().__init__(net, cfg)
        self.rho = float(cfg.rho)
        self.theta, self.tau = float(cfg.theta), float(cfg.tau)  # backtracking starts: W steps, a steps
        self.z: List[torch.Tensor] = []  # z_1..z_L
        self.a: List[torch.Tensor] = []  # a_1..a_{L-1}
        self.u: Optional[torch.Tensor] = None
        self._x_gram: Optional[torch.Tensor] = None  # x^T x: the first layer's input never changes
        self.refused = 0  # W and a steps whose backtracking ran out (the old block kept)

    # ------------------------------------------------------------------ one iteration
    def iterate(self, x, y) -> None:
        if not self.z:
            self._init_state(x, y)
        self._rho_schedule()
        L = self.L
        inputs = lambda l: x if l == 0 else self.a[l - 1]  # noqa: E731  a_{l-1}, with a_0 = x
        # backward: z_L, b_L, W_L, a_{L-1}, z_{L-1}, b_{L-1}, W_{L-1}, ..., a_1, z_1, b_1, W_1
        self.update_output_code(inputs(L - 1), y)
        for l in reversed(range(L)):
            if l < L - 1:
                self.update_activations(l)
                self.update_preactivations(l, inputs(l))
            sums = self.layer_sums(l, inputs(l))  # a_{l-1} and t_l stay put through b_l and W_l
            self.update_bias(l, inputs(l), sums)
            self.update_weights(l, inputs(l), sums)
        # forward: W_1, b_1, z_1, a_1, ..., W_L, b_L, z_L
        for l in range(L):
            sums = self.layer_sums(l, inputs(l))
            self.update_weights(l, inputs(l), sums)
            self.update_bias(l, inputs(l), sums)
            if l < L - 1:
                self.update_preactivations(l, inputs(l))
                self.update_activations(l)
        self.update_output_code(inputs(L - 1), y)
        # dual ascent on the output layer's constraint
        for sl in self.chunks(len(y)):
            self.u[sl] += self.rho * (self.z[L - 1][sl] - self.linear(L - 1, inputs(L - 1)[sl]))

    def _rho_schedule(self) -> None:
        """rho <- min(factor * rho, rho_max) and theta, tau <- factor * (theta, tau) after `patience`
        rises in a row of the training loss (measured before each iteration)."""
        k = int(self.cfg.rho_patience)
        h = self.train_loss[-(k + 1):]
        if len(h) == k + 1 and all(later > earlier for earlier, later in zip(h, h[1:])):
            f = float(self.cfg.rho_factor)
            self.rho = min(self.rho * f, float(self.cfg.rho_max))
            self.theta, self.tau = self.theta * f, self.tau * f

    def target(self, l: int, sl: slice) -> torch.Tensor:
        """t_l: z_l, and z_L + u/rho on the output layer (u stays 0 when rho is 0)."""
        t = self.z[l][sl]
        if l == self.L - 1 and self.rho > 0:
            t = t + self.u[sl] / self.rho
        return t

    # ------------------------------------------------------------------ the blocks
    def update_output_code(self, a_prev, y) -> None:
        """z_L <- argmin R(z; y) + rho/2 ||z - (a_{L-1} W_L^T + b_L - u/rho)||^2, by FISTA."""
        L, rho = self.L, self.rho
        center = torch.cat([self.linear(L - 1, a_prev[sl]) for sl in self.chunks(len(y))])
        if rho > 0:
            center -= self.u / rho
        c = self.cfg
        self.z[L - 1] = fista_output(self.net, y, self.targets(y), center, rho, self.z[L - 1], c.fista_step,
                                     c.fista_tol, c.fista_max)

    def layer_sums(self, l: int, a_prev) -> Optional["LayerSums"]:
        """The sums over samples that the b_l and W_l steps need, in one pass: A = a^T a, s_a = sum a,
        T = t_l^T a, s_t = sum t_l (a = a_{l-1}). With them
            b_l = (s_t - W s_a) / N,   G = rho (W A + b s_a^T - T),   ||a G^T||^2 = <G A, G>
        cost no product over samples. A costs N in^2 where the direct passes cost about 4 N in out,
        so a layer far narrower than its input (the output layer) is stepped directly (None)."""
        out, width = self.W[l].shape
        if 4 * out < width:
            return None
        f64 = dict(dtype=torch.float64, device=self.W[l].device)
        A = None if (l == 0 and self._x_gram is not None) else torch.zeros(width, width, **f64)
        T, s_a, s_t = torch.zeros(out, width, **f64), torch.zeros(width, **f64), torch.zeros(out, **f64)
        for sl in self.chunks(len(a_prev)):
            a, t = a_prev[sl], self.target(l, sl)
            if A is not None:
                A += a.T.matmul(a).double()
            T += t.T.matmul(a).double()
            s_a += a.sum(0).double()
            s_t += t.sum(0).double()
        if l == 0:  # the inputs never change: their Gram is computed once
            self._x_gram = A if A is not None else self._x_gram
            A = self._x_gram
        return LayerSums(A, s_a, T, s_t, len(a_prev))

    def update_bias(self, l: int, a_prev, sums: Optional["LayerSums"] = None) -> None:
        """b_l <- the mean over samples of t_l - a_{l-1} W_l^T (exact)."""
        if self.b[l] is None:
            return
        if sums is not None:
            self.b[l] = ((sums.s_t - self.W[l].double() @ sums.s_a) / sums.n).to(self.b[l].dtype)
            return
        total = torch.zeros_like(self.b[l], dtype=torch.float64)
        for sl in self.chunks(len(a_prev)):
            total += (self.target(l, sl) - a_prev[sl] @ self.W[l].T).sum(0).double()
        self.b[l] = (total / len(a_prev)).to(self.b[l].dtype)

    def update_weights(self, l: int, a_prev, sums: Optional["LayerSums"] = None) -> None:
        """One gradient step on rho/2 ||t_l - a_{l-1} W^T - b_l||^2, its length 1/theta by backtracking."""
        W, theta = self.weight_step(l, a_prev, sums)
        if theta is None:
            self.refused += 1
        self.W[l] = W

    def weight_step(self, l: int, a_prev, sums: Optional["LayerSums"] = None):
        """(W_l - G/theta, theta), or (W_l, None) when the gradient is 0 or the backtracking ran out.

        From the layer's sums when given (the same numbers, fewer products), else in passes."""
        if sums is not None:
            W = self.W[l].double()
            G = W @ sums.A - sums.T
            if self.b[l] is not None:
                G += self.b[l].double()[:, None] * sums.s_a[None, :]
            G = self.rho * G
            gg = float((G * G).sum())
            if gg == 0.0:
                return self.W[l], 0.0
            curv = float(((G @ sums.A) * G).sum())  # = ||a G^T||^2
            theta = backtrack(self.rho * curv / gg, self.theta, self.cfg.backtrack_factor, self.cfg.backtrack_max)
            return (self.W[l], None) if theta is None else ((W - G / theta).to(self.W[l].dtype), theta)
        G = torch.zeros_like(self.W[l], dtype=torch.float64)
        for sl in self.chunks(len(a_prev)):
            G += (self.rho * (self.linear(l, a_prev[sl]) - self.target(l, sl))).T.matmul(a_prev[sl]).double()
        G = G.to(self.W[l].dtype)
        gg = float((G * G).sum())
        if gg == 0.0:  # rho = 0, or already optimal
            return self.W[l], 0.0
        # the function is quadratic in W: the bound holds iff theta >= rho ||a G^T||^2 / ||G||^2
        curv = sum(float(((a_prev[sl] @ G.T) ** 2).sum()) for sl in self.chunks(len(a_prev)))
        theta = backtrack(self.rho * curv / gg, self.theta, self.cfg.backtrack_factor, self.cfg.backtrack_max)
        return (self.W[l], None) if theta is None else (self.W[l] - G / theta, theta)

    def update_activations(self, l: int) -> None:
        """One gradient step on rho/2 ||t_{l+1} - a W_{l+1}^T - b_{l+1}||^2 + rho/2 ||a - ReLU(z_l)||^2 in a_l."""
        a, tau = self.activation_step(l)
        if tau is None:
            self.refused += 1
        self.a[l] = a

    def activation_step(self, l: int):
        """(a_l - g/tau, tau), or (a_l, None) when the backtracking ran out (0.0: the gradient is 0)."""
        W_next, a, n = self.W[l + 1], self.a[l], len(self.a[l])
        g = torch.empty_like(a)
        for sl in self.chunks(n):
            r = self.linear(l + 1, a[sl]) - self.target(l + 1, sl)
            g[sl] = self.rho * (r @ W_next + a[sl] - torch.relu(self.z[l][sl]))
        gg = float((g * g).sum())
        if gg == 0.0:
            return a, 0.0
        # quadratic in a with Hessian rho (W^T W + I): the bound holds iff tau >= rho (||g W^T||^2 + ||g||^2) / ||g||^2
        curv = sum(float(((g[sl] @ W_next.T) ** 2).sum()) for sl in self.chunks(n)) + gg
        tau = backtrack(self.rho * curv / gg, self.tau, self.cfg.backtrack_factor, self.cfg.backtrack_max)
        return (a, None) if tau is None else (a - g / tau, tau)

    def update_preactivations(self, l: int, a_prev) -> None:
        """z_l <- argmin (z - m_l)^2 + (a_l - ReLU(z))^2, entry-wise: the better of two branches."""
        for sl in self.chunks(len(a_prev)):
            m = self.linear(l, a_prev[sl])
            self.z[l][sl] = steps.update_relu_preactivations(self.a[l][sl], m, beta=1.0, gamma=1.0)

    # ------------------------------------------------------------------ state
    @torch.no_grad()
    def _init_state(self, x, y) -> None:
        """z_l, a_l from a forward pass of the initial network; z_L = +1 for the label, -1 elsewhere; u = 0."""
        self.z, self.a = self.forward_state(x, len(y))
        self.z[-1] = 2 * self.targets(y) - 1
        self.u = torch.zeros_like(self.z[-1])

    # ------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def augmented_lagrangian(self, x, y) -> float:
        L, rho = self.L, self.rho
        total = float(output_loss(self.net, self.z[L - 1], y).sum())
        for sl in self.chunks(len(y)):
            for l in range(L):
                a_prev = x[sl] if l == 0 else self.a[l - 1][sl]
                r = self.z[l][sl] - self.linear(l, a_prev)
                total += rho / 2 * float((r * r).sum())
                if l == L - 1:
                    total += float((self.u[sl] * r).sum())
                else:
                    total += rho / 2 * float(((self.a[l][sl] - torch.relu(self.z[l][sl])) ** 2).sum())
        return total

    def objective(self, data) -> dict:
        if not self.z:
            return {}
        x, y = rows(data)
        return {"objective": self.augmented_lagrangian(x, y) / len(y), "rho": self.rho,
                "refused": self.refused}  # W and a steps refused by the backtracking cap, since the start
