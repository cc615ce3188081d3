"""Backprop baselines: SGD and Adam on the loss of the whole network (the chain rule)."""
from __future__ import annotations

import torch

from amtrain.optim.base import Trainer, fused, make_step_lr


def clip_grad_norm(net, max_norm: float) -> None:
    """Scale the gradient to norm at most ``max_norm`` (torch.nn.utils.clip_grad_norm_); with a seed
    axis, each copy by its own norm, as its single run would (never one norm across the seeds)."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if getattr(net, "seeds", None) is None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
        return
    norm = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (S,)
    scale = (max_norm / (norm + 1e-6)).clamp_(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


class Backprop(Trainer):
    diverge_hint = "lower optim.lr, or clip the gradient with optim.grad_clip"
    seed_axis = True

    def __init__(self, net, opt: torch.optim.Optimizer, schedule, grad_clip: float = 0.0):
        super().__init__(net)
        self.opt, self.grad_clip = opt, grad_clip
        self.schedulers = make_step_lr(opt, schedule)

    def step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        output = self.net(x)
        loss = self.net.loss(output, y)
        loss.sum().backward()  # (.sum(): the copies of a seed axis, each with its own loss)
        if self.grad_clip > 0:  # no host sync: the rescaling factor stays on the device
            clip_grad_norm(self.net, self.grad_clip)
        self.opt.step()
        return loss.detach(), output.detach()


class SGD(Backprop):
    """``optim=sgd``: torch.optim.SGD (momentum, Nesterov, weight decay as configured)."""

    @classmethod
    def build(cls, net, cfg, mu_cfg=None, mode=None) -> "SGD":
        opt = fused(torch.optim.SGD, net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                    nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        return cls(net, opt, cfg.schedule, cfg.grad_clip)


class Adam(Backprop):
    """``optim=adam``: torch.optim.Adam."""

    @classmethod
    def build(cls, net, cfg, mu_cfg=None, mode=None) -> "Adam":
        opt = fused(torch.optim.Adam, net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                    weight_decay=cfg.weight_decay)
        return cls(net, opt, cfg.schedule, cfg.grad_clip)
