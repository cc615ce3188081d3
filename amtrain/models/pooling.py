"""LeNet-5's k x k max-pooling (stride k) with a faster forward on the CPU.

ATen's CPU kernel for ``max_pool2d`` on the usual (N, C, H, W) layout walks every window
element by element: on a 200 x 6 x 24 x 24 map (LeNet-5's first) it takes about 1.4 ms on
2 threads, where a ReLU of the same map takes 0.03 ms. The same maxima come from
``k * k - 1`` element-wise maxima of strided views of the map (:func:`window_max`, 0.17 ms).
Where a gradient will be asked for, the forward also notes each window's arg-max as ATen
does, the first maximum in row-major order (:func:`window_argmax`), and the backward is
ATen's own ``max_pool2d_with_indices_backward`` on those indices: the gradient is routed
exactly as ``nn.MaxPool2d`` routes it, ties included.
"""
from __future__ import annotations

import torch
from torch import nn


def _parts(x: torch.Tensor, k: int):
    """The k * k strided views x[..., i::k, j::k] of the whole windows, in row-major order, with (i, j)."""
    h, w = x.shape[-2] // k * k, x.shape[-1] // k * k
    return [((i, j), x[..., i:h:k, j:w:k]) for i in range(k) for j in range(k)]


def window_max(x: torch.Tensor, k: int) -> torch.Tensor:
    """max over each k x k window of the last two dims (stride k, no padding, the rest dropped
    as max_pool2d's floor mode does): equal to ``F.max_pool2d(x, k)``, NaN included.
    (The sign of a zero maximum may differ; -0.0 == 0.0.)"""
    out = None
    for _, part in _parts(x, k):
        out = part if out is None else torch.maximum(out, part)
    return out.clone() if k == 1 else out


def window_argmax(x: torch.Tensor, k: int):
    """(window_max(x, k), indices) with ATen's max_pool2d indices: for each window, the flat
    position ``h * W + w`` in its (H, W) plane of the first maximum in row-major order. (A
    window holding NaN: ATen notes its last NaN, this the last maximum before it; both give NaN.)"""
    W = x.shape[-1]
    exact = torch.float64 if x.dtype == torch.float64 else torch.float32  # holds i W + j exactly (not bf16)
    out = offset = None
    for (i, j), part in _parts(x, k):
        if out is None:
            out, offset = part, torch.zeros(part.shape, dtype=exact, device=x.device)
            continue
        # offset <- i W + j where part beats every element before it (strictly: the first maximum stays).
        # As arithmetic on a 0/1 mask: on the CPU a masked fill or a where costs 5-10 times that here.
        beats = (part > out).view(torch.uint8).to(exact)
        offset.add_(beats * ((i * W + j) - offset))
        out = torch.maximum(out, part)
    ho, wo = out.shape[-2:]
    corner = (torch.arange(ho, device=x.device)[:, None] * (k * W)
              + torch.arange(wo, device=x.device)[None, :] * k)  # each window's top-left position
    return (out.clone() if k == 1 else out), offset.to(torch.int64).add_(corner)


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k):
        out, indices = window_argmax(x, k)
        ctx.save_for_backward(x, indices)
        ctx.k = k
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, indices = ctx.saved_tensors
        k = ctx.k
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, [k, k], [k, k], [0, 0], [1, 1], False, indices), None


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d(k)`` (stride k), whose forward on the CPU takes :func:`window_max`, or
    under autograd :class:`_MaxPool` (the same values, ATen's backward on the same indices).
    Other settings (padding, dilation, ceil_mode, another stride, returned indices), other
    devices, and inputs smaller than a window go to ``nn.MaxPool2d`` itself."""

    def __init__(self, kernel_size: int):
        super().__init__(kernel_size)

    def _fast(self, x: torch.Tensor) -> bool:
        k = self.kernel_size
        return (x.device.type == "cpu" and x.dim() in (3, 4) and x.is_floating_point() and isinstance(k, int)
                and self.stride == k and self.padding == 0 and self.dilation == 1 and not self.ceil_mode
                and not self.return_indices and x.shape[-2] >= k and x.shape[-1] >= k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fast(x):
            return super().forward(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool.apply(x, self.kernel_size)
        return window_max(x, self.kernel_size)
