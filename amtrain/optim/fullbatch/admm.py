"""Taylor et al. (2016) ADMM, full batch: one iteration per epoch (see docs/baselines.md).

For l = 1..L-1 (hidden layers), then the output layer L::

    W_l <- z_l a_{l-1}^+                                    (ridge least squares)
    a_l <- (beta W_{l+1}^T W_{l+1} + gamma I)^{-1} (beta W_{l+1}^T z_{l+1} + gamma h(z_l))
    z_l <- argmin_z gamma ||a_l - h(z)||^2 + beta ||z - W_l a_{l-1}||^2
    W_L <- z_L a_{L-1}^+
    z_L <- argmin_z loss(z, y) + <z, lambda> + beta ||z - W_L a_{L-1}||^2
    lambda <- lambda + beta (z_L - W_L a_{L-1})            (skipped during warm start)

z_l and a_l are kept for every training sample; every step runs in chunks of
``chunk_rows`` rows, reading the inputs chunk by chunk too, so HIGGS-sized data streams
from its HDF5 file. State larger than ``state_memory_gb`` lives in memory-mapped files
(10.5M HIGGS rows x 300 units: 25 GB). No BatchNorm (ADMM cannot express it). The
network's weights are copied in after each iteration, so evaluation is the plain
forward pass.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from amtrain.errors import ConfigError
from amtrain.models.layered import LayeredNet
from amtrain.optim.fullbatch import steps
from amtrain.optim.fullbatch.base import FullBatch, rows


class ADMM(FullBatch):
    diverge_hint = "raise optim.ridge, or change optim.beta and optim.gamma"
    streams = True  # works on streamed (HIGGS) data: inputs are read chunk by chunk

    def __init__(self, net: LayeredNet, cfg):
        super().__init__(net, cfg)
        if cfg.output not in ("hinge", "ce"):
            raise ConfigError(f"optim.output='{cfg.output}' is unknown: use hinge (Taylor's) or ce")
        self.beta, self.gamma = float(cfg.beta), float(cfg.gamma)
        self.z: List[torch.Tensor] = []  # z_1..z_L (the last one is the output layer's)
        self.a: List[torch.Tensor] = []  # a_1..a_{L-1}
        self.lam: Optional[torch.Tensor] = None
        self._x_gram_inv = None

    # --------------------------------------------------------------- weights as matrices [W | b]
    def _layers(self):
        return self.layers

    @staticmethod
    def _get(lin) -> torch.Tensor:
        return torch.cat([lin.weight, lin.bias[:, None]], 1) if lin.bias is not None else lin.weight

    @staticmethod
    @torch.no_grad()
    def _set(lin, W: torch.Tensor) -> None:
        if lin.bias is not None:
            lin.weight.copy_(W[:, :-1])
            lin.bias.copy_(W[:, -1])
        else:
            lin.weight.copy_(W)

    def _chunks(self, n: int):
        return self.chunks(n)

    @torch.no_grad()
    def _init_state(self, x) -> None:
        """z, a from a forward pass of the initial network (chunk by chunk); lambda = 0."""
        layers = self._layers()
        n, device = len(x), next(self.net.parameters()).device
        widths = [lin.out_features for lin in layers]
        need = 4 * n * (2 * sum(widths[:-1]) + 2 * widths[-1])
        disk = need > self.cfg.state_memory_gb * 2**30
        dtype = next(self.net.parameters()).dtype
        self.z = [self._array(f"z{l + 1}", n, w, device, disk, dtype) for l, w in enumerate(widths)]
        self.a = [self._array(f"a{l + 1}", n, w, device, disk, dtype) for l, w in enumerate(widths[:-1])]
        self.lam = self._array("lambda", n, widths[-1], device, disk, dtype)
        for sl in self._chunks(n):
            a = x[sl]
            for l, lin in enumerate(layers):
                z = lin(a)
                self.z[l][sl] = z
                if l < len(layers) - 1:
                    a = torch.relu(z)
                    self.a[l][sl] = a

    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        if self.net.n_outputs == 1:
            return y.to(self.z[-1].dtype)[:, None]
        return torch.nn.functional.one_hot(y, self.net.n_outputs).to(self.z[-1].dtype)

    @torch.no_grad()
    def fit_weights(self, a_prev: torch.Tensor, z: torch.Tensor, bias: bool, cache_input: bool = False) -> torch.Tensor:
        """W = z a_prev^+ with a ridge, from Gram sums accumulated in chunks."""
        k = a_prev.shape[1] + int(bias)
        f64 = dict(dtype=torch.float64, device=a_prev.device)  # sums over many samples: accumulate in float64
        gram, cross = torch.zeros(k, k, **f64), torch.zeros(z.shape[1], k, **f64)
        need_gram = not (cache_input and self._x_gram_inv is not None)
        for sl in self._chunks(len(z)):
            aa = steps.augment(a_prev[sl], bias).double()
            cross += z[sl].double().T @ aa
            if need_gram:
                gram += aa.T @ aa
        if cache_input:  # layer 1: a_0 = x never changes, so invert its Gram once
            if self._x_gram_inv is None:
                self._x_gram_inv = steps.ridge_inverse(gram, self.cfg.ridge)
            return (cross @ self._x_gram_inv).to(z.dtype)
        return (cross @ steps.ridge_inverse(gram, self.cfg.ridge)).to(z.dtype)

    @torch.no_grad()
    def epoch(self, data, batch_size: int, generator: torch.Generator):
        x, y = rows(data)
        if not self.z:
            self._init_state(x)
        layers = self._layers()
        L = len(layers)
        beta, gamma = self.beta, self.gamma
        W = [self._get(lin) for lin in layers]
        for l in range(L - 1):  # hidden layers
            lin, a_prev = layers[l], (x if l == 0 else self.a[l - 1])
            bias = lin.bias is not None
            W[l] = self.fit_weights(a_prev, self.z[l], bias, cache_input=(l == 0))
            nxt = layers[l + 1]
            W_next = W[l + 1][:, :-1] if nxt.bias is not None else W[l + 1]
            b_next = W[l + 1][:, -1] if nxt.bias is not None else None
            M = steps.activation_matrix(W_next, beta, gamma)
            for sl in self._chunks(len(x)):
                a_l = steps.update_activations(self.z[l + 1][sl], W_next, b_next, torch.relu(self.z[l][sl]),
                                               M, beta, gamma)
                self.a[l][sl] = a_l
                m = steps.augment(a_prev[sl], bias) @ W[l].T
                self.z[l][sl] = steps.update_relu_preactivations(a_l, m, beta, gamma)
        # output layer
        head = layers[-1]
        bias = head.bias is not None
        W[-1] = self.fit_weights(self.a[-1], self.z[-1], bias)
        warm = self.iteration < self.cfg.warm_start
        targets = self._targets(y)
        for sl in self._chunks(len(x)):
            m = steps.augment(self.a[-1][sl], bias) @ W[-1].T
            lam = self.lam[sl]
            if self.cfg.output == "hinge":
                z = steps.update_output_hinge(m, targets[sl], lam, beta)
            elif self.net.n_outputs == 1:
                z = _logistic_prox(m, targets[sl], lam, beta, self.cfg.newton_steps)
            else:
                z = steps.update_output_ce(m, y[sl], lam, beta, self.cfg.newton_steps)
            self.z[-1][sl] = z
            if not warm:
                self.lam[sl] = lam + beta * (z - m)
        for lin, Wl in zip(layers, W):
            self._set(lin, Wl)
        self.iteration += 1

    @torch.no_grad()
    def augmented_lagrangian(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The objective ADMM works on (Taylor et al. eq. 3 with lambda), for in-memory state (tests, diagnostics)."""
        layers = self._layers()
        total = 0.0
        a_prev = x
        for l, lin in enumerate(layers[:-1]):
            m = lin(a_prev)
            total += self.beta * float(((self.z[l] - m) ** 2).sum()) + self.gamma * float(
                ((self.a[l] - torch.relu(self.z[l])) ** 2).sum())
            a_prev = self.a[l]
        m = layers[-1](a_prev)
        z, targets = self.z[-1], self._targets(y)
        if self.cfg.output == "hinge":
            loss = float(steps.hinge(z, targets).sum())
        elif self.net.n_outputs == 1:
            loss = float(torch.nn.functional.binary_cross_entropy_with_logits(z, targets, reduction="sum"))
        else:
            loss = float(torch.nn.functional.cross_entropy(z, y, reduction="sum"))
        return loss + float((z * self.lam).sum()) + self.beta * float(((z - m) ** 2).sum())


def _logistic_prox(m, y01, lam, beta, newton_steps):
    """argmin_z softplus(z) - y z + lambda z + beta (z - m)^2 (single logit), by Newton steps."""
    z = m.clone()
    for _ in range(newton_steps):
        p = torch.sigmoid(z)
        z = z - (p - y01 + lam + 2 * beta * (z - m)) / (p * (1 - p) + 2 * beta)
    return z
