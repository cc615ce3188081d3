"""A run's folder: one writer at a time, never silently replaced, its files tied by a run id.

A run holds an exclusive lock on ``<dir>/.lock`` (``flock``) for its whole life. The OS
drops the lock when the process ends, ``kill -9`` included, so a lock is never stale; a
second process that finds it held is told the run is in progress elsewhere
(:class:`~amtrain.errors.FolderBusy`) and touches nothing.

Under the lock, a run that starts in a folder that already holds outputs (a finished run
rerun with ``resume=false``, or an unfinished attempt that starts again) first moves them to
``<dir>/.superseded/<time>_<old run id>/``: nothing is deleted, and nothing new is written
beside another run's files. Then every file of the new run carries its run id:

* ``config.yaml`` starts with the line ``# amtrain run <id>``;
* ``metrics.csv`` has a ``run_id`` column;
* ``DONE`` starts with ``run_id=<id>``, then the final metrics.

A stopped run that goes on from its checkpoint (:mod:`amtrain.checkpoint`) keeps its run id
instead: :meth:`RunDir.reopen` cuts ``metrics.partial.csv`` back to the checkpoint and moves
what came after it aside, under the same lock.

:func:`run_ids` reads the three back, so ``scripts/aggregate.py`` can refuse a folder whose
files come from different runs. This module needs neither torch nor Hydra.
"""
from __future__ import annotations

import csv
import datetime
import fcntl
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Dict, Mapping, Optional

from amtrain.errors import FolderBusy, OutputError

LOCK = ".lock"
SUPERSEDED = ".superseded"
CONFIG, METRICS, PARTIAL, DONE, FAILED, LOG, HYDRA, CHECKPOINT = (
    "config.yaml", "metrics.csv", "metrics.partial.csv", "DONE", "FAILED", "train.log", ".hydra", "checkpoint.pt")
OUTPUTS = (CONFIG, METRICS, PARTIAL, DONE, FAILED, LOG, HYDRA, CHECKPOINT)
_HEADER = re.compile(r"^# amtrain run (\S+)")


def new_run_id() -> str:
    """Start time and 8 random hex digits: unique across processes and machines, sortable."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


def ensure_writable(path, what: str = "run folder", fix: str = "choose another hydra.run.dir") -> Path:
    """Create ``path`` (and parents) if needed and check a file can be made in it; one-line OutputError if not."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise OutputError(f"the {what} {path} is a file, not a folder: {fix}")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".amtrain-write-test-{os.getpid()}-{secrets.token_hex(2)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write the {what} {path} ({e.strerror or type(e).__name__}): {fix}") from e
    return path


def claim_new(base) -> Path:
    """A folder that did not exist: ``base``, else ``base_2``, ``base_3``, ... (created atomically)."""
    base = Path(base)
    ensure_writable(base.parent, "parent folder of the run", "choose another hydra.run.dir")
    for i in range(1, 10000):
        path = base if i == 1 else base.with_name(f"{base.name}_{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputError(f"cannot create the run folder {path} ({e.strerror}): choose another hydra.run.dir") from e
    raise OutputError(f"{base}: 10,000 run folders of that name exist already: choose another hydra.run.dir")


NAMELESS_WAIT_S = 1.0  # how long a run or a probe waits for a lock held by no named process (_take)


def _take(fd: int) -> Optional[str]:
    """Take the lock of the open lock file ``fd`` without blocking: None once taken, else who holds
    it. A holder that names no process holds it for an instant only (holder()'s probe, or a run
    between taking the lock and writing its name, or between clearing it and letting go): wait
    up to NAMELESS_WAIT_S for it rather than call the folder busy."""
    deadline = time.monotonic() + NAMELESS_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            name = os.pread(fd, 200, 0).decode(errors="replace").strip()
            if name or time.monotonic() >= deadline:
                return name or "another process"
            time.sleep(0.02)


def this_process() -> str:
    """How a lock names its holder: "pid <pid> on <host>" (then " since <time>")."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


def holder(path) -> Optional[str]:
    """Who holds ``path``'s lock now ("pid ... on host since ..."), or None. A probe that
    writes nothing: it takes the lock for an instant only if no one has it."""
    try:
        fd = os.open(Path(path) / LOCK, os.O_RDONLY)
    except OSError:  # no lock file: no run has ever held this folder
        return None
    try:
        name = _take(fd)
        if name is None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return name
    finally:
        os.close(fd)


class RunDir:
    """``with RunDir(path) as rd:`` holds the folder's lock; ``rd.begin(...)`` starts a new run in it."""

    def __init__(self, path):
        self.path = Path(path)
        self.run_id: Optional[str] = None
        self._fd: Optional[int] = None

    # ------------------------------------------------------------------ the lock
    def __enter__(self) -> "RunDir":
        ensure_writable(self.path)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        busy = _take(fd)
        if busy is not None:
            os.close(fd)
            raise FolderBusy(f"running elsewhere: {self.path} ({busy}); wait for it to finish, or use another "
                             "folder")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{this_process()} since {datetime.datetime.now():%Y-%m-%d %H:%M:%S}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)  # the lock file stays: deleting it would let two processes lock two files
            self._fd = None

    # ------------------------------------------------------------------ state
    @property
    def finished(self) -> bool:
        return (self.path / DONE).exists()

    def final_metrics(self) -> Dict[str, object]:
        """The metrics recorded in DONE (``run_id`` as text, the rest as numbers)."""
        return parse_done((self.path / DONE).read_text())

    def begin(self, config_yaml: str, extra: Optional[Mapping[str, str]] = None, provenance: str = "") -> str:
        """Move any earlier outputs aside, then write ``config.yaml`` (and ``extra`` files, e.g.
        ``.hydra/overrides.yaml``) for a new run; return its run id. ``provenance``: a comment line
        saying what code runs it (:func:`amtrain.provenance.line`), second in ``config.yaml``."""
        assert self._fd is not None, "begin() needs the lock: use `with RunDir(path) as rd`"
        self.superseded = self._supersede()
        self.run_id = new_run_id()
        header = f"# amtrain run {self.run_id}\n" + (f"{provenance}\n" if provenance else "")
        (self.path / CONFIG).write_text(header + config_yaml)
        for name, text in (extra or {}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return self.run_id

    @property
    def begun_id(self) -> Optional[str]:
        """The run id of the attempt that wrote the folder's config.yaml (None: none there)."""
        return run_ids(self.path)["config"]

    def can_reopen(self, run_id: str, offset: int) -> bool:
        """True when the stopped run ``run_id`` wrote this folder and its metrics reach ``offset`` bytes."""
        partial = self.path / PARTIAL
        return (self.begun_id == run_id and not self.finished and partial.exists()
                and partial.stat().st_size >= offset)

    def reopen(self, run_id: str, offset: int) -> str:
        """Go on with the stopped run ``run_id`` from its checkpoint (:mod:`amtrain.checkpoint`):
        keep config.yaml and train.log, cut metrics.partial.csv back to ``offset`` bytes. What the
        stopped attempt wrote after the checkpoint (FAILED, the rows past ``offset``) is moved to
        ``.superseded/<time>_<id>_after-checkpoint/``. ValueError if the files do not fit the checkpoint."""
        assert self._fd is not None, "reopen() needs the lock: use `with RunDir(path) as rd`"
        if not self.can_reopen(run_id, offset):
            raise ValueError("the folder's config.yaml or metrics.partial.csv does not fit its checkpoint")
        partial = self.path / PARTIAL
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        aside = self.path / SUPERSEDED / f"{stamp}_{run_id}_after-checkpoint"
        aside.mkdir(parents=True)
        with open(partial, "rb+") as fh:
            fh.seek(offset)
            tail = fh.read()
            if tail:
                (aside / "metrics.partial.tail.csv").write_bytes(tail)
            fh.truncate(offset)
        if (self.path / FAILED).exists():
            os.replace(self.path / FAILED, aside / FAILED)
        self.superseded = aside
        self.run_id = run_id
        return run_id

    def finish(self, final: Mapping[str, float]) -> None:
        """Write DONE (the last file of a run): the run id, then the final metrics. A checkpoint,
        which only a stopped run needs, is removed once DONE is on disk."""
        values = " ".join(f"{k}={v:.6g}" for k, v in final.items())
        _write_synced(self.path / DONE, f"run_id={self.run_id} {values}\n")
        for name in (CHECKPOINT, CHECKPOINT + ".tmp"):  # .tmp: a save that was killed half-way
            (self.path / name).unlink(missing_ok=True)

    def fail(self, summary: str, details: str) -> None:
        _write_synced(self.path / FAILED, f"{summary}\n\nrun_id={self.run_id}\n{details}")

    def _supersede(self) -> Optional[Path]:
        present = [name for name in OUTPUTS if (self.path / name).exists()]
        if not present:
            return None
        old = run_ids(self.path)
        old_id = old.get("done") or old.get("config") or "unknown"
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        aside = self.path / SUPERSEDED / f"{stamp}_{old_id}"
        aside.mkdir(parents=True)
        for name in present:
            os.replace(self.path / name, aside / name)
        return aside


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def parse_done(text: str) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for token in text.split():
        if "=" not in token:
            continue
        k, v = token.split("=", 1)
        try:
            out[k] = v if k == "run_id" else float(v)
        except ValueError:
            out[k] = v
    return out


def run_ids(path) -> Dict[str, Optional[str]]:
    """The run id each of a folder's files carries: ``config``, ``done``, ``metrics`` (None: absent or no id)."""
    path = Path(path)
    out: Dict[str, Optional[str]] = {"config": None, "done": None, "metrics": None}
    try:
        with open(path / CONFIG) as fh:
            m = _HEADER.match(fh.readline())
            out["config"] = m.group(1) if m else None
    except OSError:
        pass
    try:
        out["done"] = parse_done((path / DONE).read_text()).get("run_id")
    except OSError:
        pass
    try:
        with open(path / METRICS, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            row = next(reader)
            out["metrics"] = row[header.index("run_id")] if "run_id" in header else None
    except (OSError, StopIteration, IndexError, ValueError, csv.Error):
        pass
    return out
