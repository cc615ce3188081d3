"""What every training method offers the training loop."""
from __future__ import annotations

from typing import Tuple

import torch


class Trainer:
    """One training method: ``step`` consumes a mini-batch, ``end_epoch`` advances schedules.

    ``step`` returns the batch loss and the network's output *before* the update (both
    detached), so the loop can log training loss and accuracy without another forward pass.

    Full-batch methods (offline AM, ADMM, dlADMM, mDLAM, BCD) set ``full_batch = True``
    and implement ``epoch(data, batch_size, generator)`` instead: one iteration over the
    whole training set per epoch. It returns ``(loss_sum, correct, n)`` of the training set
    before the update when it measures them on the way, else None, and the loop asks
    :meth:`train_metrics` first (outside the timed region).
    """

    full_batch = False
    # True when the method trains S stacked copies of a network as S independent runs (amtrain.seeds)
    seed_axis = False
    # What to change when a run diverges: the keys this method has (the divergence message)
    diverge_hint = "lower the step sizes"

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.schedulers: list = []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def train_metrics(self, data):
        """Full-batch methods: (loss sum, correct, n) on the training set before an iteration, or
        None when ``epoch`` returns them itself."""
        return None

    def objective(self, data) -> dict:
        """The method's own objective(s) after an epoch, as {name: value} train metrics ({}: none)."""
        return {}

    def end_epoch(self) -> None:
        for s in self.schedulers:
            s.step()


def fused(optimizer: type, params, **kwargs) -> torch.optim.Optimizer:
    """``optimizer`` (torch.optim.Adam or SGD) with ``fused=True`` where torch has it for these
    parameters (floating tensors on CPU or CUDA), else the default implementation.

    The same update as one kernel per parameter instead of one per operation: 0.36 against
    1.69 ms for the Adam step of 5 stacked 784-100-100-10 networks on the 2-core CPU of our
    benchmark, 0.23 against 0.74 ms for one. It rounds differently (6e-8 apart after 100 float32
    steps, 1e-16 in float64).
    """
    params = list(params)
    if params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return optimizer(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a torch build or dtype without the fused kernel
            pass
    return optimizer(params, **kwargs)


def make_step_lr(opt: torch.optim.Optimizer, schedule) -> list:
    """Multiply every learning rate by ``gamma`` each ``step_epochs`` epochs (0: constant)."""
    if schedule.step_epochs and schedule.step_epochs > 0:
        return [torch.optim.lr_scheduler.StepLR(opt, step_size=schedule.step_epochs, gamma=schedule.gamma)]
    return []
