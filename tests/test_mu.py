"""mu schedules: constant, additive per batch with cap, multiplicative per epoch with cap."""
import pandas as pd
import pytest

from amtrain.optim.am.mu import AdditiveMu, MultiplicativeMu, MuSchedule, build_mu
from amtrain.train import run


def test_constant():
    mu = MuSchedule(0.003)
    for _ in range(5):
        mu.after_batch()
        mu.after_epoch()
    assert mu.value == 0.003


def test_additive_per_batch_with_cap():
    mu = AdditiveMu(0.01, d_mu=0.01, mu_max=0.035)
    values = []
    for _ in range(5):
        mu.after_batch()
        values.append(mu.value)
    mu.after_epoch()
    assert values == pytest.approx([0.02, 0.03, 0.035, 0.035, 0.035])
    assert mu.value == pytest.approx(0.035)


def test_multiplicative_per_epoch_with_cap():
    mu = MultiplicativeMu(1.0, factor=2.0, mu_max=5.0)
    mu.after_batch()
    assert mu.value == 1.0
    values = []
    for _ in range(4):
        mu.after_epoch()
        values.append(mu.value)
    assert values == [2.0, 4.0, 5.0, 5.0]


def test_mu_must_be_positive():
    with pytest.raises(ValueError):
        MuSchedule(0.0)


def test_schedules_are_built_from_configs_and_drive_runs(make_cfg, tmp_path):
    cfg = make_cfg("optim=am_adam", "mu=multiplicative", "mu.mu0=0.01", "mu.factor=2", "mu.mu_max=0.03", "epochs=3")
    assert isinstance(build_mu(cfg.mu), MultiplicativeMu)
    run(cfg, tmp_path)
    df = pd.read_csv(tmp_path / "metrics.csv")
    mu = df[(df.split == "train") & (df.metric == "mu")].sort_values("epoch").value.tolist()
    assert mu == pytest.approx([0.02, 0.03, 0.03])
    cfg = make_cfg("optim=am_adam", "mu=additive", "mu.mu0=0.01", "mu.d_mu=0.001", "mu.mu_max=1")
    run(cfg, tmp_path / "add")
    df = pd.read_csv(tmp_path / "add" / "metrics.csv")
    n_batches = 600 // 50
    assert df[(df.split == "train") & (df.metric == "mu")].value.item() == pytest.approx(0.01 + 0.001 * n_batches)
