"""``run(cfg, out_dir) -> metrics``: one training run, no Hydra needed.

Writes into ``out_dir``: ``config.yaml`` (resolved), ``train.log``, ``metrics.csv``
(long format, see :mod:`amtrain.metrics`) and, last, ``DONE``. A run that fails
writes ``FAILED`` (one line, then the traceback) and keeps everything it had written.
"""
from __future__ import annotations

import logging
import math
import random
import time
import traceback
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from amtrain.config import Mode
from amtrain.data import build_data
from amtrain.errors import AmtrainError, ConfigError, DivergenceError
from amtrain.metrics import MetricsWriter
from amtrain.models import build_model
from amtrain.optim import build_trainer
from amtrain.progress import Progress

log = logging.getLogger("amtrain")


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


def run(cfg: DictConfig, out_dir) -> Dict[str, float]:
    """Train one model as ``cfg`` says; return the final metrics (``test/acc``, ...)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("DONE", "FAILED"):
        (out_dir / stale).unlink(missing_ok=True)
    handler = _attach_log(out_dir)
    writer = None
    try:
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        seed_everything(cfg.seed, cfg.deterministic)
        device = resolve_device(cfg.device)
        data = build_data(cfg.dataset).to(device)
        net = build_model(cfg.model, data.in_shape, data.n_classes).to(device)
        mode = Mode(cfg.mode)
        trainer = build_trainer(cfg.optim, cfg.mu, mode, net)
        if trainer.full_batch and not hasattr(data, "x_train") and not getattr(trainer, "streams", False):
            raise ConfigError(f"optim={cfg.optim.name} is full batch and needs the training set in memory; "
                              f"dataset={cfg.dataset.name} is streamed: use admm or an online method")
        log.info("run: dataset=%s (%d train) model=%s optim=%s mode=%s seed=%d device=%s -> %s",
                 cfg.dataset.name, data.n_train, cfg.model.name, cfg.optim.name, mode.value,
                 cfg.seed, device, out_dir)
        ids = {"dataset": cfg.dataset.name, "model": cfg.model.name, "optim": cfg.optim.name,
               "mode": mode.value, "seed": cfg.seed}
        writer = MetricsWriter(out_dir, ids)
        final = _train(cfg, data, net, trainer, writer, device)
        writer.close()
        (out_dir / "DONE").write_text(" ".join(f"{k}={v:.6g}" for k, v in final.items()) + "\n")
        log.info("done: %s", final)
        return final
    except BaseException as e:
        if writer is not None:
            writer.abort()
        summary = str(e) if isinstance(e, AmtrainError) else f"{type(e).__name__}: {e}"
        (out_dir / "FAILED").write_text(summary + "\n\n" + traceback.format_exc())
        # into train.log only: the caller decides how to show the error on the console
        handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "failed: %s", (summary,), None))
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(cfg, data, net, trainer, writer: MetricsWriter, device) -> Dict[str, float]:
    order = torch.Generator().manual_seed(cfg.seed)
    bs, ev = cfg.batch_size, cfg.eval
    n_batches = data.n_batches(bs)
    step = samples = 0
    train_time = 0.0
    net.train()

    last = {"step": None, "metrics": {}}

    def test(epoch: int) -> Dict[str, float]:
        if last["step"] == step:  # already evaluated at this step (e.g. last batch of epoch 1)
            return last["metrics"]
        out = {}
        for split in data.splits:
            m = evaluate(net, data, split, ev.batch_size)
            writer.write(step, epoch, samples, split, m, train_time)
            out.update({f"{split}/{k}": v for k, v in m.items()})
        last.update(step=step, metrics=out)
        return out

    final = test(epoch=0)
    for epoch in range(1, cfg.epochs + 1):
        if trainer.full_batch:  # one iteration over the whole training set (offline AM, ADMM)
            t0 = time.perf_counter()
            loss_sum, correct, seen = trainer.epoch(data, bs, order)
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_time += time.perf_counter() - t0
            step += 1
            samples += seen
            _finish_epoch(trainer)
        else:
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            bar = Progress(n_batches, f"epoch {epoch}/{cfg.epochs}", enabled=cfg.progress)
            for x, y in data.train_batches(bs, order):
                t0 = time.perf_counter()
                loss, output = trainer.step(x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                train_time += time.perf_counter() - t0
                step += 1
                samples += y.shape[0]
                seen += y.shape[0]
                loss_sum += loss * y.shape[0]
                correct += (net.predict(output) == y).sum()
                first = epoch == 1 and (ev.first_epoch_batches is None or step <= ev.first_epoch_batches)
                periodic = ev.every_batches and step % ev.every_batches == 0
                if first or periodic:
                    _check_finite(loss_sum, epoch, step)
                    test(epoch)
                bar.update(1)
            bar.close()
            _finish_epoch(trainer)
        _check_finite(loss_sum, epoch, step)
        train = {"loss": loss_sum.item() / seen, "acc": correct.item() / seen}
        if getattr(trainer, "mu", None) is not None:
            train["mu"] = trainer.mu.value
        writer.write(step, epoch, samples, "train", train, train_time)
        final = dict(test(epoch))
        log.info("epoch %d: train loss %.4f acc %.4f | %s | %.1fs", epoch, train["loss"], train["acc"],
                 " ".join(f"{k} {v:.4f}" for k, v in final.items()), train_time)
    final.update({"train/loss": train["loss"], "train/acc": train["acc"], "train_time": train_time})
    return final


def _finish_epoch(trainer) -> None:
    trainer.end_epoch()  # learning-rate schedules
    if getattr(trainer, "mu", None) is not None:
        trainer.mu.after_epoch()


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    value = float(loss_sum)
    if not math.isfinite(value):
        raise DivergenceError(
            f"training diverged (loss is {value}) at epoch {epoch}, step {step}: lower the learning "
            "rates (optim.lr, optim.codes.lr) or change mu")
