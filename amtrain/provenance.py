"""What code made a run: recorded in its ``config.yaml``, compared when results are put together.

A run's second line of ``config.yaml`` reads::

    # code 3f9c0a1b2d4e5f60 git 94f68bc2a1d0 torch 2.14.1

``code`` is :func:`code_fingerprint`, a hash of what amtrain's sources compute (their syntax
trees, without comments or docstrings); ``git`` the commit of the checkout the code was
imported from (``none`` outside one); ``torch`` its version. A checkpoint resumes only under
the same code and torch (:mod:`amtrain.checkpoint`); ``scripts/aggregate.py`` says when a
cell's seeds ran under different code, and a sweep says when it skips a job that did.

What data made a run: :func:`tensors_fingerprint` of a dataset held in memory (its samples as
loaded, before any subset, so the same images from ``.gz`` or raw IDX files agree) or
:func:`h5_fingerprint` of a streamed file's rows (HIGGS). Every row of a run's ``metrics.csv``
carries it (column ``data``); ``scripts/aggregate.py`` refuses to average seeds that read
different data under one name (another copy or version of the files).
"""
from __future__ import annotations

import ast
import csv
import hashlib
import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Optional

PACKAGE = Path(__file__).resolve().parent
_LINE = re.compile(r"^# code (\S+) git (\S+) torch (\S+)")


def source_fingerprint(root: Path) -> str:
    """A hash of what the Python sources under ``root`` compute: each file's syntax tree without
    its docstrings. Comments, docstrings, blank lines and line breaks do not change it; any other
    edit (a constant, a name, a message, a new or renamed file) does."""
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        tree = ast.parse(path.read_bytes(), filename=str(path))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        h.update(str(path.relative_to(root)).encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """amtrain's :func:`source_fingerprint` (about 0.2 s, once per process)."""
    return source_fingerprint(PACKAGE)


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the git checkout amtrain is imported from (12 hex digits), or ``none``."""
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return "none"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "none"


def line() -> str:
    """This process's provenance, as a run's ``config.yaml`` records it (without the newline)."""
    import torch

    return f"# code {code_fingerprint()} git {git_commit()} torch {torch.__version__}"


def of_run(folder) -> Optional[Dict[str, str]]:
    """{code, git, torch} recorded in a run folder's ``config.yaml``; None for a run that recorded
    none (made before amtrain did, or no such file)."""
    try:
        with open(Path(folder) / "config.yaml") as fh:
            fh.readline()
            m = _LINE.match(fh.readline())
    except (OSError, UnicodeDecodeError):
        return None
    return dict(zip(("code", "git", "torch"), m.groups())) if m else None


OTHER_CODE = "on other amtrain code"
OTHER_DATA = "on other data"


def other_code(folder) -> Optional[str]:
    """Words for a run in ``folder`` that recorded other code than this process runs (e.g. a sweep
    resumed after a ``git pull``: its finished jobs are skipped, not rerun), else None."""
    then = of_run(folder)
    if then is None or then["code"] == code_fingerprint():
        return None
    return (f"{OTHER_CODE} ({then['code'][:8]}, git {then['git'][:8]}; this is {code_fingerprint()[:8]}, "
            f"git {git_commit()[:8]})")


def tensors_fingerprint(tensors: Iterable) -> str:
    """A hash of the tensors' dtypes, shapes and bytes (16 hex digits): MNIST's 70,000 images in
    about 0.12 s here."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype} {tuple(t.shape)}\0".encode())
        h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()[:16]


def h5_fingerprint(path, names: Iterable[str]) -> str:
    """A hash of the HDF5 datasets ``names`` in the file at ``path`` (dtype, shape, values; read in
    blocks of 2**20 rows), not of the file's bytes, which also hold where it was converted from:
    the same rows converted on two machines agree. Once per process for a file that has not
    changed since (same inode, size and modification time: a file converted again is a new inode)."""
    st = os.stat(path)
    return _h5_digest(str(Path(path).resolve()), tuple(names), st.st_ino, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _h5_digest(path: str, names: tuple, inode: int, size: int, mtime_ns: int) -> str:
    import h5py
    import numpy as np

    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        for name in names:
            d = f[name]
            h.update(f"{name} {d.dtype} {d.shape}\0".encode())
            for start in range(0, max(d.shape[0], 1), 1 << 20):
                h.update(memoryview(np.ascontiguousarray(d[start:start + (1 << 20)])).cast("B"))
    return h.hexdigest()[:16]


def data_of_run(folder) -> Optional[str]:
    """The data fingerprint a run's ``metrics.csv`` recorded (its first row's ``data``), or None
    (no such file, or made before runs recorded their data)."""
    try:
        with open(Path(folder) / "metrics.csv", newline="") as fh:
            reader = csv.reader(fh)
            header, row = next(reader), next(reader)
        return row[header.index("data")] or None
    except (OSError, StopIteration, ValueError, IndexError, UnicodeDecodeError, csv.Error):
        return None
