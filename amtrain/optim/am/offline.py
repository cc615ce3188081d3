"""Offline AM (AM-Adam-off, AM-mem-off): the whole training set is one mini-batch.

One AM iteration per epoch, with the online code paths and only the schedule changed::

    C <- encodeInput(X, W)             # all n samples; every code is kept   (Alg. 2.2)
    C <- updateCodes(C, Y, W, mu)      # eqs. 4-5 for every sample           (Alg. 2.2)
    W <- updateWeights(W, X, Y, C)     # on the frozen codes of the whole set (Alg. 2.3)

The work is done in chunks of ``batch_size`` rows so it fits in memory; the codes of
all n samples are stored (n x sum of code widths floats: 48 MB for MNIST 2x100).
In paper mode the code problems separate over samples, so chunking changes nothing;
in release mode the mean-reduced losses are means over each chunk, as in the online code.

* AM-Adam-off: ``passes`` Adam passes over the frozen local problems (eq. 6) and the
  output loss, in shuffled mini-batches.
* AM-mem-off: memories summed over the whole set (reset every iteration), then the BCD
  sweeps (or the exact solve) of eq. 7; the output layer gets ``passes`` Adam passes.
"""
from __future__ import annotations

from typing import List

import torch

from amtrain.errors import ConfigError
from amtrain.optim.am.mu import build_mu
from amtrain.optim.am.online import AMAdam, AMMem, OnlineAM
from amtrain.optim.base import Trainer


class OfflineAM(Trainer):
    full_batch = True

    def __init__(self, online: OnlineAM, passes: int):
        super().__init__(online.net)
        for block in online.net.blocks:
            if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in block.modules()):
                raise ConfigError("offline AM treats the training set as one batch, which BatchNorm cannot "
                                  "express chunk by chunk: set model.batchnorm=false")
        self.am = online
        self.diverge_hint = online.diverge_hint
        self.mu = online.mu
        self.passes = int(passes)
        self.schedulers = online.schedulers

    def epoch(self, data, batch_size: int, generator: torch.Generator):
        am, net = self.am, self.net
        mu = self.mu.value
        x_all, y_all = data.x_train, data.y_train
        spans = [(s, min(s + batch_size, data.n_train)) for s in range(0, data.n_train, batch_size)]
        loss_sum = torch.zeros((), device=x_all.device)
        correct = torch.zeros((), device=x_all.device, dtype=torch.long)
        # encodeInput and updateCodes for every sample, chunk by chunk; the codes are kept
        codes: List[List[torch.Tensor]] = []
        for s, e in spans:
            x, y = x_all[s:e], y_all[s:e]
            c0 = am.encode(x)
            with torch.no_grad():
                output = net.head(net.blocks[-1].sigma(c0[-1]))
                loss_sum += net.loss(output, y, reduction="sum")
                correct += (net.predict(output) == y).sum()
            codes.append(am.update_codes(c0, y, mu))
        c_all = [torch.cat([chunk[l] for chunk in codes]) for l in range(net.L)]
        del codes
        self.codes = c_all  # the codes of this iteration, kept for diagnostics (eq. 3)
        # updateWeights on the frozen codes of the whole set
        if isinstance(am, AMMem):
            am.reset_memories()
            for s, e in spans:
                am.update_memories(self._activations(x_all[s:e], [c[s:e] for c in c_all]), [c[s:e] for c in c_all])
            am.fit_hidden_layers()
            for _ in range(self.passes):
                for idx in self._shuffled(data.n_train, batch_size, generator, x_all.device):
                    a = self._activations(x_all[idx], [c[idx] for c in c_all])
                    am.output_step(a[net.L], y_all[idx])
        else:
            for _ in range(self.passes):
                for idx in self._shuffled(data.n_train, batch_size, generator, x_all.device):
                    c = [c_l[idx] for c_l in c_all]
                    am.update_weights(self._activations(x_all[idx], c), c, y_all[idx], mu)
        self.mu.after_batch()  # one AM iteration done
        return loss_sum, correct, data.n_train

    @torch.no_grad()
    def _activations(self, x, c):
        return self.net.activations(x, c)

    @staticmethod
    def _shuffled(n: int, batch_size: int, generator: torch.Generator, device):
        order = torch.randperm(n, generator=generator).to(device)
        return [order[s:s + batch_size] for s in range(0, n, batch_size)]


class AMAdamOff(OfflineAM):
    """``optim=am_adam_off``: offline AM with AM-Adam's code and weight steps."""

    @classmethod
    def build(cls, net, cfg, mu_cfg, mode) -> "AMAdamOff":
        return cls(AMAdam(net, build_mu(mu_cfg), mode, cfg), cfg.passes)


class AMMemOff(OfflineAM):
    """``optim=am_mem_off``: offline AM with AM-mem's memories and BCD (eq. 7)."""

    @classmethod
    def build(cls, net, cfg, mu_cfg, mode) -> "AMMemOff":
        return cls(AMMem(net, build_mu(mu_cfg), mode, cfg), cfg.passes)
