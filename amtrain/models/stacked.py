"""S copies of one MLP, LeNet-5 or Elman RNN as one network with a leading seed axis (``amtrain.seeds``).

Each copy is the network one seed's single run would train: :func:`stack` takes the S
single-seed networks (each built after its own ``seed_everything``) and stacks their
parameters, so copy s starts exactly where seed s's single run starts. Tensors carry the
seed axis first:

    x (S, N, in) -> c_l, a_l (S, N, m_l) -> output (S, N, K),   y (S, N)

(LeNet-5's conv codes are (S, N, C, H, W).) An input without the seed axis, (N, in), is
seen by every copy (evaluation on the test set). Nothing mixes the copies: ``W_l`` is
``(S, m_l, m_{l-1})`` and every product is batched, a convolution is one grouped
convolution with a group per copy, BatchNorm keeps statistics per copy, and the loss is
the *sum over copies* of each copy's own loss, so the gradient of copy s's parameters is
exactly its single run's gradient. Element-wise optimisers (SGD, Adam) on the stacked
parameters are S independent ones.

The Elman RNN (:class:`StackedElmanRNN`) is stacked for AM-Adam's column-layout pass, which
takes its arrays with the seed axis after time, (T, S, d, B); its evaluation runs each copy
as its own network.
"""
from __future__ import annotations

import copy
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from amtrain.errors import ConfigError
from amtrain.models.layered import Block, LayeredNet
from amtrain.models.rnn import ElmanRNN


class StackedLinear(nn.Module):
    """S linear maps: ``z[s] = a[s] W[s]^T + b[s]``; ``weight`` (S, out, in), ``bias`` (S, out)."""

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.seeds = len(layers)
        self.in_features, self.out_features = layers[0].in_features, layers[0].out_features
        self.weight = nn.Parameter(torch.stack([lin.weight.detach() for lin in layers]).clone())
        has_bias = layers[0].bias is not None
        self.bias = nn.Parameter(torch.stack([lin.bias.detach() for lin in layers]).clone()) if has_bias else None

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if a.dim() == 2:  # (N, in), every copy's input (the test set): one (N, in) x (in, S*out) product,
            # not S products of a broadcast copy of a (23 against 34 ms for 10,000 x 784 and S = 5)
            z = (a @ self.weight.flatten(0, 1).T).view(a.shape[0], self.seeds, -1).transpose(0, 1)
        else:
            z = torch.matmul(a, self.weight.mT)  # (S, N, in) times (S, in, out)
        return z if self.bias is None else z + self.bias[:, None, :]

    def extra_repr(self) -> str:
        return f"seeds={self.seeds}, in_features={self.in_features}, out_features={self.out_features}"


def channels(z: torch.Tensor) -> torch.Tensor:
    """(S, N, m, ...) -> (N, S*m, ...), contiguous: copy s's feature (or channel) j is channel s*m + j."""
    S, N, m = z.shape[:3]
    return z.transpose(0, 1).reshape(N, S * m, *z.shape[3:])


def unchannels(t: torch.Tensor, seeds: int) -> torch.Tensor:
    """(N, S*m, ...) -> a (S, N, m, ...) view (not contiguous)."""
    return t.view(t.shape[0], seeds, -1, *t.shape[2:]).transpose(0, 1)


class StackedBatchNorm(nn.Module):
    """S BatchNorm1d (or 2d) layers over (S, N, m) (or (S, N, C, H, W)): each copy normalises
    with its own batch statistics and keeps its own running mean and variance, as one does.

    Computed as one BatchNorm1d of S*m channels on the (N, S*m) layout (:func:`channels`):
    one fused kernel each way, the same kernels a single run uses. Parameters and buffers
    are (S, m); the kernels see them as (S*m,) views, so the running statistics move in place.
    """

    def __init__(self, layers: Sequence[nn.BatchNorm1d]):
        super().__init__()
        first = layers[0]
        self.seeds, self.num_features = len(layers), first.num_features
        self.eps, self.momentum = first.eps, first.momentum
        self.affine, self.track_running_stats = first.affine, first.track_running_stats
        if self.momentum is None:
            raise ConfigError("seed batching needs BatchNorm with a momentum (not cumulative averages)")
        stack = lambda name: torch.stack([getattr(bn, name).detach() for bn in layers]).clone()  # noqa: E731
        self.weight = nn.Parameter(stack("weight")) if self.affine else None
        self.bias = nn.Parameter(stack("bias")) if self.affine else None
        if self.track_running_stats:
            self.register_buffer("running_mean", stack("running_mean"))
            self.register_buffer("running_var", stack("running_var"))
            self.register_buffer("num_batches_tracked", first.num_batches_tracked.detach().clone())
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def flat(self, name: str):
        """A parameter or buffer as the (S*m,) vector the channel kernels take (None stays None)."""
        t = getattr(self, name)
        return None if t is None else t.view(-1)

    def batch_stats(self) -> bool:
        return self.training or self.running_mean is None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        running = self.training and self.track_running_stats
        if running:
            self.num_batches_tracked.add_(1)
        out = F.batch_norm(channels(z), self.flat("running_mean") if running or not self.training else None,
                           self.flat("running_var") if running or not self.training else None, self.flat("weight"),
                           self.flat("bias"), self.batch_stats(), self.momentum, self.eps)
        return unchannels(out, self.seeds)


class StackedConv2d(nn.Module):
    """S Conv2d layers as one grouped convolution: copy s's input channels meet only its own
    filters. ``weight`` (S, C_out, C_in, k, k), ``bias`` (S, C_out); maps (S, N, C_in, H, W)
    (or (N, C_in, H, W), for every copy) to (S, N, C_out, H', W')."""

    def __init__(self, layers: Sequence[nn.Conv2d]):
        super().__init__()
        first = layers[0]
        if first.groups != 1 or first.padding_mode != "zeros":
            raise ConfigError("seed batching covers plain Conv2d layers (groups=1, zero padding)")
        self.seeds = len(layers)
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.weight = nn.Parameter(torch.stack([conv.weight.detach() for conv in layers]).clone())
        has_bias = first.bias is not None
        self.bias = nn.Parameter(torch.stack([conv.bias.detach() for conv in layers]).clone()) if has_bias else None

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        S = self.seeds
        if a.dim() == 4:  # no seed axis: every copy sees the same images
            a = a.unsqueeze(0).expand(S, *a.shape)
        N = a.shape[1]
        x = a.transpose(0, 1).reshape(N, S * a.shape[2], *a.shape[3:])  # (N, S*C_in, H, W)
        z = F.conv2d(x, self.weight.flatten(0, 1), None if self.bias is None else self.bias.flatten(),
                     self.stride, self.padding, self.dilation, groups=S)
        return z.view(N, S, -1, *z.shape[2:]).transpose(0, 1)


class PerCopy(nn.Module):
    """A per-sample module (pooling, flattening, an activation) applied to (S, N, ...) by
    folding the seed axis into the samples."""

    def __init__(self, module: nn.Module, seeds: int):
        super().__init__()
        self.module, self.seeds = module, seeds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x.reshape(-1, *x.shape[2:]))
        return y.view(self.seeds, -1, *y.shape[1:])


class StackedFlatten(nn.Module):
    """Flattens each sample's ``in_shape`` dims, with or without the seed axis in front."""

    def __init__(self, sample_dims: int):
        super().__init__()
        self.sample_dims = sample_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(x.dim() - self.sample_dims)


def _stack_f(fs: Sequence[nn.Module]) -> nn.Module:
    mods = [list(f) if isinstance(f, nn.Sequential) else [f] for f in fs]
    out = []
    for i, first in enumerate(mods[0]):
        group = [m[i] for m in mods]
        if isinstance(first, nn.Linear):
            out.append(StackedLinear(group))
        elif isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out.append(StackedBatchNorm(group))
        elif isinstance(first, nn.Conv2d):
            out.append(StackedConv2d(group))
        else:
            raise ConfigError(f"seed batching covers Linear, Conv2d and BatchNorm layers, not {type(first).__name__}")
    return nn.Sequential(*out)


def _elementwise(sigma: nn.Module) -> bool:
    return isinstance(sigma, (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity)) or type(sigma).__name__ == "Sign"


class StackedElmanRNN(ElmanRNN):
    """S Elman RNNs of one shape: torch's four RNN parameters stacked under their own names
    (``rnn.weight_ih_l0`` (S, d, n_inputs), ``rnn.weight_hh_l0`` (S, d, d), the biases (S, d)) and
    the read-out a :class:`StackedLinear`. The column-layout maps of :class:`ElmanRNN` take them
    as they are (amtrain.models.rnn.products); inputs are (S, B, ...), each copy's batch.

    The forward is evaluation only (no autograd): each copy runs as its own ElmanRNN, on the
    weights of that moment, so it computes what its single run computes, on the same arrays
    (the test set at T = 784 is already 470 MB of hidden states for one copy)."""

    def __init__(self, nets: Sequence[ElmanRNN], sample_dims: int):
        nn.Module.__init__(self)
        first = nets[0]
        self.seeds, self.sample_dims = len(nets), sample_dims
        self.n_inputs, self.hidden, self.n_outputs = first.n_inputs, first.hidden, first.n_outputs
        self.readout_kind, self.n_steps = first.readout_kind, first.n_steps
        self.rnn = nn.Module()
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            setattr(self.rnn, name, nn.Parameter(torch.stack([getattr(n.rnn, name).detach() for n in nets]).clone()))
        self.head = StackedLinear([n.head for n in nets])
        # the evaluation's network, each copy's weights in turn (not a submodule: no parameters of ours)
        object.__setattr__(self, "single", copy.deepcopy(first))

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """(S, B, ...) -> (S, B, T, n_inputs)."""
        return x.reshape(*x.shape[:2], -1, self.n_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits (S, N, n_out) of every copy for inputs (N, ...) seen by all, or (S, N, ...)."""
        if torch.is_grad_enabled():
            raise RuntimeError("StackedElmanRNN's forward is for evaluation: AM-Adam trains it through its column "
                               "maps (run it under torch.no_grad)")
        net = self.single.to(device=x.device, dtype=self.rnn.weight_hh_l0.dtype)
        shared = x.dim() == self.sample_dims + 1  # (N, ...): the test set, for every copy
        out = []
        for s in range(self.seeds):
            net.load_state_dict(copy_state(self, s))
            out.append(net(x if shared else x[s]))
        return torch.stack(out)


def stack(nets: List[LayeredNet], in_shape: Sequence[int]) -> LayeredNet:
    """One network with a seed axis holding copies of ``nets`` (MLPs, LeNet-5s or Elman RNNs of one shape)."""
    if isinstance(nets[0], ElmanRNN):
        return StackedElmanRNN(nets, len(in_shape))
    first, S = nets[0], len(nets)
    if not isinstance(first.inputs, (nn.Flatten, nn.Identity)):
        raise ConfigError("seed batching covers the MLPs and LeNet-5")
    blocks = []
    for l, block in enumerate(first.blocks):
        sigma = block.sigma if _elementwise(block.sigma) else PerCopy(block.sigma, S)
        blocks.append(Block(_stack_f([net.blocks[l].f for net in nets]), sigma))
    head = StackedLinear([net.head for net in nets])
    inputs = StackedFlatten(len(in_shape)) if isinstance(first.inputs, nn.Flatten) else nn.Identity()
    stacked = LayeredNet(inputs, blocks, head, first.n_outputs)
    stacked.seeds = S
    return stacked


def copy_state(stacked: LayeredNet, s: int) -> dict:
    """Copy s's parameters and buffers under the names a single-seed net of the same model uses."""
    out = {}
    for name, t in list(stacked.named_parameters()) + list(stacked.named_buffers()):
        out[name] = t if name.endswith("num_batches_tracked") else t[s]
    return out
