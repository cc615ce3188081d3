"""Training methods, in folders that follow the family tree:

* ``am/`` — the ICML 2019 methods (Choromanska et al.): online AM-Adam and AM-mem
  (Algorithm 2.1; the Elman RNN's AM-Adam), and their offline versions;
* ``fullbatch/`` — the full-batch auxiliary-variable methods: Taylor et al.'s ADMM (2016),
  dlADMM (Wang et al. 2019), mDLAM (Wang, Li, Zhao 2022), BCD (Zeng et al. 2019);
* ``backprop.py`` — SGD and Adam on the chain rule, the baselines.

``conf/optim/<name>.yaml`` names the one class it builds in ``_target_``;
:func:`build_trainer` imports that class and calls its ``build``. No list of methods here.
"""
from __future__ import annotations

import importlib

from amtrain.config import Mode
from amtrain.optim.base import Trainer


def trainer_class(target: str) -> type:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_trainer(optim_cfg, mu_cfg, mode: Mode, net) -> Trainer:
    """The trainer ``optim_cfg._target_`` names, built for ``net``."""
    return trainer_class(optim_cfg._target_).build(net, optim_cfg, mu_cfg, Mode(mode))


__all__ = ["Trainer", "build_trainer", "trainer_class"]
