"""HIGGS: conversion of the UCI text file to HDF5, and mini-batches streamed from it.

The UCI file ``HIGGS.csv.gz`` has 11,000,000 rows: a 0/1 label, then 28 features,
comma-separated, no header. The paper trains on the first 10,500,000 rows and tests
on the last 500,000. :func:`convert` makes one HDF5 file::

    /train/x  (n_train, 28) float32     /train/y  (n_train,) float32
    /test/x   (n_test, 28)  float32     /test/y   (n_test,)  float32
    /stats/mean, /stats/std (28,) float64   -- of the training features
    attrs: complete=True (set last), n_features, test_rows, source

in one pass with bounded memory: parsed chunks wait in a rolling buffer of the last
``test_rows`` rows; anything older is certainly training data and is written out.
The file is written under a temporary name and renamed when complete, so a killed
conversion never leaves a file that looks finished.

:class:`HiggsStream` reads large contiguous blocks (never the whole file), shuffles
them within a buffer with a seeded generator, and yields mini-batches. ``h5py`` files
are opened lazily in the process that reads, so it works with DataLoader workers.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from amtrain.errors import DataError

N_FEATURES = 28
TEST_ROWS = 500_000
FILE_NAME = "HIGGS.h5"


# ----------------------------------------------------------------------------- conversion
def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", newline="")
    return open(path, "rt", newline="")


def _sniff_delimiter(path: Path) -> str:
    try:
        with _open_text(path) as fh:
            first = fh.readline()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} ({e}): the file is truncated or corrupt; download it again") from e
    if not first.strip():
        raise DataError(f"{path} is empty: expected rows of a label and {N_FEATURES} features")
    return "\t" if "\t" in first else ","


def _chunks(path: Path, chunk_rows: int) -> Iterator[np.ndarray]:
    """Parsed (rows, 29) float32 arrays, checking every row's width."""
    import pandas as pd

    sep = _sniff_delimiter(path)
    line = 0
    try:
        with _open_text(path) as fh:
            reader = pd.read_csv(fh, sep=sep, header=None, dtype=np.float32, chunksize=chunk_rows,
                                 engine="c", na_filter=True)
            for df in reader:
                if df.shape[1] != N_FEATURES + 1:
                    raise DataError(f"{path}: rows have {df.shape[1]} columns, expected {N_FEATURES + 1} "
                                    f"(label then {N_FEATURES} features): not a HIGGS file")
                arr = df.to_numpy(dtype=np.float32, copy=False)
                if np.isnan(arr).any():
                    bad = line + int(np.isnan(arr).any(axis=1).argmax()) + 1
                    raise DataError(f"{path}: line {bad} has missing values or fewer than "
                                    f"{N_FEATURES + 1} columns: the file is truncated or corrupt")
                line += arr.shape[0]
                yield arr
    except DataError:
        raise
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: the file ends early or is corrupt after {line} rows ({type(e).__name__}: {e}); "
                        "download it again") from e
    except (ValueError, pd.errors.ParserError) as e:
        msg = str(e).splitlines()[0]
        raise DataError(f"{path}: cannot parse rows after line {line} ({msg}): expected a label and "
                        f"{N_FEATURES} numbers per line") from e


class _Welford:
    """Running mean and variance of feature columns, in float64."""

    def __init__(self, n: int):
        self.count, self.mean, self.m2 = 0, np.zeros(n), np.zeros(n)

    def update(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        x = x.astype(np.float64)
        n_b, mean_b = len(x), x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        delta, total = mean_b - self.mean, self.count + n_b
        self.mean = self.mean + delta * n_b / total
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n_b / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count - 1, 1))


def convert(src, dst, test_rows: int = TEST_ROWS, chunk_rows: int = 500_000, block_rows: int = 16384,
            compression: Optional[str] = None, progress=None) -> dict:
    """Convert HIGGS text (csv/tsv, optionally gzipped; one file or several read in order) to HDF5.

    The last ``test_rows`` rows become the test split. Memory stays bounded by
    ``test_rows + chunk_rows`` rows whatever the file's size. Returns a summary.
    """
    import h5py

    sources = [Path(p).expanduser() for p in ([src] if isinstance(src, (str, os.PathLike)) else src)]
    dst = Path(dst).expanduser()
    for path in sources:
        if not path.exists():
            raise DataError(f"HIGGS source file not found: {path} (download HIGGS.csv.gz from the UCI repository)")
    if test_rows < 1:
        raise DataError(f"test_rows={test_rows} must be at least 1")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    stats = _Welford(N_FEATURES)
    try:
        with h5py.File(tmp, "w") as f:
            kw = dict(dtype="float32", compression=compression)
            train_x = f.create_dataset("train/x", (0, N_FEATURES), maxshape=(None, N_FEATURES),
                                       chunks=(block_rows, N_FEATURES), **kw)
            train_y = f.create_dataset("train/y", (0,), maxshape=(None,), chunks=(block_rows,), **kw)

            def append(rows: np.ndarray) -> None:
                n0 = train_x.shape[0]
                train_x.resize(n0 + len(rows), axis=0)
                train_y.resize(n0 + len(rows), axis=0)
                train_x[n0:] = rows[:, 1:]
                train_y[n0:] = rows[:, 0]
                stats.update(rows[:, 1:])

            pending: List[np.ndarray] = []  # the newest rows, at most test_rows + one chunk
            held = 0
            for chunk in (c for path in sources for c in _chunks(path, chunk_rows)):
                pending.append(chunk)
                held += len(chunk)
                while held - len(pending[0]) >= test_rows:  # the oldest chunk cannot be test data
                    held -= len(pending[0])
                    append(pending.pop(0))
                if progress:
                    progress(train_x.shape[0] + held)
            tail = np.concatenate(pending) if pending else np.zeros((0, N_FEATURES + 1), np.float32)
            if train_x.shape[0] + len(tail) <= test_rows:
                raise DataError(f"{', '.join(map(str, sources))}: {train_x.shape[0] + len(tail)} rows, not more than "
                                f"test_rows={test_rows}: nothing would be left to train on")
            append(tail[:-test_rows])
            test = tail[-test_rows:]
            f.create_dataset("test/x", data=test[:, 1:], chunks=(min(block_rows, test_rows), N_FEATURES), **kw)
            f.create_dataset("test/y", data=test[:, 0], chunks=(min(block_rows, test_rows),), **kw)
            f.create_dataset("stats/mean", data=stats.mean)
            f.create_dataset("stats/std", data=stats.std)
            n_train = train_x.shape[0]
            f.attrs.update(n_features=N_FEATURES, test_rows=test_rows, n_train=n_train,
                           source=";".join(str(p) for p in sources))
            f.attrs["complete"] = True  # last: a file without it is never used
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(dst), "n_train": n_train, "n_test": test_rows}


# ----------------------------------------------------------------------------- reading
def check_file(path) -> dict:
    """Open the HDF5 file once to validate it; return its sizes. Raises DataError."""
    import h5py

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"HIGGS HDF5 file not found: {path}; convert the UCI file first: "
                        f"amtrain-higgs-convert HIGGS.csv.gz {path}")
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise DataError(f"{path} is an unfinished or foreign HDF5 file (no complete flag): "
                                "run the conversion again")
            sizes = {"n_train": f["train/x"].shape[0], "n_test": f["test/x"].shape[0],
                     "n_features": f["train/x"].shape[1]}
            for split in ("train", "test"):
                if f[f"{split}/y"].shape[0] != f[f"{split}/x"].shape[0]:
                    raise DataError(f"{path}: {split} features and labels differ in length: convert again")
    except DataError:
        raise
    except (OSError, KeyError) as e:
        raise DataError(f"cannot read {path} as a HIGGS HDF5 file ({type(e).__name__}: {e}): "
                        "the file is truncated or corrupt; run the conversion again") from e
    return sizes


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

    def n_batches(self, batch_size: int) -> int:
        return -(-self.n_train // batch_size)

    def _read(self, split: str, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        f = self._h5()
        x = f[f"{split}/x"][start:stop]
        y = f[f"{split}/y"][start:stop]
        if self.standardize:
            x -= self._mean
            x /= self._std
        return x, y

    def _blocks(self, generator: torch.Generator) -> List[Tuple[int, int]]:
        starts = list(range(0, self.n_train, self.block_rows))
        order = torch.randperm(len(starts), generator=generator).tolist()
        return [(starts[i], min(starts[i] + self.block_rows, self.n_train)) for i in order]

    def iter_train(self, blocks: List[Tuple[int, int]], batch_size: int, seed: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Batches (numpy) from the given blocks, shuffled within buffers; leftovers carry over."""
        rng = np.random.default_rng(seed)
        carry_x = np.zeros((0,) + self.in_shape, np.float32)
        carry_y = np.zeros((0,), np.float32)
        for i in range(0, len(blocks), self.buffer_blocks):
            parts = [self._read("train", a, b) for a, b in blocks[i:i + self.buffer_blocks]]
            x = np.concatenate([carry_x] + [p[0] for p in parts])
            y = np.concatenate([carry_y] + [p[1] for p in parts])
            perm = rng.permutation(len(y))
            x, y = x[perm], y[perm]
            full = len(y) - len(y) % batch_size
            for s in range(0, full, batch_size):
                yield x[s:s + batch_size], y[s:s + batch_size]
            carry_x, carry_y = x[full:], y[full:]
        if len(carry_y):
            yield carry_x, carry_y

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


def default_path(root) -> Path:
    return Path(root).expanduser() / "HIGGS" / FILE_NAME
