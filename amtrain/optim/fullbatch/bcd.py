"""BCD: Zeng, Lau, Lin, Yao, "Global Convergence of Block Coordinate Descent in Deep
Learning" (ICML 2019). Full batch; every block in closed form, on the square loss.

Variables for every training sample: pre-activations U_l and activations V_l, l = 1..L
(V_0 = x; the output layer L is linear, V_L its coupled copy of U_L). With one-hot Y::

    Phi = 1/2 ||V_L - Y||^2 + gamma/2 ||V_L - U_L||^2 + sum_{l<L} gamma/2 ||V_l - ReLU(U_l)||^2
          + sum_l rho/2 ||U_l - V_{l-1} W_l^T - b_l||^2

One iteration runs from the output down. Each block minimises Phi in that block, plus a
proximal term alpha/2 ||X - X_old||^2 where the authors' code has one (V_L, U_l, W_l, b_l)::

    V_L <- (Y + gamma U_L + alpha V_L) / (1 + gamma + alpha)
    U_L <- (gamma V_L + rho (V_{L-1} W_L^T + b_L)) / (gamma + rho)
    W_L, b_L <- proximal least squares on (V_{L-1}, U_L)                    (prox_least_squares)
    for l = L-1 .. 1:
        V_l <- (rho (U_{l+1} - b_{l+1}) W_{l+1} + gamma ReLU(U_l)) (rho W_{l+1}^T W_{l+1} + gamma I)^{-1}
        U_l <- argmin_u gamma/2 (V_l - ReLU(u))^2 + (rho + alpha)/2 (u - m_l)^2     (two branches)
               with m_l = (rho (V_{l-1} W_l^T + b_l) + alpha U_l) / (rho + alpha)
        W_l, b_l <- proximal least squares on (V_{l-1}, U_l)

Each update is an exact minimiser, so Phi never rises (a test checks it). W_l is solved
with b_l fixed, then b_l with the new W_l: two exact block steps. The authors' notebook
computes b_l from the old W_l (both in parallel), which need not lower Phi.

The network's W_l, b_l are the model's; prediction is the usual forward pass. Memory:
U_l and V_l for every sample, 2 N (sum of widths) floats (784-1500-1500-1500-10 on
60,000 MNIST images: 2.2 GB), plus chunk-sized temporaries.
"""
from __future__ import annotations

from typing import List

import torch

from amtrain.models.layered import LayeredNet
from amtrain.optim.fullbatch import steps
from amtrain.optim.fullbatch.base import FullBatch


class BCD(FullBatch):
    diverge_hint = "raise optim.alpha (the proximal weight), or change optim.rho and optim.gamma"

    def __init__(self, net: LayeredNet, cfg):
        super().__init__(net, cfg)
        self.gamma, self.rho, self.alpha = float(cfg.gamma), float(cfg.rho), float(cfg.alpha)
        self.U: List[torch.Tensor] = []  # U_1..U_L
        self.V: List[torch.Tensor] = []  # V_1..V_L
        self._x_gram = None  # V_0^T V_0 = x^T x never changes

    # ------------------------------------------------------------------ one iteration
    def iterate(self, x, y) -> None:
        if not self.U:
            self._forward_state(x)
        Y = self.targets(y)
        g, r, a = self.gamma, self.rho, self.alpha
        U, V, L = self.U, self.V, self.L
        inputs = lambda l: x if l == 0 else V[l - 1]  # noqa: E731  V_{l-1}, with V_0 = x
        # the output layer
        V[L - 1] = (Y + g * U[L - 1] + a * V[L - 1]) / (1 + g + a)
        for sl in self.chunks(len(y)):
            U[L - 1][sl] = (g * V[L - 1][sl] + r * self.linear(L - 1, inputs(L - 1)[sl])) / (g + r)
        self.fit_layer(L - 1, inputs(L - 1))
        # the hidden layers, top down
        for l in reversed(range(L - 1)):
            W_next, b_next = self.W[l + 1], self.b[l + 1]
            M = steps.activation_matrix(W_next, r, g)  # (rho W^T W + gamma I)^{-1}
            for sl in self.chunks(len(y)):
                V[l][sl] = steps.update_activations(U[l + 1][sl], W_next, b_next, torch.relu(U[l][sl]), M, r, g)
            for sl in self.chunks(len(y)):
                m = (r * self.linear(l, inputs(l)[sl]) + a * U[l][sl]) / (r + a)
                U[l][sl] = steps.update_relu_preactivations(V[l][sl], m, beta=(r + a) / 2, gamma=g / 2)
            self.fit_layer(l, inputs(l))

    def fit_layer(self, l: int, V_prev) -> None:
        """W_l <- proximal least squares with b_l fixed, then b_l with the new W_l."""
        n = len(self.U[l])
        f64 = dict(dtype=torch.float64, device=self.W[l].device)
        gram = None if (l == 0 and self._x_gram is not None) else torch.zeros(V_prev.shape[1], V_prev.shape[1], **f64)
        cross = torch.zeros(self.W[l].shape, **f64)
        sum_u = torch.zeros(self.W[l].shape[0], **f64)
        sum_v = torch.zeros(V_prev.shape[1], **f64)
        b = self.b[l]
        for sl in self.chunks(n):
            v, u = V_prev[sl], self.U[l][sl]
            cross += ((u - b) if b is not None else u).T.matmul(v).double()
            if gram is not None:
                gram += v.T.matmul(v).double()
            sum_u += u.sum(0).double()
            sum_v += v.sum(0).double()
        if l == 0:  # the inputs are fixed: their Gram is computed once
            self._x_gram = gram if gram is not None else self._x_gram
            gram = self._x_gram
        self.W[l] = steps.prox_least_squares(gram, cross, self.W[l], self.alpha, self.rho)
        if b is not None:
            residual = sum_u - self.W[l].double() @ sum_v  # sum_i (U_i - W V_i), no product over samples
            self.b[l] = steps.prox_bias(residual, b, n, self.alpha, self.rho)

    @torch.no_grad()
    def _forward_state(self, x) -> None:
        """U_l, V_l from a forward pass of the initial network; V_L = U_L."""
        self.U, self.V = self.forward_state(x, len(x))
        self.V.append(self.U[-1].clone())

    # ------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def phi(self, x, y) -> float:
        """Phi (the module doc) for the current state, summed over the training samples."""
        Y = self.targets(y)
        g, r, L = self.gamma, self.rho, self.L
        total = 0.5 * float(((self.V[L - 1] - Y) ** 2).sum()) + g / 2 * float(((self.V[L - 1] - self.U[L - 1]) ** 2).sum())
        for sl in self.chunks(len(y)):
            for l in range(L):
                v_prev = x[sl] if l == 0 else self.V[l - 1][sl]
                total += r / 2 * float(((self.U[l][sl] - self.linear(l, v_prev)) ** 2).sum())
                if l < L - 1:
                    total += g / 2 * float(((self.V[l][sl] - torch.relu(self.U[l][sl])) ** 2).sum())
        return total

    def objective(self, data) -> dict:
        from amtrain.optim.fullbatch.base import rows

        if not self.U:
            return {}
        x, y = rows(data)
        return {"objective": self.phi(x, y) / len(y)}
