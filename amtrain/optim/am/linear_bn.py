"""f_l = Linear [+ BatchNorm1d] in closed form: its forward pass and its gradients.

AM's sub-problems differentiate one layer at a time, given its input: the codes through
f_{l+1} (eq. 5), the weights through f_l (eq. 6). For the MLPs' layers that is a matmul
and, with BatchNorm, one fused kernel each way, so neither step needs an autograd graph.
Everything here equals what autograd computes through the modules (tests/test_fast_path.py),
including the running statistics a training-mode BatchNorm moves on every forward.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from amtrain.models.stacked import StackedBatchNorm, StackedLinear, channels, unchannels


# ATen's CPU batch-norm kernels fork their thread pool even for a 200 x 100 batch, where
# the fork costs more than the work: 35 us two-threaded against 13 us one-threaded for a
# forward on the 2-core machine of our benchmark. Below this many elements the kernels
# run on one thread (switching costs well under a microsecond); CUDA is unaffected.
# torch's thread count is per process, and a trainer steps in one Python thread.
SMALL_BATCHNORM = 1 << 16


@contextlib.contextmanager
def one_thread_if_small(t: torch.Tensor):
    n = torch.get_num_threads()
    if t.device.type != "cpu" or n == 1 or t.numel() > SMALL_BATCHNORM:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class Saved(NamedTuple):
    """What the backward needs: z = W a + b, and BatchNorm's batch mean and 1/std (if used)."""
    z: torch.Tensor
    mean: Optional[torch.Tensor] = None
    rstd: Optional[torch.Tensor] = None


class LinearBN:
    """A block's f: ``pred = BN(W a + b)``, or ``W a + b`` without BatchNorm.

    Also for S copies on a seed axis (:mod:`amtrain.models.stacked`): W (S, out, in), a and
    pred (S, N, ...), BatchNorm per copy. The formulas are the same, batched; sums over the
    samples run over dim -2, which is dim 0 without the seed axis.
    """

    def __init__(self, lin: nn.Module, bn: Optional[nn.Module]):
        self.lin, self.bn = lin, bn
        self.stacked = isinstance(lin, StackedLinear)

    @classmethod
    def of(cls, f: nn.Module) -> Optional["LinearBN"]:
        """Wrap f when it is Linear or Sequential(Linear, BatchNorm1d); else None (use autograd)."""
        mods = list(f) if isinstance(f, nn.Sequential) else [f]
        if not mods or not isinstance(mods[0], (nn.Linear, StackedLinear)) or len(mods) > 2:
            return None
        bn = mods[1] if len(mods) == 2 else None
        if bn is not None and (not isinstance(bn, (nn.BatchNorm1d, StackedBatchNorm)) or bn.momentum is None):
            return None  # momentum None (cumulative averages) is left to the module
        return cls(mods[0], bn)

    @property
    def weight(self) -> torch.Tensor:
        return self.lin.weight

    def linear(self, a: torch.Tensor) -> torch.Tensor:
        if self.stacked:
            return self.lin(a)
        return F.linear(a, self.lin.weight, self.lin.bias)

    def _batch_stats(self) -> bool:
        bn = self.bn
        return bn.training or bn.running_mean is None

    @torch.no_grad()
    def forward(self, a: torch.Tensor, z: Optional[torch.Tensor] = None):
        """(pred, saved) for input a; pass z = W a + b when it is already known (skips the matmul)."""
        if z is None:
            z = self.linear(a)
        bn = self.bn
        if bn is None:
            return z, Saved(z)
        if self.stacked:
            return self._forward_stacked(z)
        if self._batch_stats():
            if bn.training and bn.track_running_stats:
                bn.num_batches_tracked.add_(1)
            running = bn.training and bn.track_running_stats  # as nn.BatchNorm1d.forward
            with one_thread_if_small(z):
                pred, mean, rstd = torch.native_batch_norm(
                    z, bn.weight, bn.bias, bn.running_mean if running else None,
                    bn.running_var if running else None, True, bn.momentum, bn.eps)
            return pred, Saved(z, mean, rstd)
        pred = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return pred, Saved(z)

    def _forward_stacked(self, z: torch.Tensor):
        """The same kernel as one BatchNorm1d, on the (N, S*m) layout; saves z in that layout."""
        bn = self.bn
        if self._batch_stats():
            running = bn.training and bn.track_running_stats
            if running:
                bn.num_batches_tracked.add_(1)
            zc = channels(z)
            with one_thread_if_small(zc):
                pred, mean, rstd = torch.native_batch_norm(
                    zc, bn.flat("weight"), bn.flat("bias"), bn.flat("running_mean") if running else None,
                    bn.flat("running_var") if running else None, True, bn.momentum, bn.eps)
            return unchannels(pred, bn.seeds), Saved(zc, mean, rstd)
        return bn(z), Saved(z)

    @torch.no_grad()
    def backward_z(self, d_pred: torch.Tensor, saved: Saved, params: bool = False):
        """(d/dz, d/dgamma, d/dbeta) given d/dpred; the BatchNorm parameters' only when ``params``."""
        bn = self.bn
        if bn is None:
            return d_pred, None, None
        affine = params and bn.weight is not None
        if self.stacked:
            return self._backward_stacked(d_pred, saved, affine)
        if self._batch_stats():
            with one_thread_if_small(d_pred):
                return torch.ops.aten.native_batch_norm_backward(
                    d_pred, saved.z, bn.weight, bn.running_mean, bn.running_var, saved.mean, saved.rstd, True,
                    bn.eps, [True, affine, affine])
        rstd = torch.rsqrt(bn.running_var + bn.eps)  # running statistics: an affine map of z
        d_z = d_pred * (rstd if bn.weight is None else bn.weight * rstd)
        if not affine:
            return d_z, None, None
        return d_z, (d_pred * (saved.z - bn.running_mean) * rstd).sum(0), d_pred.sum(0)

    def _backward_stacked(self, d_pred: torch.Tensor, saved: Saved, affine: bool):
        bn = self.bn
        if saved.mean is not None:  # batch statistics: the fused kernel on the (N, S*m) layout
            with one_thread_if_small(saved.z):
                d_z, d_gamma, d_beta = torch.ops.aten.native_batch_norm_backward(
                    channels(d_pred), saved.z, bn.flat("weight"), bn.flat("running_mean"), bn.flat("running_var"),
                    saved.mean, saved.rstd, True, bn.eps, [True, affine, affine])
            d_z = unchannels(d_z, bn.seeds)
            if not affine:
                return d_z, None, None
            return d_z, d_gamma.view(bn.seeds, -1), d_beta.view(bn.seeds, -1)
        rstd = torch.rsqrt(bn.running_var + bn.eps)  # running statistics: an affine map of z
        x_hat = (saved.z - bn.running_mean[:, None, :]) * rstd[:, None, :]
        d_z = d_pred * (rstd if bn.weight is None else bn.weight * rstd)[:, None, :]
        if not affine:
            return d_z, None, None
        return d_z, (d_pred * x_hat).sum(-2), d_pred.sum(-2)

    def grad_input(self, d_pred: torch.Tensor, saved: Saved, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """d/da given d/dpred. ``weight`` replaces W, e.g. by a scaled copy: the map is linear in d_pred,
        so a constant factor of d_pred can be folded into W once instead of into every d_pred."""
        return self.backward_z(d_pred, saved)[0] @ (self.lin.weight if weight is None else weight)

    @torch.no_grad()
    def set_param_grads(self, d_pred: torch.Tensor, saved: Saved, a: torch.Tensor) -> None:
        """Set .grad of W, b and BatchNorm's gamma, beta to d/dparam given d/dpred and the input a."""
        d_z, d_gamma, d_beta = self.backward_z(d_pred, saved, params=True)
        self.lin.weight.grad = d_z.mT @ a
        if self.lin.bias is not None:
            self.lin.bias.grad = d_z.sum(-2)
        if d_gamma is not None:
            self.bn.weight.grad, self.bn.bias.grad = d_gamma, d_beta
