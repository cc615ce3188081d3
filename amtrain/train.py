"""``run(cfg, out_dir) -> metrics``: one training run, no Hydra needed.

Writes into ``out_dir``, under the folder's lock (:mod:`amtrain.rundir`): ``config.yaml``
(resolved), ``train.log``, ``metrics.csv`` (long format, see :mod:`amtrain.metrics`)
and, last, ``DONE``, all tied by one run id. A folder that already has ``DONE`` is
skipped unless ``resume=false``, and only when its ``config.yaml`` asks for the same
computation (:func:`reusable`: a changed setting, e.g. a new tuned file, is refused, not
silently reused); earlier outputs are moved aside before a new run
writes anything. A run that fails (bad data, divergence, Ctrl-C) writes ``FAILED`` (one
line, then the traceback) and keeps everything it had written.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from amtrain import checkpoint, provenance
from amtrain.config import ENVIRONMENT_KEYS, Mode, flat_keys, validate
from amtrain.data import build_data
from amtrain.errors import ConfigError, DivergenceError, failure_line
from amtrain.metrics import MetricsWriter
from amtrain.models import build_model
from amtrain.optim import build_trainer
from amtrain.rundir import RunDir

log = logging.getLogger("amtrain")


class RunResult(dict):
    """The final metrics (``test/acc``, ...), and how the call ended: ``status`` is
    ``finished``, or ``skipped`` when the folder already held a finished run (its metrics)."""

    def __init__(self, metrics: Mapping, status: str, out_dir: Path, run_id: Optional[str],
                 resumed_after: Optional[int] = None):
        super().__init__(metrics)
        self.status, self.out_dir, self.run_id = status, Path(out_dir), run_id
        self.resumed_after = resumed_after  # the epoch of the checkpoint a stopped run went on from


RERUN_FIX = "resume=false reruns it (moving the old outputs aside), or choose another run or sweep folder"


def differences(path: Path, cfg: DictConfig) -> str:
    """How the finished run in folder ``path`` differs from what ``cfg`` asks for ("" if not at all),
    e.g. "optim.lr: 0.002 there, 0.001 now". Keys in ENVIRONMENT_KEYS are not compared, nor keys
    the folder's config.yaml lacks (an older amtrain, which had no such setting). ConfigError
    if that config.yaml cannot be read."""
    try:
        done = OmegaConf.to_container(OmegaConf.create((Path(path) / "config.yaml").read_text()))
    except Exception as e:  # missing, unreadable or not YAML
        raise ConfigError(f"{path} is finished (DONE) but its config.yaml cannot be read ({type(e).__name__}): "
                          f"{RERUN_FIX}") from None
    then, now = flat_keys(done), flat_keys(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    changed = sorted(k for k in then.keys() | now.keys()
                     if k not in ENVIRONMENT_KEYS and k in then and then[k] != now.get(k, "<absent>"))
    shown = ", ".join(f"{k}: {then[k]!r} there, {now.get(k, '<absent>')!r} now" for k in changed[:3])
    return shown + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")


def reusable(rd: RunDir, cfg: DictConfig) -> None:
    """Check that the finished run in ``rd`` computed what ``cfg`` asks for; ConfigError if not."""
    changed = differences(rd.path, cfg)
    if changed:
        raise ConfigError(f"{rd.path} finished with a different configuration ({changed}): {RERUN_FIX}")


def resolve_device(name: str) -> torch.device:
    name = str(getattr(name, "value", name))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available: use device=cpu or device=auto")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def per_copy(value) -> List[float]:
    """A number or tensor summed over a batch as one float per copy of a seed axis (one without)."""
    return torch.as_tensor(value).reshape(-1).tolist()


@torch.no_grad()
def evaluate(net, data, split: str, batch_size: int) -> List[Dict[str, float]]:
    """{acc, loss} on ``split``: one dict, or one per copy of a seed-axis net (a list of S)."""
    was_training = net.training
    net.eval()
    loss, correct, n = 0.0, 0, 0
    for x, y in data.eval_batches(split, batch_size):
        out = net(x)
        loss = loss + net.loss(out, y, reduction="sum")  # stays on the device until the end
        correct = correct + (net.predict(out) == y).sum(-1)
        n += y.shape[0]
    net.train(was_training)
    return [{"acc": c / n, "loss": l / n} for c, l in zip(per_copy(correct), per_copy(loss))]


def _attach_log(out_dir: Path, only: Optional[str] = None) -> logging.Handler:
    """Log into ``out_dir/train.log``. ``only``: this folder's lines of a batched run (records
    with another ``run_dir``, i.e. another seed's, are left out; lines without one go to all)."""
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if only is not None:
        handler.addFilter(lambda record: getattr(record, "run_dir", only) == only)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run(cfg: DictConfig, out_dir, extra_files: Optional[Mapping[str, str]] = None) -> RunResult:
    """Train one model as ``cfg`` says into ``out_dir``; return the final metrics.

    ``extra_files`` (name -> text, e.g. Hydra's ``.hydra/overrides.yaml``) are written with
    ``config.yaml`` once the folder is locked. Raises :class:`~amtrain.errors.FolderBusy`
    when another process runs in the folder.
    """
    validate(cfg)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    out_dir = Path(out_dir)
    with RunDir(out_dir) as rd:
        if cfg.resume and rd.finished:
            reusable(rd, cfg)
            final = rd.final_metrics()
            log.info("skipping %s: already finished (DONE); resume=false reruns it", out_dir)
            return RunResult({k: v for k, v in final.items() if k != "run_id"}, "skipped", out_dir,
                             final.get("run_id"))
        found, why = stopped_run(rd, cfg)
        if found is None:
            rd.begin(config_yaml, extra_files, provenance.line())
        final = _run_locked(cfg, rd, found, why)
        return RunResult(final, "finished", out_dir, rd.run_id, found and found.epoch)


def stopped_run(rd: RunDir, cfg: DictConfig):
    """(checkpoint, None) when the unfinished run in ``rd`` goes on from its checkpoint (the folder
    is reopened for it), else (None, why it does not; None: there was no checkpoint)."""
    if not cfg.resume or rd.finished:
        return None, None
    try:
        device = resolve_device(cfg.device)
    except ConfigError:
        return None, None  # said by the run itself
    found, why = checkpoint.find(rd.path, cfg, device, rd.begun_id)
    if found is not None:
        try:
            rd.reopen(found.run_ids[0], found.offsets[0])
        except ValueError as e:
            return None, str(e)
    return found, why


def _run_locked(cfg: DictConfig, rd: RunDir, found: Optional[checkpoint.Checkpoint] = None,
                why: Optional[str] = None) -> Dict[str, float]:
    """Train in the locked folder ``rd``: a new run (begun), or one going on from ``found``
    (reopened). ``why``: why a checkpoint there was not used (said in train.log)."""
    out_dir = rd.path
    handler = _attach_log(out_dir)
    _say_resume(rd, found, why)
    writer = None
    where = {"epoch": 0, "step": 0}
    try:
        seed_everything(cfg.seed, cfg.deterministic)
        device = resolve_device(cfg.device)
        data = build_data(cfg.dataset).to(device)
        mode = Mode(cfg.mode)
        if found is None:
            net = build_model(cfg.model, data.in_shape, data.n_classes).to(device)
            trainer = build_trainer(cfg.optim, cfg.mu, mode, net)
        else:
            found.check_data(data.identity)
            net, trainer = found.objects()
        if trainer.full_batch and not hasattr(data, "x_train") and not getattr(trainer, "streams", False):
            raise ConfigError(f"optim={cfg.optim.name} is full batch and needs the training set in memory; "
                              f"dataset={cfg.dataset.name} is streamed: use admm or an online method")
        log.info("run: dataset=%s (%d train, data %s) model=%s optim=%s mode=%s seed=%d device=%s threads=%d -> %s",
                 cfg.dataset.name, data.n_train, data.identity[:8], cfg.model.name, cfg.optim.name, mode.value,
                 cfg.seed, device, torch.get_num_threads(), out_dir)
        ids = {"dataset": cfg.dataset.name, "model": cfg.model.name, "optim": cfg.optim.name,
               "mode": mode.value, "seed": cfg.seed, "data": data.identity, "run_id": rd.run_id}
        writer = MetricsWriter(out_dir, ids, append=found is not None)
        saver = checkpoint.Saver(cfg, device, [out_dir], [rd.run_id], data.identity)
        (final,) = _train(cfg, data, net, trainer, [Seat(cfg.seed, writer, _raise)], device, where, saver, found)
        writer.close()
        rd.finish(final)
        log.info("done: %s", final)
        return final
    except BaseException as e:
        if writer is not None:
            writer.abort()
        summary = failure_line(e, where)
        rd.fail(summary, traceback.format_exc())
        # into train.log only: the caller decides how to show the error on the console
        handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "failed: %s", (summary,), None))
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def _say_resume(rd: RunDir, found, why: Optional[str], extra: Optional[Mapping] = None) -> None:
    """train.log's first word on how this attempt starts (after ``_attach_log``)."""
    if found is not None:
        log.info("resuming %s from its checkpoint after epoch %d (step %d); what the stopped attempt wrote "
                 "after it went to %s", rd.path, found.epoch, found.loop["step"], rd.superseded, extra=extra)
        return
    if why is not None:
        log.info("not resuming from the checkpoint in %s: %s; starting again", rd.path, why, extra=extra)
    if rd.superseded is not None:
        log.info("moved the earlier outputs of %s to %s", rd.path, rd.superseded, extra=extra)


class Seat:
    """One seed's run inside the training loop: its metrics file, its divergence state, and
    whether it is still training (a diverged seed of a batched run stops; the others go on)."""

    def __init__(self, seed: int, writer: MetricsWriter, on_fail: Callable[[BaseException], None],
                 log_extra: Optional[Mapping] = None):
        self.seed, self.writer, self.on_fail = seed, writer, on_fail
        self.log_extra = dict(log_extra or {})  # routes its log lines to its own train.log
        self.active = True

    def fail(self, err: BaseException) -> None:
        self.active = False
        self.on_fail(err)


def train_batches(data, batch_size: int, generators: List[torch.Generator], stacked: bool):
    """One epoch of mini-batches: each seed in its own order, exactly as its single run draws it.
    With a seed axis, x (S, B, ...) and y (S, B) hold the S seeds' batches of this step."""
    if not stacked:
        yield from data.train_batches(batch_size, generators[0])
        return
    if hasattr(data, "x_train"):  # in memory: one gather for all the seeds
        order = torch.stack([torch.randperm(data.n_train, generator=g) for g in generators])
        order = order.to(data.x_train.device)
        for start in range(0, data.n_train, batch_size):
            idx = order[:, start:start + batch_size]
            yield data.x_train[idx], data.y_train[idx]
        return
    for batches in zip(*(data.train_batches(batch_size, g) for g in generators)):  # streamed: S readers
        yield torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])


def _train(cfg, data, net, trainer, seats: List[Seat], device, where: Dict[str, int],
           saver: Optional[checkpoint.Saver] = None,
           start: Optional[checkpoint.Checkpoint] = None) -> List[Optional[Dict]]:
    """The training loop for one run, or for S seeds on a seed axis (``net.seeds``): per-seed
    losses, accuracies and evaluations are vectors over the seats. Returns each seat's final
    metrics (None for a seat that failed).

    ``saver`` writes checkpoints at epoch ends (when due); ``start``: the checkpoint this run
    goes on from (``net`` and ``trainer`` are its own), else the loop starts at epoch 1."""
    stacked = getattr(net, "seeds", None) is not None
    generators = [torch.Generator().manual_seed(seat.seed) for seat in seats]
    bs, ev = cfg.batch_size, cfg.eval
    first_batches, every = ev.first_epoch_batches, ev.every_batches  # plain values: no OmegaConf per step
    n_batches = data.n_batches(bs)
    step = samples = 0
    clock = TrainClock(device)
    guard = DivergenceGuard(cfg.divergence, net, trainer.diverge_hint)
    net.train()

    last = {"step": None, "metrics": [{}] * len(seats)}

    def test(epoch: int) -> List[Dict[str, float]]:
        if last["step"] == step:  # already evaluated at this step (e.g. last batch of epoch 1)
            return last["metrics"]
        out, train_time = [{} for _ in seats], clock.pause()
        for split in data.splits:
            for seat, m, o in zip(seats, evaluate(net, data, split, ev.batch_size), out):
                if seat.active:
                    seat.writer.write(step, epoch, samples, split, m, train_time)
                o.update({f"{split}/{k}": v for k, v in m.items()})
        last.update(step=step, metrics=out)
        clock.resume()
        return out

    def check(loss_sum, seen: int, epoch: int) -> None:
        for seat, problem in zip(seats, guard.problems(loss_sum, seen, epoch, step)):
            if problem is not None and seat.active:
                seat.fail(DivergenceError(problem))
        if not any(seat.active for seat in seats):
            raise AllFailed()

    first_epoch = 1
    if start is None:
        final = test(epoch=0)
    else:  # the loop as it stood after epoch start.epoch
        loop = start.loop
        first_epoch, step, samples = loop["epoch"] + 1, loop["step"], loop["samples"]
        clock.total, guard.first = loop["train_time"], loop["guard_first"]
        for g, state in zip(generators, loop["generators"]):
            g.set_state(state)
        for seat, active in zip(seats, start.active):
            seat.active = active
        where.update(epoch=loop["epoch"], step=step)
        start.restore_rng()
    for epoch in range(first_epoch, cfg.epochs + 1):
        where["epoch"] = epoch
        if trainer.full_batch:  # one iteration over the whole training set (offline AM, ADMM, ...)
            before = trainer.train_metrics(data)  # the training set before this iteration (not timed)
            clock.resume()
            with clock.step():
                during = trainer.epoch(data, bs, generators[0])  # offline AM measures it on the way, at no cost
            loss_sum, correct, seen = during if during is not None else before
            step += 1
            where["step"] = step
            samples += seen
            if guard.first is None:
                guard.start(loss_sum / seen)
            _finish_epoch(trainer)
        else:
            clock.resume()
            shape = (len(seats),) if stacked else ()
            loss_sum = torch.zeros(shape, device=device)
            correct = torch.zeros(shape, device=device, dtype=torch.long)
            seen = 0
            bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, file=sys.stderr,
                       disable=None if cfg.progress else True)  # None: drawn only on a terminal
            for x, y in train_batches(data, bs, generators, stacked):
                with clock.step():  # no host sync here on CUDA: the clock reads the device at evaluations
                    loss, output = trainer.step(x, y)
                n = y.shape[-1]
                step += 1
                where["step"] = step
                samples += n
                seen += n
                loss_sum += loss * n
                correct += (net.predict(output) == y).sum(-1)
                if guard.first is None:
                    guard.start(loss)  # the loss before the first update: one host sync, once
                first = epoch == 1 and (first_batches is None or step <= first_batches)
                periodic = every and step % every == 0
                if first or periodic:
                    check(loss_sum, seen, epoch)
                    test(epoch)
                bar.update(1)
            bar.close()
            _finish_epoch(trainer)
        train_time = clock.pause()
        check(loss_sum, seen, epoch)
        extra = {"mu": trainer.mu.value} if getattr(trainer, "mu", None) is not None else {}
        if ev.objective:  # a full-batch method's own objective after this iteration (not timed)
            extra.update(trainer.objective(data))
        train = [{"loss": l / seen, "acc": c / seen, **extra}
                 for l, c in zip(per_copy(loss_sum), per_copy(correct))]
        for seat, t in zip(seats, train):
            if seat.active:
                seat.writer.write(step, epoch, samples, "train", t, train_time)
        final = [dict(m) for m in test(epoch)]
        for seat, t, f in zip(seats, train, final):
            if seat.active:
                log.info("epoch %d%s: train loss %.4f acc %.4f | %s | %.1fs", epoch,
                         f" seed {seat.seed}" if stacked else "", t["loss"], t["acc"],
                         " ".join(f"{k} {v:.4f}" for k, v in f.items()), train_time, extra=seat.log_extra)
        if saver is not None and epoch < cfg.epochs and saver.due():
            loop = {"epoch": epoch, "step": step, "samples": samples, "train_time": train_time,
                    "seeds": [seat.seed for seat in seats], "guard_first": guard.first,
                    "generators": [g.get_state() for g in generators]}
            saver.save(net, trainer, loop, [seat.writer.offset() if seat.active else 0 for seat in seats],
                       [seat.active for seat in seats])
    for t, f in zip(train, final):
        f.update({"train/loss": t["loss"], "train/acc": t["acc"], "train_time": train_time})
    return [f if seat.active else None for seat, f in zip(seats, final)]


def _raise(err: BaseException) -> None:
    raise err


class AllFailed(Exception):
    """Every seat of the loop has failed (each has recorded why): nothing is left to train."""


class TrainClock:
    """Training seconds, evaluation excluded.

    On the CPU each step is timed on its own (``with clock.step()``), as before. On CUDA the
    steps are queued without a host sync; the clock reads the device once at each evaluation
    point (``pause``), and counts the time between two readings, data loading included, so
    timing costs no sync per step. ``resume`` starts counting again after an evaluation."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.total = 0.0
        self._since: Optional[float] = None

    @contextlib.contextmanager
    def step(self):
        t0 = time.perf_counter()
        yield
        if not self.cuda:
            self.total += time.perf_counter() - t0

    def pause(self) -> float:
        if self.cuda and self._since is not None:
            torch.cuda.synchronize()
            self.total += time.perf_counter() - self._since
        self._since = None
        return self.total

    def resume(self) -> None:
        self._since = time.perf_counter() if self.cuda else None


def _finish_epoch(trainer) -> None:
    trainer.end_epoch()  # learning-rate schedules
    if getattr(trainer, "mu", None) is not None:
        trainer.mu.after_epoch()


class DivergenceGuard:
    """Finds runs that diverge (``divergence.*``): a NaN or inf training loss, a mean training
    loss above ``loss_factor`` times the first batch's (floored at 0.1), or a NaN or inf weight.

    Checked at every evaluation and at each epoch's end, where the loop syncs with the
    device anyway. Per seed on a seed axis (losses (S,), weights (S, ...)). The message names
    the keys of the method that is running (``hint``).
    """

    FLOOR = 0.1

    def __init__(self, cfg, net: torch.nn.Module, hint: str):
        self.factor = cfg.loss_factor
        self.check_weights = bool(cfg.check_weights)
        self.net, self.hint = net, hint
        self.copies = getattr(net, "seeds", None) or 1
        self.first: Optional[List[float]] = None

    def start(self, loss: torch.Tensor) -> None:
        self.first = per_copy(loss)

    def problems(self, loss_sum: torch.Tensor, seen: int, epoch: int, step: int) -> List[Optional[str]]:
        """One message per seed that diverged, None for the others."""
        means = [v / max(seen, 1) for v in per_copy(loss_sum)]
        finite = [True] * self.copies
        if self.check_weights:
            finite = torch.stack([torch.isfinite(p).reshape(self.copies, -1).all(1)
                                  for p in self.net.parameters()]).all(0).tolist()
        where = f"training diverged at epoch {epoch}, step {step}"
        out = []
        for mean, first, ok in zip(means, self.first or [None] * len(means), finite):
            if not math.isfinite(mean):
                out.append(f"{where}: the training loss is {mean}: {self.hint}")
            elif self.factor is not None and first is not None and math.isfinite(first) \
                    and mean > self.factor * max(first, self.FLOOR):
                out.append(f"{where}: the mean training loss {mean:.3g} is over {self.factor:g} times its first "
                           f"value {first:.3g}: {self.hint}; or, if such losses are expected, raise "
                           "divergence.loss_factor")
            elif not ok:
                out.append(f"{where}: a weight is NaN or inf: {self.hint}")
            else:
                out.append(None)
        return out
