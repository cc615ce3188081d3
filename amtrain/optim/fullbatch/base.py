"""What the full-batch auxiliary-variable methods share: an MLP of Linear + ReLU layers as
matrices, per-sample state for every training sample, and chunked passes over it.

Notation (rows are samples throughout, as amtrain keeps them; the papers' code keeps
columns): layer l = 1..L has weights ``W[l]`` (out x in) and bias ``b[l]`` (None without
one); layer L is the output layer. A method keeps per-sample variables for all N training
samples (pre-activations z_l, activations a_l, a dual u, ...) as (N, width) arrays: in
memory, or in memory-mapped files when they exceed ``optim.state_memory_gb``. Every
sample-wise step works on ``optim.chunk_rows`` rows at a time, so temporaries stay at
chunk size whatever N is, and sums over samples (Grams, gradients) are accumulated chunk by
chunk. The network's own parameters are written after each iteration (:meth:`store`), so
evaluation is the plain forward pass.
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from amtrain.errors import ConfigError
from amtrain.models.layered import LayeredNet
from amtrain.optim.base import Trainer


class FullBatch(Trainer):
    full_batch = True
    streams = False  # True: also runs on streamed data (inputs read by row slices from HDF5)

    @classmethod
    def build(cls, net, cfg, mu_cfg=None, mode=None) -> "FullBatch":
        return cls(net, cfg)

    def __init__(self, net: LayeredNet, cfg):
        super().__init__(net)
        for l, block in enumerate(net.blocks):
            if not block.is_linear_in_weights() or not isinstance(block.sigma, torch.nn.ReLU):
                raise ConfigError(f"optim={cfg.name} needs Linear layers with ReLU and no BatchNorm (layer {l + 1} "
                                  "is not): set model.batchnorm=false and model.activation=relu")
        self.cfg = cfg
        self.chunk_rows = int(cfg.chunk_rows)
        self.layers = [b.linear() for b in net.blocks] + [net.head]
        if cfg.get("init_std") is not None:
            self._initialise(float(cfg.init_std), cfg.get("init_bias"))
        self.W: List[torch.Tensor] = [lin.weight.detach().clone() for lin in self.layers]
        self.b: List[Optional[torch.Tensor]] = [None if lin.bias is None else lin.bias.detach().clone()
                                                for lin in self.layers]
        self.iteration = 0
        self.train_loss: List[float] = []  # mean training loss before each iteration (train_metrics)
        self._state_dir: Optional[Path] = None

    @property
    def L(self) -> int:
        """Number of linear layers, the output layer included."""
        return len(self.layers)

    @torch.no_grad()
    def _initialise(self, std: float, bias: Optional[float]) -> None:
        """The authors' initialisation: W ~ N(0, std^2), b ~ N(0, std^2) or the constant ``bias``."""
        for lin in self.layers:
            lin.weight.normal_(0.0, std)
            if lin.bias is not None:
                lin.bias.fill_(float(bias)) if bias is not None else lin.bias.normal_(0.0, std)

    @torch.no_grad()
    def store(self) -> None:
        """Write W, b into the network's parameters (evaluation runs the network)."""
        for lin, W, b in zip(self.layers, self.W, self.b):
            lin.weight.copy_(W)
            if b is not None:
                lin.bias.copy_(b)

    # ------------------------------------------------------------------ chunks and state
    def chunks(self, n: int) -> List[slice]:
        return [slice(s, min(s + self.chunk_rows, n)) for s in range(0, n, self.chunk_rows)]

    def linear(self, l: int, a: torch.Tensor) -> torch.Tensor:
        """a W_l^T + b_l for some rows a of layer l's input."""
        return a @ self.W[l].T if self.b[l] is None else torch.addmm(self.b[l], a, self.W[l].T)

    def arrays(self, shapes: dict, n: int, device, dtype=torch.float32, in_memory: bool = False) -> dict:
        """Per-sample state ``{name: width}`` for n samples, in memory or (above state_memory_gb) on disk.

        ``in_memory``: the method needs it in memory (its steps take whole arrays); above the
        limit that is a one-line error naming the size."""
        need = 4 * n * sum(shapes.values())
        limit = float(self.cfg.state_memory_gb)
        disk = need > limit * 2**30
        if disk and in_memory:
            raise ConfigError(f"optim={self.cfg.name} keeps {need / 2**30:.1f} GB of per-sample state in memory, "
                              f"above optim.state_memory_gb={limit:g}: raise it if the machine has the memory, or "
                              "train on fewer samples (dataset.train_size)")
        return {name: self._array(name, n, k, device, disk, dtype) for name, k in shapes.items()}

    def _array(self, name: str, n: int, k: int, device, disk: bool, dtype):
        if not disk:
            return torch.zeros(n, k, device=device, dtype=dtype)
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix=f"amtrain-{self.cfg.name}-", dir=self.cfg.state_dir or None))
            weakref.finalize(self, shutil.rmtree, str(self._state_dir), True)
        return DiskArray(self._state_dir / f"{name}.npy", n, k, device)

    @torch.no_grad()
    def forward_state(self, x, n: int):
        """z_l = a_{l-1} W_l^T + b_l and a_l = ReLU(z_l) of every sample, from a forward pass of the
        initial network, in memory: ([z_1..z_L], [a_1..a_{L-1}])."""
        widths = [W.shape[0] for W in self.W]
        shapes = {f"z{l + 1}": w for l, w in enumerate(widths)}
        shapes.update({f"a{l + 1}": w for l, w in enumerate(widths[:-1])})
        state = self.arrays(shapes, n, self.W[0].device, in_memory=True)
        z = [state[f"z{l + 1}"] for l in range(self.L)]
        a = [state[f"a{l + 1}"] for l in range(self.L - 1)]
        for sl in self.chunks(n):
            v = x[sl]
            for l in range(self.L):
                z[l][sl] = self.linear(l, v)
                if l < self.L - 1:
                    v = a[l][sl] = torch.relu(z[l][sl])
        return z, a

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """y as the output layer's target: one-hot rows, or a 0/1 column for one logit."""
        return self.net.loss_target(y, self.W[-1].dtype)

    # ------------------------------------------------------------------ what the loop asks
    @torch.no_grad()
    def train_metrics(self, data) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """(loss sum, correct, n) of the network on the training set before this iteration (the
        loop calls it outside the timed region); the mean loss is kept in ``train_loss``."""
        x, y = rows(data)
        loss_sum = torch.zeros((), device=y.device)
        correct = torch.zeros((), device=y.device, dtype=torch.long)
        for sl in self.chunks(len(y)):
            out = self.net(x[sl])
            loss_sum += self.net.loss(out, y[sl], reduction="sum")
            correct += (self.net.predict(out) == y[sl]).sum()
        self.train_loss.append(float(loss_sum) / len(y))
        return loss_sum, correct, len(y)

    def epoch(self, data, batch_size: int, generator: torch.Generator) -> None:
        x, y = rows(data)
        with torch.no_grad():
            self.iterate(x, y)
            self.store()
        self.iteration += 1

    def iterate(self, x, y) -> None:
        """One iteration of the method over all samples (x: a row store of inputs, y: labels)."""
        raise NotImplementedError


class DiskArray:
    """A float32 (n, k) array in a memory-mapped .npy file, read and written by row slices as tensors."""

    dtype = torch.float32

    def __init__(self, path: Path, n: int, k: int, device):
        self.mm = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(n, k))
        self.device = device
        self.shape = (n, k)

    def __len__(self) -> int:
        return self.mm.shape[0]

    def __getitem__(self, sl: slice) -> torch.Tensor:
        return torch.from_numpy(np.array(self.mm[sl])).to(self.device)

    def __setitem__(self, sl: slice, value: torch.Tensor) -> None:
        self.mm[sl] = value.detach().to("cpu", torch.float32).numpy()

    def __reduce__(self):
        from amtrain.checkpoint import NotCheckpointable

        raise NotCheckpointable(f"the per-sample state is in memory-mapped files ({self.shape[0]:,} rows, above "
                                "optim.state_memory_gb): a stopped run starts again")


class StreamRows:
    """The training inputs of a streamed dataset (HIGGS), read by row slices in file order."""

    dtype = torch.float32

    def __init__(self, stream):
        self.stream = stream
        self.device = stream.device
        self.shape = (stream.n_train,) + tuple(stream.in_shape)

    def __len__(self) -> int:
        return self.stream.n_train

    def __getitem__(self, sl: slice) -> torch.Tensor:
        x, _ = self.stream._read("train", sl.start, sl.stop)
        return torch.from_numpy(x).to(self.stream.device)


def rows(data):
    """(inputs as a row store, all training labels) for in-memory or streamed data."""
    if hasattr(data, "x_train"):
        return data.x_train.flatten(1), data.y_train
    y = torch.from_numpy(data._h5()["train/y"][: data.n_train]).long().to(data.device)
    return StreamRows(data), y
