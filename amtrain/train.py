"""``run(cfg, out_dir) -> metrics``: one training run, no Hydra needed.

Writes into ``out_dir``, under the folder's lock (:mod:`amtrain.rundir`): ``config.yaml``
(resolved), ``train.log``, ``metrics.csv`` (long format, see :mod:`amtrain.metrics`)
and, last, ``DONE``, all tied by one run id. A folder that already has ``DONE`` is
skipped unless ``resume=false``; earlier outputs are moved aside before a new run
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
from typing import Dict, Mapping, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from amtrain.config import Mode, validate
from amtrain.data import build_data
from amtrain.errors import AmtrainError, ConfigError, DivergenceError, Interrupted
from amtrain.metrics import MetricsWriter
from amtrain.models import build_model
from amtrain.optim import build_trainer
from amtrain.rundir import RunDir

log = logging.getLogger("amtrain")


class RunResult(dict):
    """The final metrics (``test/acc``, ...), and how the call ended: ``status`` is
    ``finished``, or ``skipped`` when the folder already held a finished run (its metrics)."""

    def __init__(self, metrics: Mapping, status: str, out_dir: Path, run_id: Optional[str]):
        super().__init__(metrics)
        self.status, self.out_dir, self.run_id = status, Path(out_dir), run_id


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


@torch.no_grad()
def evaluate(net, data, split: str, batch_size: int) -> Dict[str, float]:
    was_training = net.training
    net.eval()
    loss, correct, n = 0.0, 0, 0
    for x, y in data.eval_batches(split, batch_size):
        out = net(x)
        loss = loss + net.loss(out, y, reduction="sum")  # stays on the device until the end
        correct = correct + (net.predict(out) == y).sum()
        n += y.shape[0]
    net.train(was_training)
    return {"acc": float(correct) / n, "loss": float(loss) / n}


def _attach_log(out_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
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
            final = rd.final_metrics()
            log.info("skipping %s: already finished (DONE); resume=false reruns it", out_dir)
            return RunResult({k: v for k, v in final.items() if k != "run_id"}, "skipped", out_dir,
                             final.get("run_id"))
        run_id = rd.begin(config_yaml, extra_files)
        return RunResult(_run_locked(cfg, rd), "finished", out_dir, run_id)


def _run_locked(cfg: DictConfig, rd: RunDir) -> Dict[str, float]:
    out_dir = rd.path
    handler = _attach_log(out_dir)
    if rd.superseded is not None:
        log.info("moved the earlier outputs of %s to %s", out_dir, rd.superseded)
    writer = None
    where = {"epoch": 0, "step": 0}
    try:
        seed_everything(cfg.seed, cfg.deterministic)
        device = resolve_device(cfg.device)
        data = build_data(cfg.dataset).to(device)
        net = build_model(cfg.model, data.in_shape, data.n_classes).to(device)
        mode = Mode(cfg.mode)
        trainer = build_trainer(cfg.optim, cfg.mu, mode, net)
        if trainer.full_batch and not hasattr(data, "x_train") and not getattr(trainer, "streams", False):
            raise ConfigError(f"optim={cfg.optim.name} is full batch and needs the training set in memory; "
                              f"dataset={cfg.dataset.name} is streamed: use admm or an online method")
        log.info("run: dataset=%s (%d train) model=%s optim=%s mode=%s seed=%d device=%s threads=%d -> %s",
                 cfg.dataset.name, data.n_train, cfg.model.name, cfg.optim.name, mode.value,
                 cfg.seed, device, torch.get_num_threads(), out_dir)
        ids = {"dataset": cfg.dataset.name, "model": cfg.model.name, "optim": cfg.optim.name,
               "mode": mode.value, "seed": cfg.seed, "run_id": rd.run_id}
        writer = MetricsWriter(out_dir, ids)
        final = _train(cfg, data, net, trainer, writer, device, where)
        writer.close()
        rd.finish(final)
        log.info("done: %s", final)
        return final
    except BaseException as e:
        if writer is not None:
            writer.abort()
        summary = _summary(e, where)
        rd.fail(summary, traceback.format_exc())
        # into train.log only: the caller decides how to show the error on the console
        handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "failed: %s", (summary,), None))
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def _summary(e: BaseException, where: Mapping[str, int]) -> str:
    """FAILED's first line: the one-line reason."""
    if isinstance(e, AmtrainError):
        return str(e)
    if isinstance(e, (KeyboardInterrupt, Interrupted)):
        how = e.how if isinstance(e, Interrupted) else "Ctrl-C"
        return (f"interrupted ({how}) at epoch {where['epoch']}, step {where['step']}: rerun the same command "
                "to start it again")
    if type(e).__name__ == "UncompletedJobError":  # submitit, on SLURM's warning signal before the time limit
        return (f"stopped by SLURM before the end, at epoch {where['epoch']}, step {where['step']} ({e}): the job "
                "needs more than hydra.launcher.timeout_min")
    if isinstance(e, SystemExit):  # submitit requeues a preempted job by exiting; the requeued run starts again
        return f"stopped at epoch {where['epoch']}, step {where['step']} (exit {e.code}): requeued by the launcher"
    return f"{type(e).__name__}: {e}"


def _train(cfg, data, net, trainer, writer: MetricsWriter, device, where: Dict[str, int]) -> Dict[str, float]:
    order = torch.Generator().manual_seed(cfg.seed)
    bs, ev = cfg.batch_size, cfg.eval
    n_batches = data.n_batches(bs)
    step = samples = 0
    clock = TrainClock(device)
    guard = DivergenceGuard(cfg.divergence, net, trainer.diverge_hint)
    net.train()

    last = {"step": None, "metrics": {}}

    def test(epoch: int) -> Dict[str, float]:
        if last["step"] == step:  # already evaluated at this step (e.g. last batch of epoch 1)
            return last["metrics"]
        out, train_time = {}, clock.pause()
        for split in data.splits:
            m = evaluate(net, data, split, ev.batch_size)
            writer.write(step, epoch, samples, split, m, train_time)
            out.update({f"{split}/{k}": v for k, v in m.items()})
        last.update(step=step, metrics=out)
        clock.resume()
        return out

    final = test(epoch=0)
    for epoch in range(1, cfg.epochs + 1):
        where["epoch"] = epoch
        if trainer.full_batch:  # one iteration over the whole training set (offline AM, ADMM, ...)
            before = trainer.train_metrics(data)  # the training set before this iteration (not timed)
            clock.resume()
            with clock.step():
                during = trainer.epoch(data, bs, order)  # offline AM measures it on the way, at no cost
            loss_sum, correct, seen = during if during is not None else before
            step += 1
            where["step"] = step
            samples += seen
            if guard.first is None:
                guard.start(loss_sum / seen)
            _finish_epoch(trainer)
        else:
            clock.resume()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, file=sys.stderr,
                       disable=None if cfg.progress else True)  # None: drawn only on a terminal
            for x, y in data.train_batches(bs, order):
                with clock.step():  # no host sync here on CUDA: the clock reads the device at evaluations
                    loss, output = trainer.step(x, y)
                step += 1
                where["step"] = step
                samples += y.shape[0]
                seen += y.shape[0]
                loss_sum += loss * y.shape[0]
                correct += (net.predict(output) == y).sum()
                if guard.first is None:
                    guard.start(loss)  # the loss before the first update: one host sync, once
                first = epoch == 1 and (ev.first_epoch_batches is None or step <= ev.first_epoch_batches)
                periodic = ev.every_batches and step % ev.every_batches == 0
                if first or periodic:
                    guard.check(loss_sum, seen, epoch, step)
                    test(epoch)
                bar.update(1)
            bar.close()
            _finish_epoch(trainer)
        train_time = clock.pause()
        guard.check(loss_sum, seen, epoch, step)
        train = {"loss": loss_sum.item() / seen, "acc": correct.item() / seen}
        if getattr(trainer, "mu", None) is not None:
            train["mu"] = trainer.mu.value
        if ev.objective:  # a full-batch method's own objective after this iteration (not timed)
            train.update(trainer.objective(data))
        writer.write(step, epoch, samples, "train", train, train_time)
        final = dict(test(epoch))
        log.info("epoch %d: train loss %.4f acc %.4f | %s | %.1fs", epoch, train["loss"], train["acc"],
                 " ".join(f"{k} {v:.4f}" for k, v in final.items()), train_time)
    final.update({"train/loss": train["loss"], "train/acc": train["acc"], "train_time": train_time})
    return final


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
    """Stops a run that diverges (``divergence.*``): a NaN or inf training loss, a mean training
    loss above ``loss_factor`` times the first batch's (floored at 0.1), or a NaN or inf weight.

    Checked at every evaluation and at each epoch's end, where the loop syncs with the
    device anyway. The message names the keys of the method that is running (``hint``).
    """

    FLOOR = 0.1

    def __init__(self, cfg, net: torch.nn.Module, hint: str):
        self.factor = cfg.loss_factor
        self.check_weights = bool(cfg.check_weights)
        self.net, self.hint = net, hint
        self.first: Optional[float] = None

    def start(self, loss: torch.Tensor) -> None:
        self.first = float(loss)

    def check(self, loss_sum: torch.Tensor, seen: int, epoch: int, step: int) -> None:
        mean = float(loss_sum) / max(seen, 1)
        where = f"training diverged at epoch {epoch}, step {step}"
        if not math.isfinite(mean):
            raise DivergenceError(f"{where}: the training loss is {mean}: {self.hint}")
        if self.factor is not None and self.first is not None and math.isfinite(self.first) \
                and mean > self.factor * max(self.first, self.FLOOR):
            raise DivergenceError(
                f"{where}: the mean training loss {mean:.3g} is over {self.factor:g} times its first value "
                f"{self.first:.3g}: {self.hint}; or, if such losses are expected, raise divergence.loss_factor")
        if self.check_weights:
            finite = torch.stack([torch.isfinite(p).all() for p in self.net.parameters()]).all()
            if not bool(finite):
                raise DivergenceError(f"{where}: a weight is NaN or inf: {self.hint}")
