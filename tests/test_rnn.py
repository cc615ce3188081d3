"""Elman RNN: split forward through time, recurrent code updates, AM-Adam's weight step, CLI."""
import pytest
import torch

from amtrain.cli import compose
from amtrain.config import Mode
from amtrain.errors import ConfigError
from amtrain.models import build_model
from amtrain.models.rnn import ElmanRNN
from amtrain.optim import build_trainer
from amtrain.optim.am.rnn import step_grad, step_term, top_term
from amtrain.train import run


def setup(mode="paper", seed=0, T=12, d=6):
    torch.manual_seed(seed)
    net = ElmanRNN(1, d, 3).double()
    cfg = compose(["model=rnn", "optim=am_adam", f"mode={mode}", "dataset=synthetic"])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, T, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=g)
    return net, build_trainer(cfg.optim, cfg.mu, cfg.mode, net), x, y


def test_split_forward_through_time_equals_the_fused_rnn():
    net, _, x, _ = setup()
    c = net.encode(x)
    assert c.shape == (32, 12, 6)
    torch.testing.assert_close(net.readout(c[:, -1]), net(x).detach())
    h, _ = net.rnn(net.sequence(x))
    torch.testing.assert_close(torch.tanh(c), h.detach())  # every step's hidden state


def test_closed_form_step_gradient_equals_autograd():
    net, _, x, _ = setup()
    u, c = net.drive(x).detach(), net.encode(x)
    for mode in (Mode.paper, Mode.release):
        ct = c[:, 4].clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(step_term(net, ct, u[:, 5], c[:, 5] + 0.1, 0.01, mode), ct)
        torch.testing.assert_close(step_grad(net, u[:, 5], c[:, 5] + 0.1, 0.01, mode)(c[:, 4]), ref)


@pytest.mark.parametrize("mode", ["paper", "release"])
def test_recurrent_code_updates_lower_their_subobjectives(mode):
    net, am, x, y = setup(mode)
    mu, m = 0.01, Mode(mode)
    u, c0 = net.drive(x).detach(), net.encode(x)
    c = am.update_codes(u, c0, y, mu)
    T = c.shape[1]

    def prox(a, b):
        return mu * (a - b).pow(2).sum() if m == Mode.paper else 0.0

    with torch.no_grad():
        top = lambda code: float(top_term(net, code, y, mu, m) + prox(code, c0[:, -1]))  # noqa: E731
        assert top(c[:, -1]) < top(c0[:, -1])
        for t in range(T - 1):
            f = lambda code: float(step_term(net, code, u[:, t + 1], c[:, t + 1], mu, m) + prox(code, c0[:, t]))  # noqa
            assert f(c[:, t]) <= f(c0[:, t]) + 1e-12, f"step {t}"


def test_weight_step_touches_shared_weights_only_through_local_losses():
    """Given the codes, the weight step needs no backprop through time: each step's loss sees
    only its own input and the previous code."""
    net, am, x, y = setup()
    u, c0 = net.drive(x).detach(), net.encode(x)
    c = am.update_codes(u, c0, y, 0.01)
    before = [p.detach().clone() for p in net.parameters()]
    am.update_weights(x, c, y, 0.01)
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_other_methods_refuse_the_rnn_when_composed():
    from amtrain.config import validate

    for optim in ("am_mem", "admm", "am_adam_off", "am_mem_off"):
        with pytest.raises(ConfigError, match=f"optim={optim} cannot train model=rnn"):
            validate(compose(["model=rnn", f"optim={optim}"]))
    for optim in ("am_adam", "sgd", "adam"):
        validate(compose(["model=rnn", f"optim={optim}"]))


@pytest.mark.parametrize("optim", ["am_adam", "sgd", "adam"])
def test_rnn_learns_a_sequence_problem(make_cfg, tmp_path, optim):
    """The synthetic problem read as a 20-step sequence of single values."""
    cfg = make_cfg("model=rnn", "model.hidden=16", f"optim={optim}", "epochs=8", "dataset.n_features=20")
    assert run(cfg, tmp_path)["test/acc"] > 0.45  # chance: 0.25


@pytest.mark.parametrize("init", ["orthogonal", "identity"])
def test_recurrent_init(init):
    net = build_model(compose(["model=rnn", f"model.recurrent_init={init}"]).model, (1, 28, 28), 10)
    W = net.W_h.detach()
    assert torch.allclose(W @ W.T, torch.eye(W.shape[0]), atol=1e-5)
    if init == "identity":
        assert torch.equal(W, torch.eye(W.shape[0]))
    with pytest.raises(ConfigError, match="recurrent_init"):
        build_model(compose(["model=rnn", "model.recurrent_init=zeros"]).model, (1, 28, 28), 10)


def test_gradient_clipping_bounds_the_sgd_step():
    torch.manual_seed(0)
    cfg = compose(["model=rnn", "optim=sgd", "optim.lr=1.0", "optim.grad_clip=0.01"])
    net = build_model(cfg.model, (20,), 3)
    trainer = build_trainer(cfg.optim, cfg.mu, Mode.release, net)
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    trainer.step(torch.randn(64, 20) * 10, torch.randint(0, 3, (64,)))
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert 0 < (after - before).norm() <= 0.01 * 1.0 + 1e-6  # lr * clip
