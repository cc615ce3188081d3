"""Seeds as a tensor dimension: S seeds of one configuration trained in one process.

``run_seeds(cfgs, out_dirs)`` takes S configs that differ only in ``seed`` and trains them
together on a seed axis (:mod:`amtrain.models.stacked`): stacked weights (S, out, in),
batched products, each seed's batch (S, B, ...). Each seed is exactly its single run:

* its own initialisation (built after its own ``seed_everything``, then stacked) and its
  own data order (its own generator, as :func:`amtrain.train.run` draws it);
* per-seed BatchNorm statistics, gradient clipping, AM-mem memories; Adam and SGD are
  element-wise, so one optimiser over the stacked parameters is S independent ones;
* its own run folder, written as a single run writes it: ``config.yaml``, ``metrics.csv``,
  ``train.log``, ``DONE`` (or ``FAILED``), under that folder's lock.

A folder that is finished (``DONE``, with ``resume=true``) or held by another process is
left out and the rest are batched. A seed that diverges writes its ``FAILED`` while the
others go on. ``wall_time`` in each seed's metrics is the shared process's training time.

Which configs have a seed axis: :func:`unsupported` (online AM-Adam and AM-mem, SGD and
Adam, on the MLPs; on LeNet-5 on CUDA: on the CPU its grouped convolutions are slower per
seed than separate runs; AM-Adam on the Elman RNN on CUDA, where its time steps' small
kernels leave the device idle: on the CPU a stacked step costs what the separate ones do).
Sweeps group their jobs by seed automatically (:mod:`amtrain.sweep`).
"""
from __future__ import annotations

import contextlib
import logging
import traceback
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from amtrain import checkpoint, provenance
from amtrain.config import Mode, validate
from amtrain.data import build_data
from amtrain.errors import ConfigError, FolderBusy, failure_line
from amtrain.metrics import MetricsWriter
from amtrain.models import build_model
from amtrain.models.stacked import stack
from amtrain.optim import build_trainer, trainer_class
from amtrain.rundir import RunDir
from amtrain.train import (AllFailed, RunResult, Seat, _attach_log, _raise, _run_locked, _say_resume, _train,
                           resolve_device, reusable, seed_everything, stopped_run)

log = logging.getLogger("amtrain")


def unsupported(cfg: DictConfig) -> Optional[str]:
    """Why ``cfg`` cannot run on a seed axis, or None when it can."""
    if not getattr(trainer_class(cfg.optim._target_), "seed_axis", False):
        return f"optim={cfg.optim.name} has no seed axis (a process per seed)"
    if cfg.model.arch not in ("mlp", "lenet5", "rnn"):
        return (f"model={cfg.model.name} ({cfg.model.arch}) has no seed axis: the MLPs, LeNet-5 and the RNN do "
                "(a process per seed)")
    device = str(getattr(cfg.device, "value", cfg.device))
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if cfg.model.arch == "lenet5" and on_cpu:
        return ("model=lenet5 on the CPU: its grouped convolutions cost more per seed than separate runs "
                "(scripts/bench.py --seeds: 0.9x), so a process per seed")
    if cfg.model.arch == "rnn":
        if cfg.optim.name != "am_adam" or not cfg.optim.fast or cfg.optim.codes.get("order", "topdown") != "topdown":
            return (f"model=rnn has a seed axis for AM-Adam's fast top-down pass only (optim={cfg.optim.name}"
                    f"{'' if cfg.optim.name != 'am_adam' else ' with optim.fast=false or codes.order=jacobi'}: "
                    "a process per seed)")
        if on_cpu:
            return ("model=rnn on the CPU: at batch 1024 a stacked step costs what separate ones do, or more "
                    "(scripts/bench.py --seeds --models rnn: 0.84-0.99x at S = 5 on one thread), so a process per seed")
    return None


def _without_seed(cfg: DictConfig) -> dict:
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("seed", None)
    return out


def run_seeds(cfgs: Sequence[DictConfig], out_dirs: Sequence, extra_files: Optional[Sequence[Mapping]] = None,
              on_claim: Callable[[Path], None] = lambda path: None,
              on_outcome: Callable[[Path, object], None] = lambda path, outcome: None,
              group_trainer: Callable[[Path], bool] = lambda path: False) -> List[object]:
    """Train the seeds of ``cfgs`` (one config per seed, equal but for ``seed``) into ``out_dirs``.

    Returns one outcome per seed: a :class:`~amtrain.train.RunResult` (``finished`` or
    ``skipped``), or the exception that ended that seed (its folder has ``FAILED``), or
    :class:`~amtrain.errors.FolderBusy` when another process held its folder. ``on_claim``
    is called with each folder once this process holds its lock, and ``on_outcome`` with each
    folder and its outcome while the lock is still held (a sweep reports there, so that no
    other job can take the folder between the end of the run and its report). Ctrl-C and
    SIGTERM are recorded in every seed that was training, then raised.

    The folders are locked in the order given. ``group_trainer(folder)``: whether a busy folder is
    held by another process training this same group (a sweep's other job of the group, started
    at the same moment); that process takes the later folders in the same order, so this one
    leaves them to it rather than racing it for them (each would then train alone).
    """
    extra_files = list(extra_files or [None] * len(cfgs))
    for cfg in cfgs:
        validate(cfg)
    first = _without_seed(cfgs[0])
    if any(_without_seed(c) != first for c in cfgs[1:]):
        raise ValueError("run_seeds: the configs differ in more than their seed")
    if len({int(c.seed) for c in cfgs}) != len(cfgs):
        raise ValueError("run_seeds: a seed is given twice")
    outcomes: List[object] = [None] * len(cfgs)
    with contextlib.ExitStack() as held:
        todo = []
        for i, (cfg, out_dir) in enumerate(zip(cfgs, out_dirs)):
            try:
                rd = held.enter_context(RunDir(out_dir))
            except FolderBusy as e:
                outcomes[i] = e
                if group_trainer(Path(out_dir)):
                    for j in range(i + 1, len(cfgs)):
                        outcomes[j] = FolderBusy(f"left to the process that trains {out_dir} with its group")
                    break
                continue
            on_claim(rd.path)
            if cfg.resume and rd.finished:
                try:
                    reusable(rd, cfg)
                except ConfigError as e:
                    outcomes[i] = e
                    continue
                final = rd.final_metrics()
                outcomes[i] = RunResult({k: v for k, v in final.items() if k != "run_id"}, "skipped", rd.path,
                                        final.get("run_id"))
                continue
            todo.append((i, rd))
        found, members, why = _stopped_group(cfgs, todo) if len(todo) > 1 else (None, [], None)
        grouped = {i for i, _ in filter(None, members)}
        rest = [(i, rd) for i, rd in todo if i not in grouped]
        if found is not None:  # the stopped group goes on (its seeds that had failed are in rest)
            _run_batched([None if m is None else cfgs[m[0]] for m in members], [None if m is None else m[1]
                         for m in members], [None if m is None else m[0] for m in members], outcomes, found)
        if len(rest) == 1:  # one seed left: its single run, as it is
            i, rd = rest[0]
            single, single_why = stopped_run(rd, cfgs[i])
            if single is None:
                rd.begin(OmegaConf.to_yaml(cfgs[i], resolve=True), extra_files[i], provenance.line())
            try:
                outcomes[i] = RunResult(_run_locked(cfgs[i], rd, single, single_why or why), "finished", rd.path,
                                        rd.run_id, single and single.epoch)
            except Exception as e:
                outcomes[i] = e
        elif rest:
            for i, rd in rest:
                rd.begin(OmegaConf.to_yaml(cfgs[i], resolve=True), extra_files[i], provenance.line())
            _run_batched([cfgs[i] for i, _ in rest], [rd for _, rd in rest], [i for i, _ in rest], outcomes,
                         why=why)
        for out_dir, outcome in zip(out_dirs, outcomes):
            on_outcome(Path(out_dir), outcome)
    return outcomes


def _stopped_group(cfgs: Sequence[DictConfig], todo: List[tuple]):
    """(checkpoint, members, None) when the stopped seeds ``todo`` ((index, RunDir), locked) hold a
    batched group's checkpoint to go on from: ``members[k]`` is seat k's (index, RunDir), None
    for a seat that had failed; the members' folders are reopened. Else (None, [], why not)."""
    if not cfgs[0].resume:
        return None, [], None
    try:
        device = resolve_device(cfgs[0].device)
    except ConfigError:
        return None, [], None  # said by the run itself
    found, seats, why = checkpoint.find_group([rd.path for _, rd in todo], [cfgs[i] for i, _ in todo], device,
                                              [rd.begun_id for _, rd in todo])
    if found is None:
        return None, [], why
    members = [None if k is None else todo[k] for k in seats]
    if not all(m is None or m[1].can_reopen(found.run_ids[s], found.offsets[s]) for s, m in enumerate(members)):
        return None, [], "the folders' config.yaml or metrics.partial.csv do not fit their checkpoint"
    for s, m in enumerate(members):
        if m is not None:
            m[1].reopen(found.run_ids[s], found.offsets[s])
    return found, members, None


def _run_batched(cfgs: List[Optional[DictConfig]], rds: List[Optional[RunDir]], index: List[Optional[int]],
                 outcomes: List[object], found: Optional[checkpoint.Checkpoint] = None,
                 why: Optional[str] = None) -> None:
    """Train the locked folders ``rds`` together; outcome of seed k goes to ``outcomes[index[k]]``.

    New runs (begun folders), or a stopped group going on from ``found`` (reopened folders; a
    seat that had failed before the checkpoint has None for its config, folder and index).
    ``why``: why a checkpoint was not used (said in train.log)."""
    cfg = next(c for c in cfgs if c is not None)
    handlers = [_attach_log(rd.path, only=str(rd.path)) for rd in rds if rd is not None]
    for rd in filter(None, rds):
        _say_resume(rd, found, why, extra={"run_dir": str(rd.path)})
    seats: List[Seat] = []
    where = {"epoch": 0, "step": 0}

    def failer(k: int):
        def fail(err: BaseException) -> None:
            seats[k].writer.abort()
            rds[k].fail(failure_line(err, where), str(err) + "\n")
            log.error("failed: %s", failure_line(err, where), extra={"run_dir": str(rds[k].path)})
            outcomes[index[k]] = err
        return fail

    try:
        device = resolve_device(cfg.device)
        mode = Mode(cfg.mode)
        if found is None:
            nets = []
            for k, c in enumerate(cfgs):  # as each single run: seed, (data,) model
                seed_everything(c.seed, c.deterministic)
                if k == 0:
                    data = build_data(cfg.dataset).to(device)
                nets.append(build_model(c.model, data.in_shape, data.n_classes).to(device))
            net = stack(nets, data.in_shape)
            del nets
            trainer = build_trainer(cfg.optim, cfg.mu, mode, net)
            seeds = [int(c.seed) for c in cfgs]
        else:  # the random generators are the checkpoint's, set by the loop
            seed_everything(cfg.seed, cfg.deterministic)
            data = build_data(cfg.dataset).to(device)
            found.check_data(data.identity)
            net, trainer = found.objects()
            seeds = list(found.loop["seeds"])
        for k, (c, rd) in enumerate(zip(cfgs, rds)):
            if rd is None:  # failed before the checkpoint: still on the axis, no longer recorded
                seats.append(Seat(seeds[k], None, _raise))
                seats[-1].active = False
                continue
            log.info("run: dataset=%s (%d train, data %s) model=%s optim=%s mode=%s seed=%d device=%s threads=%d "
                     "-> %s (on a seed axis with seeds %s)", cfg.dataset.name, data.n_train, data.identity[:8],
                     cfg.model.name, cfg.optim.name, mode.value, c.seed, device, torch.get_num_threads(), rd.path,
                     seeds, extra={"run_dir": str(rd.path)})
            ids = {"dataset": cfg.dataset.name, "model": cfg.model.name, "optim": cfg.optim.name,
                   "mode": mode.value, "seed": c.seed, "data": data.identity, "run_id": rd.run_id}
            seats.append(Seat(int(c.seed), MetricsWriter(rd.path, ids, append=found is not None), failer(k),
                              {"run_dir": str(rd.path)}))
        saver = checkpoint.Saver(cfg, device, [rd and rd.path for rd in rds],
                                 [rd.run_id if rd is not None else found.run_ids[k] for k, rd in enumerate(rds)],
                                 data.identity)
        finals = _train(cfg, data, net, trainer, seats, device, where, saver, found)
        for k, final in enumerate(finals):
            if final is not None:
                seats[k].writer.close()
                rds[k].finish(final)
                log.info("done: %s", final, extra={"run_dir": str(rds[k].path)})
                outcomes[index[k]] = RunResult(final, "finished", rds[k].path, rds[k].run_id,
                                               found and found.epoch)
    except AllFailed:
        pass
    except BaseException as e:
        summary, details = failure_line(e, where), traceback.format_exc()
        for k, rd in enumerate(rds):
            if rd is None or (k < len(seats) and not seats[k].active):
                continue
            if k < len(seats):
                seats[k].writer.abort()
            rd.fail(summary, details)
            outcomes[index[k]] = e
        log.error("failed: %s", summary)
        if not isinstance(e, Exception):  # Ctrl-C, SIGTERM, a launcher's exit: recorded, and on its way
            raise
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
