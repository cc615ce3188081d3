"""Backprop baselines: SGD and Adam on the loss of the whole network (the chain rule)."""
from __future__ import annotations

import torch

from amtrain.optim.base import Trainer, make_step_lr


class Backprop(Trainer):
    def __init__(self, net, opt: torch.optim.Optimizer, schedule):
        super().__init__(net)
        self.opt = opt
        self.schedulers = make_step_lr(opt, schedule)

    def step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        output = self.net(x)
        loss = self.net.loss(output, y)
        loss.backward()
        self.opt.step()
        return loss.detach(), output.detach()


def sgd(net, cfg) -> Backprop:
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    return Backprop(net, opt, cfg.schedule)


def adam(net, cfg) -> Backprop:
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return Backprop(net, opt, cfg.schedule)
