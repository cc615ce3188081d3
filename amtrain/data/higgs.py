"""HIGGS mini-batches streamed from the HDF5 file made by :mod:`amtrain.data.higgs_convert`.

:class:`HiggsStream` reads large contiguous blocks (never the whole file), shuffles
them within a buffer with a seeded generator, and yields mini-batches. ``h5py`` files
are opened lazily in the process that reads, so it works with DataLoader workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from amtrain.data.higgs_convert import check_file
from amtrain.errors import DataError
from amtrain.provenance import h5_fingerprint

class HiggsStream:
    """Mini-batches streamed from a converted HIGGS file.

    Training order per epoch: blocks of ``block_rows`` contiguous rows in a seeded random
    order, ``buffer_blocks`` of them at a time shuffled together, then cut into batches.
    Peak memory is about ``buffer_blocks * block_rows`` rows (116 bytes each).
    """

    n_classes = 2

    def __init__(self, path, standardize: bool = True, block_rows: int = 65536, buffer_blocks: int = 8,
                 train_size: Optional[int] = None, num_workers: int = 0, device="cpu"):
        self.path = str(Path(path).expanduser())
        sizes = check_file(self.path)
        self.n_train = sizes["n_train"] if train_size is None else min(int(train_size), sizes["n_train"])
        self.n_test = sizes["n_test"]
        self.in_shape: Tuple[int, ...] = (sizes["n_features"],)
        self.standardize = standardize
        self.block_rows, self.buffer_blocks = int(block_rows), int(buffer_blocks)
        self.num_workers = int(num_workers)
        self.device = torch.device(device)
        self.splits = ("test",)
        self._file = None
        self._mean = self._std = None

    # h5py handles must not cross processes: open on first use, drop when pickled
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def _h5(self):
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
            self._mean = self._file["stats/mean"][:].astype(np.float32)
            self._std = np.maximum(self._file["stats/std"][:], 1e-12).astype(np.float32)
        return self._file

    def to(self, device) -> "HiggsStream":
        self.device = torch.device(device)
        return self

    @property
    def identity(self) -> str:
        """What the data is: a hash of the file's rows and statistics (amtrain.provenance), so two
        files of one name with other rows are told apart, and one file converted twice is not."""
        return h5_fingerprint(self.path, ("train/x", "train/y", "test/x", "test/y", "stats/mean", "stats/std"))

    def n_batches(self, batch_size: int) -> int:
        return -(-self.n_train // batch_size)

    def _read(self, split: str, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        x = np.empty((stop - start,) + self.in_shape, np.float32)
        y = np.empty((stop - start,), np.float32)
        self._read_into(split, start, stop, x, y)
        return x, y

    def _read_into(self, split: str, start: int, stop: int, x: np.ndarray, y: np.ndarray) -> None:
        """Rows [start, stop) of a split into the given arrays (no intermediate copies)."""
        f = self._h5()
        f[f"{split}/x"].read_direct(x, source_sel=np.s_[start:stop])
        f[f"{split}/y"].read_direct(y, source_sel=np.s_[start:stop])
        if not (np.isfinite(x).all() and np.isin(y, (0.0, 1.0)).all()):  # about 1 ms per 65,536 rows
            raise DataError(f"{self.path}: rows {start}..{stop - 1} of {split} hold NaN, inf or labels other than "
                            "0/1: the file is corrupt; convert it again with amtrain-higgs-convert")
        if self.standardize:
            x -= self._mean
            x /= self._std

    def _blocks(self, generator: torch.Generator) -> List[Tuple[int, int]]:
        starts = list(range(0, self.n_train, self.block_rows))
        order = torch.randperm(len(starts), generator=generator).tolist()
        return [(starts[i], min(starts[i] + self.block_rows, self.n_train)) for i in order]

    def iter_train(self, blocks: List[Tuple[int, int]], batch_size: int, seed: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Batches (numpy) from the given blocks, shuffled within buffers; leftovers carry over.

        One preallocated buffer holds ``buffer_blocks`` blocks plus the rows carried over;
        each batch gathers its rows through a random permutation, so every row is copied
        once and memory does not depend on the file's size.
        """
        rng = np.random.default_rng(seed)
        cap = self.buffer_blocks * self.block_rows + batch_size
        bx = np.empty((cap,) + self.in_shape, np.float32)
        by = np.empty((cap,), np.float32)
        n_carry = 0
        for i in range(0, len(blocks), self.buffer_blocks):
            n = n_carry
            for a, b in blocks[i:i + self.buffer_blocks]:
                self._read_into("train", a, b, bx[n:n + b - a], by[n:n + b - a])
                n += b - a
            perm = rng.permutation(n)
            full = n - n % batch_size
            for s in range(0, full, batch_size):
                idx = perm[s:s + batch_size]
                yield bx[idx], by[idx]  # gathered copies: the buffer can be refilled afterwards
            rest = perm[full:]
            bx[:len(rest)], by[:len(rest)] = bx[rest], by[rest]
            n_carry = len(rest)
        if n_carry:
            yield bx[:n_carry].copy(), by[:n_carry].copy()

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        blocks = self._blocks(generator)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        if self.num_workers > 0:
            loader = torch.utils.data.DataLoader(_WorkerSplit(self, blocks, batch_size, seed), batch_size=None,
                                                 num_workers=self.num_workers, persistent_workers=False)
            source = ((torch.as_tensor(x), torch.as_tensor(y)) for x, y in loader)
        else:
            source = ((torch.from_numpy(x), torch.from_numpy(y)) for x, y in self.iter_train(blocks, batch_size, seed))
        for x, y in source:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True).long()

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n = self.n_test if split == "test" else 0
        step = max(batch_size, self.block_rows)
        for start in range(0, n, step):
            x, y = self._read("test", start, min(start + step, n))
            for s in range(0, len(y), batch_size):
                yield (torch.from_numpy(x[s:s + batch_size]).to(self.device),
                       torch.from_numpy(y[s:s + batch_size]).to(self.device).long())


class _WorkerSplit(torch.utils.data.IterableDataset):
    """Worker k of n streams blocks k, k+n, ... (each worker opens the file itself)."""

    def __init__(self, stream: HiggsStream, blocks, batch_size: int, seed: int):
        self.stream, self.blocks, self.batch_size, self.seed = stream, blocks, batch_size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k, n = (info.id, info.num_workers) if info else (0, 1)
        yield from self.stream.iter_train(self.blocks[k::n], self.batch_size, self.seed + k)
