"""HIGGS text -> HDF5 (no torch needed), and the ``amtrain-higgs-convert`` command.

The UCI file ``HIGGS.csv.gz`` has 11,000,000 rows: a 0/1 label, then 28 features,
comma-separated, no header. The paper trains on the first 10,500,000 rows and tests
on the last 500,000. :func:`convert` makes one HDF5 file::

    /train/x  (n_train, 28) float32     /train/y  (n_train,) float32
    /test/x   (n_test, 28)  float32     /test/y   (n_test,)  float32
    /stats/mean, /stats/std (28,) float64   -- of the training features
    attrs: complete=True (set last), n_features, test_rows, n_train, source

in one pass with bounded memory: parsed chunks wait in a rolling buffer of the last
``test_rows`` rows; anything older is certainly training data and is written out.
The file is written under a temporary name and renamed when complete, so a killed
conversion never leaves a file that looks finished. :func:`check_file` validates one.
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np

from amtrain.errors import DataError

N_FEATURES = 28
TEST_ROWS = 500_000
FILE_NAME = "HIGGS.h5"


def default_path(root) -> Path:
    """Where ``dataset=higgs`` looks by default: <root>/HIGGS/HIGGS.h5."""
    return Path(root).expanduser() / "HIGGS" / FILE_NAME


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
                finite = np.isfinite(arr)
                if not finite.all():
                    bad = line + int((~finite).any(axis=1).argmax()) + 1
                    raise DataError(f"{path}: line {bad} has a NaN, inf or missing value (or fewer than "
                                    f"{N_FEATURES + 1} columns): the file is corrupt; download it again")
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


def check_output(sources: List[Path], dst, overwrite: bool = False) -> Path:
    """Check, before any work, that the sources exist and ``dst`` can be written without
    destroying anything: not a source, not a folder, not an existing file unless ``overwrite``."""
    from amtrain.errors import OutputError
    from amtrain.rundir import ensure_writable

    dst = Path(dst).expanduser()
    for path in sources:
        if path.suffix in (".h5", ".hdf5"):
            raise OutputError(f"{path} is given as a source but looks like an HDF5 output: name the output "
                              f"with -o, e.g. amtrain-higgs-convert HIGGS.csv.gz -o {path}")
        if not path.exists():
            raise DataError(f"HIGGS source file not found: {path} (download HIGGS.csv.gz from the UCI repository)")
        if path.resolve() == dst.resolve():
            raise OutputError(f"the output {dst} is also a source: that would overwrite the text file; give another "
                              f"-o, e.g. -o {path.with_suffix('.h5')}")
    if dst.is_dir():
        raise OutputError(f"the output {dst} is a folder: give a file name, e.g. -o {dst / FILE_NAME}")
    if dst.exists() and not overwrite:
        raise OutputError(f"the output {dst} exists: pass --force to replace it, or give another -o")
    ensure_writable(dst.parent, "output folder", "give another -o")
    return dst


def convert(src, dst, test_rows: int = TEST_ROWS, chunk_rows: int = 500_000, block_rows: int = 16384,
            compression: Optional[str] = None, progress=None, overwrite: bool = False) -> dict:
    """Convert HIGGS text (csv/tsv, optionally gzipped; one file or several read in order) to HDF5.

    The last ``test_rows`` rows become the test split. Memory stays bounded by
    ``test_rows + chunk_rows`` rows whatever the file's size. An existing ``dst`` is
    replaced only with ``overwrite``. Returns a summary.
    """
    import h5py

    sources = [Path(p).expanduser() for p in ([src] if isinstance(src, (str, os.PathLike)) else src)]
    dst = check_output(sources, dst, overwrite)
    if test_rows < 1:
        raise DataError(f"test_rows={test_rows} must be at least 1")
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


def check_file(path) -> dict:
    """Open the HDF5 file once to validate it; return its sizes. Raises DataError."""
    import h5py

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"HIGGS HDF5 file not found: {path}; convert the UCI file first: "
                        f"amtrain-higgs-convert HIGGS.csv.gz -o {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not the HIGGS HDF5 file: set dataset.path to the .h5 file")
    again = "convert it again with amtrain-higgs-convert"
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise DataError(f"{path} is an unfinished or foreign HDF5 file (no complete flag): {again}")
            for name in ("train/x", "train/y", "test/x", "test/y", "stats/mean", "stats/std"):
                if name not in f:
                    raise DataError(f"{path} has no '{name}': not a file made by amtrain-higgs-convert; {again}")
            for split in ("train", "test"):
                x, y = f[f"{split}/x"], f[f"{split}/y"]
                if x.ndim != 2 or x.shape[1] != N_FEATURES:
                    raise DataError(f"{path}: {split}/x has shape {x.shape}, HIGGS has {N_FEATURES} features per "
                                    f"row: {again}")
                if y.ndim != 1 or y.shape[0] != x.shape[0]:
                    raise DataError(f"{path}: {split} features ({x.shape[0]} rows) and labels {y.shape} differ: "
                                    f"{again}")
                if x.shape[0] == 0:
                    raise DataError(f"{path}: the {split} split is empty: {again}")
            for name in ("stats/mean", "stats/std"):
                v = f[name][()]
                if np.shape(v) != (N_FEATURES,) or not np.isfinite(v).all():
                    raise DataError(f"{path}: {name} is {'not finite' if np.shape(v) == (N_FEATURES,) else 'of shape ' + str(np.shape(v))}"
                                    f" (a NaN or inf in the training rows, or a foreign file): {again}")
            sizes = {"n_train": f["train/x"].shape[0], "n_test": f["test/x"].shape[0],
                     "n_features": f["train/x"].shape[1]}
    except DataError:
        raise
    except (OSError, KeyError) as e:
        raise DataError(f"cannot read {path} as a HIGGS HDF5 file ({type(e).__name__}: {e}): "
                        "the file is truncated or corrupt; run the conversion again") from e
    return sizes



# ----------------------------------------------------------------------------- command
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def main(argv=None) -> int:
    root = os.environ.get("AMTRAIN_DATA", "data")
    p = argparse.ArgumentParser(
        prog="amtrain-higgs-convert",
        description="Convert HIGGS.csv.gz (label first, 28 features; comma- or tab-separated, gzipped or "
                    "not) to HDF5. Several files are read in order as one; the last --test-rows rows are "
                    "the test set.")
    p.add_argument("sources", nargs="+", help="HIGGS text file(s), e.g. HIGGS.csv.gz")
    p.add_argument("-o", "--out", default=str(default_path(root)),
                   help="output HDF5 file (default: $AMTRAIN_DATA/HIGGS/HIGGS.h5, where dataset=higgs looks); "
                        "e.g. amtrain-higgs-convert HIGGS.csv.gz -o data/HIGGS/HIGGS.h5")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.add_argument("--test-rows", type=_positive, default=TEST_ROWS, help="rows at the end kept as the test set (500000)")
    p.add_argument("--chunk-rows", type=_positive, default=500_000, help="rows parsed at a time (memory)")
    p.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none",
                   help="HDF5 compression (none reads fastest)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    tty = sys.stderr.isatty()

    def progress(rows: int) -> None:
        if tty:
            sys.stderr.write(f"\r{rows:,} rows, {rows / (time.perf_counter() - t0):,.0f} rows/s\x1b[K")

    from amtrain.errors import AmtrainError

    try:
        summary = convert(args.sources, args.out, test_rows=args.test_rows, chunk_rows=args.chunk_rows,
                          compression=None if args.compression == "none" else args.compression, progress=progress,
                          overwrite=args.force)
    except AmtrainError as e:
        print(f"\namtrain-higgs-convert: error: {e}" if tty else f"amtrain-higgs-convert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\namtrain-higgs-convert: interrupted; no output file was written", file=sys.stderr)
        return 130
    dt = time.perf_counter() - t0
    rows = summary["n_train"] + summary["n_test"]
    if tty:
        sys.stderr.write("\n")
    print(f"wrote {Path(summary['path'])}: {summary['n_train']:,} train + {summary['n_test']:,} test rows "
          f"in {dt:.1f}s ({rows / dt:,.0f} rows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
