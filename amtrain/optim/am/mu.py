"""Schedules for the penalty weight mu of eq. 3.

mu grows over iterations, as in Carreira-Perpinan & Wang (2014); the release adds
``d_mu`` after each mini-batch up to ``mu_max`` (default ``d_mu = 0``: constant).
"""
from __future__ import annotations


class MuSchedule:
    """mu fixed at ``mu0``. Subclasses grow it after each batch or epoch."""

    def __init__(self, mu0: float):
        if mu0 <= 0:
            raise ValueError(f"mu0 must be > 0, got {mu0}")
        self.value = float(mu0)

    def after_batch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass


class AdditiveMu(MuSchedule):
    """mu <- min(mu + d_mu, mu_max) after every mini-batch."""

    def __init__(self, mu0: float, d_mu: float, mu_max: float):
        super().__init__(mu0)
        self.d_mu, self.mu_max = float(d_mu), float(mu_max)

    def after_batch(self) -> None:
        self.value = min(self.value + self.d_mu, self.mu_max)


class MultiplicativeMu(MuSchedule):
    """mu <- min(factor * mu, mu_max) after every epoch."""

    def __init__(self, mu0: float, factor: float, mu_max: float):
        super().__init__(mu0)
        self.factor, self.mu_max = float(factor), float(mu_max)

    def after_epoch(self) -> None:
        self.value = min(self.value * self.factor, self.mu_max)


def build_mu(cfg) -> MuSchedule:
    if cfg.name == "constant":
        return MuSchedule(cfg.mu0)
    if cfg.name == "additive":
        return AdditiveMu(cfg.mu0, cfg.d_mu, cfg.mu_max)
    if cfg.name == "multiplicative":
        return MultiplicativeMu(cfg.mu0, cfg.factor, cfg.mu_max)
    raise ValueError(f"unknown mu schedule '{cfg.name}'")
