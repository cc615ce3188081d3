"""Online alternating minimization with auxiliary variables (Algorithm 2.1).

For each mini-batch (x, y)::

    C <- encodeInput(x, W)             # forward pass, keep codes c_1..c_L       (Alg. 2.2)
    C <- updateCodes(C, y, W, mu)      # top code (eq. 4), then l = L-1..1 (eq. 5) (Alg. 2.2)
    W <- updateWeights(W, x, y, C)     # each layer on its own, given the codes   (Alg. 2.3)

``AMAdam`` fits every hidden layer by Adam on its local problem (eq. 6); ``AMMem``
keeps co-activation memories A, B and fits W by block-coordinate descent (eq. 7).
Both fit the output layer W_{L+1} by a gradient step on the loss (Alg. 2.3, line 1).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F

from amtrain.config import Mode
from amtrain.errors import ConfigError
from amtrain.models import LayeredNet, Sign
from amtrain.optim.am import memory
from amtrain.optim.base import Trainer, fused, make_step_lr
from amtrain.optim.am.linear_bn import LinearBN
from amtrain.optim.am.codes import (accept_if_better, hidden_data_grad, hidden_data_term, solve_code, top_data_grad,
                                 top_data_term)
from amtrain.optim.am.mu import MuSchedule, build_mu


@torch.no_grad()
def objective(net: LayeredNet, x: torch.Tensor, y: torch.Tensor, c: List[torch.Tensor], mu: float) -> float:
    """eq. 3: sum_i loss(y_i, f_{L+1}(sigma_L(c_L))) + mu sum_i sum_l ||c_l - f_l(W_l, sigma_{l-1}(c_{l-1}))||^2."""
    a = net.activations(x, c)
    total = net.loss(net.head(a[-1]), y, reduction="sum").sum()  # (and over the copies of a seed axis)
    for l, block in enumerate(net.blocks):
        total = total + mu * (c[l] - block.f(a[l])).pow(2).sum()
    return float(total)


class Encoding(NamedTuple):
    """What encodeInput computed on the fast path, for reuse before the weights change:
    the codes c^0, every layer's linear part z_l = W_l a_{l-1} + b_l (None where f_l is not
    Linear [+ BatchNorm]), the head's output as z_{L+1}, the input a_0, and the state of
    the weights that made them (:meth:`OnlineAM._weight_versions`)."""
    c: List[torch.Tensor]
    z: List[Optional[torch.Tensor]]
    a0: torch.Tensor
    versions: tuple


class OnlineAM(Trainer):
    """Algorithm 2.1 on mini-batches; subclasses supply ``update_weights``.

    ``fast`` (optim.fast): closed-form gradients for the code and weight sub-problems of
    Linear [+ BatchNorm] layers, and reuse of the encoding's products (see :meth:`encode`);
    false runs everything through autograd, the reference the fast path is tested against.
    """

    def __init__(self, net: LayeredNet, mu: MuSchedule, mode: Mode, codes_cfg, fast: bool = True):
        super().__init__(net)
        self.mu = mu
        self.mode = Mode(mode)
        self.codes_cfg = codes_cfg
        # K steps of Nesterov SGD per code (Alg. 2.2); plain values, read once (not per batch)
        self.code_solver = dict(lr=float(codes_cfg.lr), iters=int(codes_cfg.iters),
                                momentum=float(codes_cfg.momentum), nesterov=bool(codes_cfg.nesterov))
        self.fast = bool(fast)
        # f_l and the head in closed form, where they are Linear [+ BatchNorm1d]
        self.f = [LinearBN.of(b.f) if self.fast else None for b in net.blocks]
        self.f_head = LinearBN.of(net.head) if self.fast else None
        self.encoding: Optional[Encoding] = None
        self.optimizer_steps = 0

    def step(self, x: torch.Tensor, y: torch.Tensor):
        mu = self.mu.value
        c0 = self.encode(x)
        with torch.no_grad():
            output = self.encoding.z[-1] if self.fast else self.net.head(self.net.blocks[-1].sigma(c0[-1]))
            loss = self.net.loss(output, y)
        c = self.update_codes(c0, y, mu)
        a = self.net.activations(x, c)  # a_0 = x, a_l = sigma_l(c*_l), all detached
        if self.fast:
            a[0] = self.encoding.a0  # the encoding's own input tensor: layer 1's step reuses z_1 on it
        self.update_weights(a, c, y, mu)
        self.mu.after_batch()
        return loss, output

    # ------------------------------------------------------------------ Algorithm 2.2
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """encodeInput: c_l = f_l(W_l, sigma_{l-1}(c_{l-1})), c_0 = x.

        The fast path also keeps each linear part z_l = W_l a_{l-1} + b_l and the head's
        output (``self.encoding``). No weight changes before updateWeights, so the first
        step of every code solve (which starts at c^0) and layer 1's weight step (whose
        input a_0 = x is fixed) reuse them instead of multiplying again.
        """
        if not self.fast:
            return self.net.encode(x)
        a0 = a = self.net.inputs(x)
        c: List[torch.Tensor] = []
        z: List[Optional[torch.Tensor]] = []
        for block, f in zip(self.net.blocks, self.f):
            z.append(None if f is None else f.linear(a))
            c.append(block.f(a) if f is None else f.forward(a, z=z[-1])[0])
            a = block.sigma(c[-1])
        z.append(self.net.head(a))
        self.encoding = Encoding(c, z, a0, self._weight_versions())
        return c

    def _weight_versions(self) -> tuple:
        """The optimiser steps taken so far and every weight's version counter. A fused
        optimiser (optim.base.fused) writes the weights without bumping their counters, so
        its steps are counted here (:meth:`optimizer_step`); any other in-place change bumps them."""
        return (self.optimizer_steps,) + tuple(p._version for p in self.net.parameters())

    def optimizer_step(self) -> None:
        """``self.opt.step()``, counted, so that the encoding is known stale after it."""
        self.opt.step()
        self.optimizer_steps += 1

    def _encoding_valid(self) -> bool:
        """True while no weight has changed since the encoding."""
        return self.encoding is not None and self.encoding.versions == self._weight_versions()

    def _encoded(self, c0: List[torch.Tensor]) -> List[Optional[torch.Tensor]]:
        """The encoding's z_2..z_{L+1} when c0 is its codes (else Nones: compute afresh)."""
        valid = self._encoding_valid() and self.encoding.c is c0
        return self.encoding.z[1:] if valid else [None] * self.net.L

    def update_codes(self, c0: List[torch.Tensor], y: torch.Tensor, mu: float) -> List[torch.Tensor]:
        """updateCodes: solve eq. 4 for c_L, then eq. 5 for l = L-1..1, top-down."""
        net, cc, L, fast = self.net, self.codes_cfg, self.net.L, self.fast
        solve = dict(mu=mu, mode=self.mode, **self.code_solver)
        z0 = self._encoded(c0)  # z0[l] = f_{l+2}'s linear part at c^0_{l+1} (the head's for l = L-1)
        c = list(c0)
        # eq. 4: the top code trades the loss against staying near its forward value
        c[L - 1] = solve_code(c0[L - 1], lambda c_L: top_data_term(net, c_L, y, mu, self.mode), **solve,
                              data_grad=top_data_grad(net, y, mu, self.mode, z0[L - 1]) if fast else None)
        # eq. 5: each lower code must predict the updated code above it, c*_{l+1}
        for l in reversed(range(L - 1)):
            c_next = c[l + 1]
            c[l] = solve_code(c0[l], lambda c_l: hidden_data_term(net, l, c_l, c_next, mu, self.mode), **solve,
                              data_grad=hidden_data_grad(net, l, c_next, mu, self.mode, z0[l]) if fast else None)
            if isinstance(net.blocks[l].sigma, Sign) and getattr(cc, "sign_step", "ste") == "accept":
                c[l] = accept_if_better(net, l, c[l], c0[l], c_next, mu, self.mode)
        return c

    # ------------------------------------------------------------------ Algorithm 2.3
    def update_weights(self, a: List[torch.Tensor], c: List[torch.Tensor], y: torch.Tensor, mu: float) -> None:
        raise NotImplementedError

    def output_loss(self, a_L: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Alg. 2.3 line 1: the loss of W_{L+1} on the top activation sigma_L(c*_L)."""
        return self.net.loss(self.net.head(a_L), y)

    def local_loss(self, l: int, a_prev: torch.Tensor, c_l: torch.Tensor, mu: float) -> torch.Tensor:
        """eq. 6 for layer l on this batch: mu ||c*_l - f_l(W_l, a_{l-1})||^2."""
        prediction = self.net.blocks[l].f(a_prev)
        if self.mode == Mode.paper:
            return mu * self.net.sum_per_sample((c_l - prediction).pow(2)).mean(dim=-1)
        if self.net.seeds is None:
            return F.mse_loss(prediction, c_l)
        return F.mse_loss(prediction, c_l, reduction="sum") / self.net.numel_per_copy(c_l)  # each copy's mean

    # Closed forms of the two gradients above: they set .grad and return True, or return
    # False when the layer is not Linear [+ BatchNorm] (or optim.fast=false).
    def output_grads(self, a_L: torch.Tensor, y: torch.Tensor) -> bool:
        """d/dW_{L+1} of output_loss (the mean loss over the batch)."""
        f = self.f_head
        if f is None:
            return False
        out, saved = f.forward(a_L)
        d_out = self.net.loss_grad(out, self.net.loss_target(y, out.dtype)).mul_(1.0 / self.net.n_samples(y))
        f.set_param_grads(d_out, saved, a_L)
        return True

    def local_grads(self, l: int, a_prev: torch.Tensor, c_l: torch.Tensor, mu: float) -> bool:
        """d/dW_l of local_loss (eq. 6)."""
        f = self.f[l]
        if f is None:
            return False
        # layer 1 on the encoding's own input, weights unchanged since: reuse z_1
        reuse = l == 0 and self._encoding_valid() and a_prev is self.encoding.a0
        pred, saved = f.forward(a_prev, z=self.encoding.z[0] if reuse else None)
        # d/dpred: 2 mu (pred - c*) / N (paper: per-sample sums, batch mean); 2 (pred - c*) / numel (mse)
        n = self.net.n_samples(c_l)
        scale = 2.0 * mu / n if self.mode == Mode.paper else 2.0 / self.net.numel_per_copy(c_l)
        f.set_param_grads((pred - c_l).mul_(scale), saved, a_prev)
        return True


class AMAdam(OnlineAM):
    """AM-Adam: Adam on each layer's local problem (eq. 6) and on the output loss."""

    diverge_hint = "lower optim.lr or optim.codes.lr, or change mu.mu0"
    seed_axis = True  # on the MLPs, LeNet-5, and the Elman RNN through AMAdamRNN (amtrain.seeds.unsupported)

    @classmethod
    def build(cls, net, cfg, mu_cfg, mode: Mode) -> Trainer:
        """``optim=am_adam``: on a layered net, and on the Elman RNN through its own code pass."""
        from amtrain.models.rnn import ElmanRNN
        from amtrain.optim.am.rnn import AMAdamRNN

        if isinstance(net, ElmanRNN):
            return AMAdamRNN(net, build_mu(mu_cfg), mode, cfg)
        if cfg.get("compile", False):
            raise ConfigError("optim.compile=true compiles the RNN's code pass only: use it with model=rnn, "
                              "or drop it")
        return cls(net, build_mu(mu_cfg), mode, cfg)

    def __init__(self, net: LayeredNet, mu: MuSchedule, mode: Mode, cfg):
        super().__init__(net, mu, mode, cfg.codes, cfg.fast)
        # Adam is element-wise, so one Adam over all parameters is L+1 independent Adams.
        self.opt = fused(torch.optim.Adam, net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.weight_iters = cfg.weight_iters
        self.schedulers = make_step_lr(self.opt, cfg.schedule)

    def update_weights(self, a, c, y, mu):
        L = self.net.L
        for _ in range(self.weight_iters):
            self.opt.zero_grad(set_to_none=True)
            # Every term sees only its own layer's weights (a and c are detached): L+1
            # independent problems. Closed-form gradients where the layer allows, and one
            # backward through the sum of the others.
            rest = [self.local_loss(l, a[l], c[l], mu) for l in range(L)
                    if not self.local_grads(l, a[l], c[l], mu)]  # eq. 6
            if not self.output_grads(a[L], y):
                rest.append(self.output_loss(a[L], y))  # Alg. 2.3 line 1
            if rest:
                sum(rest).sum().backward()  # (.sum(): the copies of a seed axis)
            self.optimizer_step()


class AMMem(OnlineAM):
    """AM-mem: co-activation memories A_l, B_l and block-coordinate descent on eq. 7."""

    diverge_hint = "lower optim.lr or optim.codes.lr, or raise optim.ridge"
    seed_axis = True

    @classmethod
    def build(cls, net, cfg, mu_cfg, mode: Mode) -> "AMMem":
        return cls(net, build_mu(mu_cfg), mode, cfg)

    def __init__(self, net: LayeredNet, mu: MuSchedule, mode: Mode, cfg):
        for l, block in enumerate(net.blocks):
            if not block.is_linear_in_weights():
                kind = type(block.linear()).__name__
                raise ConfigError(
                    f"am_mem needs every coded layer to be Linear without BatchNorm (c = W a + b, eq. 7); "
                    f"layer {l + 1} is {kind}{' with BatchNorm' if kind == 'Linear' else ''}: "
                    "set model.batchnorm=false, or use optim=am_adam for convolutional models")
        if cfg.solver not in ("bcd", "exact"):
            raise ConfigError(f"optim.solver='{cfg.solver}' is unknown: use bcd or exact")
        super().__init__(net, mu, mode, cfg.codes, cfg.fast)
        self.cfg = cfg
        self.solver, self.bcd_sweeps, self.ridge = str(cfg.solver), int(cfg.bcd_sweeps), float(cfg.ridge)
        self.reset_memories()
        self.opt = fused(torch.optim.Adam, net.head.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.schedulers = make_step_lr(self.opt, cfg.schedule)

    def reset_memories(self) -> None:
        """A_0 = 0, B_0 = 0 for every hidden layer (Alg. 2.1's initial memories)."""
        p = next(self.net.parameters())
        self.memories = [
            memory.CoActivationMemory(b.linear().in_features, b.linear().out_features,
                                      bias=b.linear().bias is not None, forget=self.cfg.forget,
                                      device=p.device, dtype=p.dtype, seeds=self.net.seeds)
            for b in self.net.blocks
        ]

    def update_weights(self, a, c, y, mu):
        # Output layer: a gradient step on the loss (Alg. 2.3, line 1)
        self.output_step(a[self.net.L], y)
        # Hidden layers, each independent of the others given the codes
        self.update_memories(a, c)  # updateMemory: A += a a^T, B += c a^T
        self.fit_hidden_layers()  # W_l = argmin Tr(W^T W A) - 2 Tr(W^T B)  (eq. 7)

    def output_step(self, a_L: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if not self.output_grads(a_L, y):
            self.output_loss(a_L, y).backward()
        self.optimizer_step()

    def update_memories(self, a, c) -> None:
        for l, mem in enumerate(self.memories):
            mem.update(a[l], c[l])

    def fit_hidden_layers(self) -> None:
        for block, mem in zip(self.net.blocks, self.memories):
            self.fit_layer(block.linear(), mem)

    @torch.no_grad()
    def fit_layer(self, lin: torch.nn.Linear, mem: memory.CoActivationMemory) -> None:
        W = torch.cat([lin.weight, lin.bias[..., None]], dim=-1) if lin.bias is not None else lin.weight.clone()
        if self.solver == "exact":
            W = memory.exact(mem.A, mem.B, self.ridge)
        else:
            W = memory.bcd(W, mem.A_low, mem.B, self.bcd_sweeps, self.ridge)
        if lin.bias is not None:
            lin.weight.copy_(W[..., :-1])
            lin.bias.copy_(W[..., -1])
        else:
            lin.weight.copy_(W)
