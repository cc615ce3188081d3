"""Checkpoints: a run that is stopped goes on from where it was, to the numbers it would have had.

At the end of an epoch (for a full-batch method, an iteration), once ``checkpoint.every_minutes``
have passed since the run started or last saved, a run writes ``checkpoint.pt`` into its folder,
atomically (a temporary file, then a rename, so a run killed while saving keeps the one before):

* the network and its training method, pickled together by ``torch.save``: the optimiser's
  moments, the mu schedule, AM-mem's memories, a full-batch method's per-sample state
  (z, a, u, rho, ...) all come back as they were, shared tensors still shared;
* every random generator (Python's, NumPy's, torch's CPU and CUDA ones, and each seed's data order);
* the loop's counters (epoch, step, samples seen, training seconds, the divergence guard's first
  loss) and, per seed, how far its ``metrics.partial.csv`` had been written (a byte offset);
* what it may only be resumed with: the run id, the resolved config, amtrain's source
  (:func:`amtrain.provenance.code_fingerprint`: its syntax, not its comments or docstrings),
  torch's version and the device type.

When the same command runs again (``resume=true``) into a folder with no ``DONE`` and a usable
checkpoint, the run goes on (:meth:`amtrain.rundir.RunDir.reopen`): the same run id, its
``metrics.partial.csv`` cut back to the checkpoint and written on, ``train.log`` appended to.
What the stopped attempt wrote after the checkpoint (its ``FAILED``, its later metric rows) is
moved to ``.superseded/``, not deleted. The resumed run's metrics equal an uninterrupted run's,
bit for bit, but for ``wall_time`` (tests/test_checkpoint.py). A checkpoint that cannot be used
(another config or amtrain, unreadable, ...) is said in ``train.log`` and the run starts again,
with the old outputs moved aside as before. ``DONE`` removes the checkpoint: it is for resuming,
not for keeping.

A batched seed group (:mod:`amtrain.seeds`) writes the whole group's state into every seed's
folder, with the group's seeds and run ids; it resumes when the same seeds are rerun together.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig

from amtrain.config import computed_config
from amtrain.errors import DataError
from amtrain.provenance import code_fingerprint

log = logging.getLogger("amtrain")

NAME = "checkpoint.pt"
FORMAT = 1


class NotCheckpointable(TypeError):
    """Raised while pickling state that cannot go into a checkpoint (the message says which)."""


def computed_keys(cfg: DictConfig) -> Dict[str, object]:
    """The flat resolved config without the keys that do not change what is computed, nor the
    seed (a batched group's seeds share one checkpoint: each seat's seed is checked on its own)."""
    return {k: v for k, v in computed_config(cfg).items() if k != "seed"}


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _identity(cfg: DictConfig, device: torch.device) -> dict:
    return {"format": FORMAT, "code": code_fingerprint(), "torch": torch.__version__, "device": device.type,
            "config": computed_keys(cfg)}


class Saver:
    """Writes the checkpoints of one run, or of one batched seed group into each of its folders.

    ``folders``: the seeds' run folders (one for a single run), in seat order; ``run_ids`` theirs."""

    def __init__(self, cfg: DictConfig, device: torch.device, folders: Sequence[Path], run_ids: Sequence[str],
                 data: str = ""):
        every = cfg.checkpoint.every_minutes
        self.every_s = None if every is None else 60.0 * float(every)
        self.identity = dict(_identity(cfg, device), data=data)  # data: the dataset's fingerprint (provenance)
        self.folders, self.run_ids = [None if f is None else Path(f) for f in folders], list(run_ids)
        self.last = time.monotonic()
        self.off_reason: Optional[str] = None

    def due(self) -> bool:
        return self.every_s is not None and self.off_reason is None and time.monotonic() - self.last >= self.every_s

    def save(self, net, trainer, loop: dict, offsets: List[int], active: List[bool]) -> None:
        """Write the state after an epoch into every folder (``offsets``/``active``: per seat)."""
        t0 = time.perf_counter()
        payload = dict(self.identity, run_ids=self.run_ids, offsets=offsets, active=active, loop=loop,
                       rng=rng_state(), objects=(net, trainer))
        folders = [folder for folder, on in zip(self.folders, active) if on]
        try:
            _write_atomic(folders[0] / NAME, lambda fh: torch.save(payload, fh))
            for folder in folders[1:]:  # the other seeds of a batched group: the same file
                _link_atomic(folders[0] / NAME, folder / NAME)
        except Exception as e:  # state that cannot be pickled, a full disk, ...: the run goes on without
            self.off_reason = str(e) if isinstance(e, NotCheckpointable) else f"{type(e).__name__}: {e}"
            for folder in self.folders:
                if folder is not None:
                    (folder / (NAME + ".tmp")).unlink(missing_ok=True)
            log.warning("no more checkpoints for this run (it goes on): %s", self.off_reason)
            return
        self.last = time.monotonic()
        size = (folders[0] / NAME).stat().st_size
        log.info("checkpoint after epoch %d (step %d): %.1f MB%s in %.1f s", loop["epoch"], loop["step"],
                 size / 2**20, f", one file in each of {len(folders)} seed folders" if len(folders) > 1 else "",
                 time.perf_counter() - t0)


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(fh)`` into ``path``'s temporary file, synced, then renamed over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _link_atomic(source: Path, path: Path) -> None:
    """``path`` becomes another name of the file ``source`` (a hard link, atomically): a batched
    group's checkpoint holds every seed, so S copies would cost S times its size on disk. A file
    is never changed in place (each save is a new file renamed over the old), so the names stay
    in step. Where the folders cannot share a file (another file system), a copy."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        _write_atomic(path, lambda fh: _copy(source, fh))
        return
    os.replace(tmp, path)
    tmp.unlink(missing_ok=True)  # (were path already that file, the rename would leave both names)


def _copy(source: Path, fh: BinaryIO) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, fh, 2**24)


class Checkpoint:
    """A loaded ``checkpoint.pt`` that :func:`find` judged usable."""

    def __init__(self, payload: dict):
        self.payload = payload
        self.run_ids: List[str] = payload["run_ids"]
        self.offsets: List[int] = payload["offsets"]
        self.active: List[bool] = payload["active"]
        self.loop: dict = payload["loop"]

    @property
    def epoch(self) -> int:
        return int(self.loop["epoch"])

    def objects(self) -> Tuple[torch.nn.Module, object]:
        """(net, trainer) as they were saved, already on the run's device."""
        return self.payload["objects"]

    def restore_rng(self) -> None:
        set_rng_state(self.payload["rng"])

    def check_data(self, identity: str) -> None:
        """DataError when the dataset read now is not the one the stopped run read (its files were
        replaced meanwhile): going on would train one run on two datasets."""
        then = self.payload.get("data", "")
        if then and then != identity:
            raise DataError(f"the dataset changed since this run stopped (data {then[:8]} then, {identity[:8]} now): "
                            "put the same files back to go on from its checkpoint, or rerun with resume=false to "
                            "start again on these")


def _load(folder: Path, cfg: DictConfig, device: torch.device) -> Tuple[Optional[dict], Optional[str]]:
    """The folder's checkpoint if this amtrain and config may go on from it, else (None, why not;
    None: there is no checkpoint)."""
    path = Path(folder) / NAME
    if not path.exists():
        return None, None
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
        identity = {k: payload[k] for k in ("format", "code", "torch", "device", "config")}
        for k in ("run_ids", "offsets", "active", "loop"):
            payload[k]
    except Exception as e:  # truncated, corrupt, or written by an amtrain whose classes are gone
        return None, f"it cannot be read ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]})"
    want = _identity(cfg, device)
    if identity["format"] != FORMAT:
        return None, f"it is of format {identity['format']}, this amtrain writes {FORMAT}"
    if identity["code"] != want["code"] or identity["torch"] != want["torch"]:
        return None, "amtrain's code or torch's version changed since it was written"
    if identity["device"] != want["device"]:
        return None, f"it was written on {identity['device']}, this run is on {want['device']}"
    if identity["config"] != want["config"]:
        changed = sorted(k for k in identity["config"].keys() | want["config"].keys()
                         if identity["config"].get(k, "<absent>") != want["config"].get(k, "<absent>"))
        return None, f"the config changed since ({', '.join(changed[:3])})"
    return payload, None


def find(folder: Path, cfg: DictConfig, device: torch.device,
         run_id: Optional[str]) -> Tuple[Optional[Checkpoint], Optional[str]]:
    """The checkpoint of the single run ``run_id`` (the id of the folder's config.yaml) if it can
    go on from it, else (None, why not; None: there is no checkpoint)."""
    payload, why = _load(folder, cfg, device)
    if payload is None:
        return None, why
    if len(payload["run_ids"]) != 1:
        return None, (f"it holds a batched group of {len(payload['run_ids'])} seeds, which resumes only when "
                      "they are rerun together (the same sweep)")
    if payload["run_ids"][0] != run_id or payload["loop"]["seeds"] != [int(cfg.seed)]:
        return None, "it belongs to another run than the folder's config.yaml"
    return Checkpoint(payload), None


def find_group(folders: Sequence[Path], cfgs: Sequence[DictConfig], device: torch.device,
               run_ids: Sequence[Optional[str]]) -> Tuple[Optional[Checkpoint], List[int], Optional[str]]:
    """A batched seed group's checkpoint that ``folders`` (stopped runs with ``run_ids``) go on from.

    Returns (checkpoint, members, None): ``members[k]`` is the index in ``folders`` of the
    group's seat k (None for a seat that had failed, whose folder is not resumed); every member
    folder holds the same checkpoint. Folders left out of ``members`` start again. Else
    (None, [], why not; None: no folder has a checkpoint)."""
    loaded = [_load(f, c, device) for f, c in zip(folders, cfgs)]
    first = next((k for k, (p, _) in enumerate(loaded) if p is not None), None)
    if first is None:
        why = next((w for _, w in loaded if w is not None), None)
        return None, [], why
    group = loaded[first][0]
    members: List[Optional[int]] = []
    for seat, (rid, active) in enumerate(zip(group["run_ids"], group["active"])):
        if not active:
            members.append(None)
            continue
        k = next((k for k, r in enumerate(run_ids) if r == rid), None)
        payload = loaded[k][0] if k is not None else None
        same = payload is not None and payload["run_ids"] == group["run_ids"] \
            and payload["loop"]["step"] == group["loop"]["step"] and int(cfgs[k].seed) == group["loop"]["seeds"][seat]
        if not same:
            return None, [], ("the seeds of its batched group are not all rerun together with the same checkpoint "
                              f"(seat {seat}'s folder is missing or differs)")
        members.append(k)
    return Checkpoint(group), members, None
