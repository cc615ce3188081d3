"""Backprop baselines: SGD and Adam on the loss of the whole network (the chain rule)."""
from __future__ import annotations

import torch

from amtrain.optim.base import Trainer, make_step_lr


class Backprop(Trainer):
    diverge_hint = "lower optim.lr, or clip the gradient with optim.grad_clip"

    def __init__(self, net, opt: torch.optim.Optimizer, schedule, grad_clip: float = 0.0):
        super().__init__(net)
        self.opt, self.grad_clip = opt, grad_clip
        self.schedulers = make_step_lr(opt, schedule)

    def step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        output = self.net(x)
        loss = self.net.loss(output, y)
        loss.backward()
        if self.grad_clip > 0:  # no host sync: the rescaling factor stays on the device
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.opt.step()
        return loss.detach(), output.detach()


class SGD(Backprop):
    """``optim=sgd``: torch.optim.SGD (momentum, Nesterov, weight decay as configured)."""

    @classmethod
    def build(cls, net, cfg, mu_cfg=None, mode=None) -> "SGD":
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        return cls(net, opt, cfg.schedule, cfg.grad_clip)


class Adam(Backprop):
    """``optim=adam``: torch.optim.Adam."""

    @classmethod
    def build(cls, net, cfg, mu_cfg=None, mode=None) -> "Adam":
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        return cls(net, opt, cfg.schedule, cfg.grad_clip)
