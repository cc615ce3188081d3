"""Offline AM (AM-Adam-off, AM-mem-off): one AM iteration per epoch over the whole set."""
import pytest
import torch

from amtrain.cli import compose
from amtrain.data import build_data
from amtrain.models import build_model
from amtrain.optim import build_trainer
from amtrain.optim.am.online import objective


def setup(*overrides, seed=0):
    cfg = compose(["dataset=synthetic", "dataset.n_train=400", "dataset.n_test=100", "device=cpu", "progress=false",
                   "mode=paper", "model.hidden=[16,12]", *overrides])
    torch.manual_seed(seed)
    data = build_data(cfg.dataset)
    net = build_model(cfg.model, data.in_shape, data.n_classes).double()
    data.x_train, data.x_test = data.x_train.double(), data.x_test.double()
    return build_trainer(cfg.optim, cfg.mu, cfg.mode, net), data, cfg


def hidden_weights(trainer):
    return [torch.cat([b.linear().weight, b.linear().bias[:, None]], 1).detach().clone() for b in trainer.net.blocks]


def test_am_mem_off_fits_each_layer_to_all_codes_at_once():
    """With the exact solver, W_l is the least-squares fit over the whole set, however it is chunked."""
    results = []
    for batch_size in (50, 400):
        off, data, _ = setup("optim=am_mem_off", "optim.solver=exact", "optim.ridge=0")
        off.epoch(data, batch_size, torch.Generator().manual_seed(0))
        a = off.net.activations(data.x_train, off.codes)
        for l, W in enumerate(hidden_weights(off)):
            ones = torch.ones(len(a[l]), 1, dtype=a[l].dtype)
            ref = torch.linalg.lstsq(torch.cat([a[l], ones], 1), off.codes[l]).solution.T
            torch.testing.assert_close(W, ref, rtol=1e-6, atol=1e-8)
        results.append(hidden_weights(off))
    for W50, W400 in zip(*results):  # paper mode: the code problems separate over samples
        torch.testing.assert_close(W50, W400, rtol=1e-6, atol=1e-8)


def test_offline_objective_eq3_does_not_increase_over_the_first_iterations():
    off, data, cfg = setup("optim=am_mem_off", "optim.solver=exact", "optim.ridge=1e-8", "optim.passes=20",
                           "optim.codes.lr=0.05", "mu.mu0=0.1")
    values = []
    for _ in range(5):
        off.epoch(data, 50, torch.Generator().manual_seed(0))
        values.append(objective(off.net, data.x_train, data.y_train, off.codes, cfg.mu.mu0))
    assert all(v2 <= v1 * (1 + 1e-6) for v1, v2 in zip(values, values[1:])), values
    assert values[-1] < values[0]


@pytest.mark.parametrize("optim", ["am_adam_off", "am_mem_off"])
def test_one_iteration_per_epoch_uses_every_sample(optim):
    off, data, _ = setup(f"optim={optim}")
    loss_sum, correct, n = off.epoch(data, 50, torch.Generator())
    assert n == data.n_train and [c.shape[0] for c in off.codes] == [data.n_train] * off.net.L
    assert torch.isfinite(loss_sum) and 0 <= int(correct) <= n


def test_offline_refuses_batchnorm():
    from amtrain.errors import ConfigError

    with pytest.raises(ConfigError, match="batchnorm=false"):
        setup("optim=am_adam_off", "model.batchnorm=true")
