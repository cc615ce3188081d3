"""In-memory datasets served as shuffled mini-batches of tensors (no per-sample Python)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Optional, Tuple

import torch

from amtrain.errors import DataError
from amtrain.provenance import tensors_fingerprint

Batch = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class TensorData:
    """Train/test (and optional validation) tensors already normalised, on one device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    x_val: Optional[torch.Tensor] = None
    y_val: Optional[torch.Tensor] = None
    source: str = "generated"  # where the samples came from (named in data errors)
    identity: str = ""  # what the samples are: amtrain.provenance.tensors_fingerprint, set by fingerprinted()

    @property
    def in_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def to(self, device) -> "TensorData":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, x_train=move(self.x_train), y_train=move(self.y_train), x_test=move(self.x_test),
                       y_test=move(self.y_test), x_val=move(self.x_val), y_val=move(self.y_val))

    def fingerprinted(self) -> "TensorData":
        """The same data with its ``identity`` (unless its loader set one): a hash of every sample
        and label as loaded, so runs can tell another copy or version of a dataset from the same one."""
        if self.identity:
            return self
        tensors = [self.x_train, self.y_train, self.x_test, self.y_test]
        tensors += [t for t in (self.x_val, self.y_val) if t is not None]
        return replace(self, identity=tensors_fingerprint(tensors))

    def check(self) -> "TensorData":
        """Refuse inputs holding NaN or inf and labels outside 0..n_classes-1 (bad data, not divergence)."""
        for split, x, y in (("training", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if not bool(torch.isfinite(x).all()):
                raise DataError(f"{self.source}: the {split} inputs hold NaN or inf values: the files are corrupt; "
                                "replace them")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
                raise DataError(f"{self.source}: the {split} labels leave 0..{self.n_classes - 1}: the files are "
                                "corrupt; replace them")
        return self

    def subset(self, train_size: Optional[int], val_size: int) -> "TensorData":
        """Keep the first ``train_size`` training samples, then hold out the last ``val_size`` of them."""
        x, y = self.x_train, self.y_train
        if train_size is not None:
            if train_size <= 0 or train_size > x.shape[0]:
                raise ValueError(f"dataset.train_size={train_size} must be in 1..{x.shape[0]}")
            x, y = x[:train_size], y[:train_size]
        x_val = y_val = None
        if val_size:
            if val_size < 0 or val_size >= x.shape[0]:
                raise ValueError(f"dataset.val_size={val_size} must be in 0..{x.shape[0] - 1}")
            x, x_val, y, y_val = x[:-val_size], x[-val_size:], y[:-val_size], y[-val_size:]
        return replace(self, x_train=x, y_train=y, x_val=x_val, y_val=y_val)

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch in a fresh random order drawn from ``generator`` (on the CPU)."""
        order = torch.randperm(self.n_train, generator=generator).to(self.x_train.device)
        for start in range(0, self.n_train, batch_size):
            idx = order[start:start + batch_size]
            yield self.x_train[idx], self.y_train[idx]

    def n_batches(self, batch_size: int) -> int:
        return -(-self.n_train // batch_size)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        x, y = (self.x_test, self.y_test) if split == "test" else (self.x_val, self.y_val)
        for start in range(0, x.shape[0], batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]

    @property
    def splits(self) -> Tuple[str, ...]:
        return ("val", "test") if self.x_val is not None else ("test",)
