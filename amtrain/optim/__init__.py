"""Training methods: config -> :class:`Trainer`.

``conf/optim/<name>.yaml`` builds the class named here.
"""
from __future__ import annotations

from amtrain.config import Mode
from amtrain.errors import ConfigError
from amtrain.models.rnn import ElmanRNN
from amtrain.optim.admm import ADMM
from amtrain.optim.am import AMAdam, AMMem, OnlineAM
from amtrain.optim.am_rnn import AMAdamRNN
from amtrain.optim.backprop import Backprop, adam, sgd
from amtrain.optim.offline import OfflineAM
from amtrain.optim.base import Trainer
from amtrain.optim.mu import build_mu


def build_trainer(optim_cfg, mu_cfg, mode: Mode, net) -> Trainer:
    name = optim_cfg.name
    if isinstance(net, ElmanRNN) and name not in ("sgd", "adam", "am_adam"):
        raise ConfigError(f"optim={name} is not implemented for model=rnn: use am_adam, sgd or adam")
    if isinstance(net, ElmanRNN) and name == "am_adam":
        return AMAdamRNN(net, build_mu(mu_cfg), mode, optim_cfg)
    if name == "sgd":
        return sgd(net, optim_cfg)
    if name == "adam":
        return adam(net, optim_cfg)
    if name == "am_adam":
        return AMAdam(net, build_mu(mu_cfg), mode, optim_cfg)
    if name == "am_mem":
        return AMMem(net, build_mu(mu_cfg), mode, optim_cfg)
    if name == "am_adam_off":
        return OfflineAM(AMAdam(net, build_mu(mu_cfg), mode, optim_cfg), optim_cfg.passes)
    if name == "am_mem_off":
        return OfflineAM(AMMem(net, build_mu(mu_cfg), mode, optim_cfg), optim_cfg.passes)
    if name == "admm":
        return ADMM(net, optim_cfg)
    raise ConfigError(f"unknown optim '{name}'")


__all__ = ["ADMM", "AMAdam", "AMMem", "Backprop", "OfflineAM", "OnlineAM", "Trainer", "build_trainer"]
