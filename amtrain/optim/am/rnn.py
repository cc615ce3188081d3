"""AM-Adam for the Elman RNN (docs/rnn.md has the derivation).

Algorithm 2.1 with one code per time step, c_t (the pre-activation), shared weights::

    c0 = encode(x)                                            # forward through time
    c_T <- argmin_c loss(y, W_o relu(tanh(c))) + mu ||c - c0_T||^2                  (eq. 4)
    for t = T-1 .. 1:                                          # top-down, as Alg. 2.2
        c_t <- argmin_c mu ||c*_{t+1} - u_{t+1} - W_h tanh(c)||^2 + mu ||c - c0_t||^2   (eq. 5)
    W_o   <- Adam step on loss(y, W_o relu(tanh(c*_T)))
    W_x, W_h, b <- Adam step on sum_t mu ||c*_t - W_x x_t - b - W_h tanh(c*_{t-1})||^2  (eq. 6, shared)

with u_t = W_x x_t + b. The T code problems are solved in sequence (each needs the code
above it); each is a few batched tensor operations with closed-form gradients. The
weight step sums the per-step local losses over all t in one batched product: given the
codes, no gradient flows through time. Release mode uses the release's reductions
(``(1/mu)`` mean loss on top, mean squared errors below), paper mode the sums.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from amtrain.config import Mode
from amtrain.models.rnn import ElmanRNN
from amtrain.optim.base import Trainer, make_step_lr
from amtrain.optim.am.codes import solve_code
from amtrain.optim.am.mu import MuSchedule


def top_term(net: ElmanRNN, c_T, y, mu: float, mode: Mode):
    """eq. 4's data term for the last step's code."""
    out = net.readout(c_T)
    return net.loss(out, y, reduction="sum") if mode == Mode.paper else net.loss(out, y) / mu


def step_term(net: ElmanRNN, c_t, u_next, c_next, mu: float, mode: Mode):
    """eq. 5's data term: how well code c_t predicts the updated code of the next step."""
    pred = u_next + torch.tanh(c_t) @ net.W_h.T
    return mu * (c_next - pred).pow(2).sum() if mode == Mode.paper else F.mse_loss(pred, c_next)


def step_grad(net: ElmanRNN, u_next, c_next, mu: float, mode: Mode):
    """Closed-form gradient of step_term with respect to c_t."""
    W_h = net.W_h.detach()
    scale = 2.0 * mu if mode == Mode.paper else 2.0 / c_next.numel()

    def grad(c):
        h = torch.tanh(c)
        r = torch.addmm(u_next, h, W_h.T).sub_(c_next).mul_(scale)
        return (r @ W_h).mul_(1 - h * h)

    return grad


class AMAdamRNN(Trainer):
    diverge_hint = "lower optim.lr or optim.codes.lr, or change mu.mu0"

    def __init__(self, net: ElmanRNN, mu: MuSchedule, mode: Mode, cfg):
        super().__init__(net)
        self.mu, self.mode, self.codes_cfg = mu, Mode(mode), cfg.codes
        self.opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.weight_iters = cfg.weight_iters
        self.schedulers = make_step_lr(self.opt, cfg.schedule)

    def step(self, x, y):
        net, mu = self.net, self.mu.value
        with torch.no_grad():
            u = net.drive(x)
            c0 = net.encode(x)  # Alg. 2.2 encodeInput, through time
            output = net.readout(c0[:, -1])
            loss = net.loss(output, y)
        c = self.update_codes(u, c0, y, mu)
        self.update_weights(x, c, y, mu)
        self.mu.after_batch()
        return loss, output

    def update_codes(self, u, c0, y, mu):
        cc, net, T = self.codes_cfg, self.net, c0.shape[1]
        solve = dict(mu=mu, mode=self.mode, lr=cc.lr, iters=cc.iters, momentum=cc.momentum, nesterov=cc.nesterov)
        c = c0.clone()
        c[:, T - 1] = solve_code(c0[:, T - 1], lambda cT: top_term(net, cT, y, mu, self.mode), **solve)  # eq. 4
        for t in reversed(range(T - 1)):  # eq. 5, top-down through time
            u_next, c_next = u[:, t + 1], c[:, t + 1]
            c[:, t] = solve_code(c0[:, t], lambda ct: step_term(net, ct, u_next, c_next, mu, self.mode), **solve,
                                 data_grad=step_grad(net, u_next, c_next, mu, self.mode))
        return c

    def update_weights(self, x, c, y, mu):
        net = self.net
        h_prev = torch.cat([c.new_zeros(c.shape[0], 1, c.shape[2]), torch.tanh(c[:, :-1])], dim=1)  # h_0 = 0
        for _ in range(self.weight_iters):
            self.opt.zero_grad(set_to_none=True)
            out_loss = net.loss(net.readout(c[:, -1]), y)  # Alg. 2.3 line 1
            pred = net.drive(x) + h_prev @ net.W_h.T  # every step's prediction of its code, at once
            if self.mode == Mode.paper:  # eq. 6 summed over steps, mean over samples
                local = mu * (c - pred).pow(2).sum(dim=(1, 2)).mean()
            else:
                local = F.mse_loss(pred, c, reduction="sum") / (c.shape[0] * c.shape[2])
            (out_loss + local).backward()
            self.opt.step()
