"""The fast path (optim.fast) equals autograd's reference: closed-form gradients of the
code and weight sub-problems, and the encoding's products reused. Same codes, weights, BN state."""
import copy

import pytest
import torch
from torch import nn

from amtrain.config import Mode
from amtrain.models import mlp
from amtrain.optim.am.online import AMAdam, AMMem
from amtrain.optim.am.codes import hidden_data_grad, hidden_data_term, top_data_grad, top_data_term
from amtrain.optim.am.linear_bn import LinearBN
from amtrain.optim.am.mu import MuSchedule
from conftest import am_adam_cfg


CASES = [(Mode.release, "relu", 10), (Mode.paper, "relu", 10), (Mode.paper, "tanh", 10), (Mode.release, "tanh", 1),
         (Mode.paper, "relu", 1)]
STEP_CASES = CASES + [(Mode.release, "sign", 10)]  # sign: codes by autograd, weights in closed form


def net_for(mode, act, n_out, seed=0):
    torch.manual_seed(seed)
    bn = mode == Mode.release
    return mlp((20,), n_out, [32, 24, 16], act, batchnorm=bn, hidden_bias=not bn).double()


def data(n_out, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, max(n_out, 2), (64,), generator=g)
    return x, y


@pytest.mark.parametrize("mode, act, n_out", CASES)
def test_closed_form_gradients_equal_autograd(mode, act, n_out):
    net = net_for(mode, act, n_out).eval()  # eval: BN uses running statistics, nothing moves
    x, y = data(n_out)
    c = [t + 0.1 * torch.randn_like(t) for t in net.encode(x)]
    mu = 0.01
    for train in (False, True):
        net.train(train)
        cc = c[-1].clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(top_data_term(net, cc, y, mu, mode), cc)
        torch.testing.assert_close(top_data_grad(net, y, mu, mode)(c[-1]), ref)
        for l in range(net.L - 1):
            ref_net, fast_net = copy.deepcopy(net), copy.deepcopy(net)
            cc = c[l].clone().requires_grad_(True)
            (ref,) = torch.autograd.grad(hidden_data_term(ref_net, l, cc, c[l + 1], mu, mode), cc)
            torch.testing.assert_close(hidden_data_grad(fast_net, l, c[l + 1], mu, mode)(c[l]), ref)
            for p, q in zip(ref_net.buffers(), fast_net.buffers()):  # BN running statistics moved alike
                torch.testing.assert_close(p, q)


def am_adam_pair(mode, act="relu", n_out=10):
    """The same network twice, trained by the reference (autograd) and the fast AM-Adam."""
    reference, fast = net_for(mode, act, n_out), net_for(mode, act, n_out)
    am_ref = AMAdam(reference, MuSchedule(0.003), mode, am_adam_cfg(0.008, fast=False))
    am_fast = AMAdam(fast, MuSchedule(0.003), mode, am_adam_cfg(0.008, fast=True))
    return reference, fast, am_ref, am_fast


def assert_same_state(net_a, net_b):
    for p, q in zip(list(net_a.parameters()) + list(net_a.buffers()), list(net_b.parameters()) + list(net_b.buffers())):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("mode, act, n_out", CASES)
def test_fast_and_reference_paths_give_the_same_step(mode, act, n_out):
    reference, fast, am_ref, am_fast = am_adam_pair(mode, act, n_out)
    for seed in range(3):
        x, y = data(n_out, seed)
        c_ref = am_ref.update_codes(am_ref.encode(x), y, 0.003)
        c_fast = am_fast.update_codes(am_fast.encode(x), y, 0.003)
        for a, b in zip(c_ref, c_fast):
            torch.testing.assert_close(a, b)
        am_ref.update_weights(reference.activations(x, c_ref), c_ref, y, 0.003)
        am_fast.update_weights(fast.activations(x, c_fast), c_fast, y, 0.003)
        assert_same_state(reference, fast)


def am_mem_cfg(fast):
    class Cfg:
        class codes:
            lr, iters, momentum, nesterov, sign_step = 0.3, 5, 0.9, True, "ste"

        class schedule:
            step_epochs, gamma = 0, 0.5

    Cfg.bcd_sweeps, Cfg.forget, Cfg.solver, Cfg.ridge, Cfg.lr, Cfg.betas = 1, 1.0, "bcd", 10.0, 0.008, (0.9, 0.999)
    Cfg.fast = fast
    return Cfg


@pytest.mark.parametrize("mode, act, n_out", STEP_CASES)
def test_whole_steps_agree_with_the_reference(mode, act, n_out):
    """Trainer.step end to end: the reuse of z_1 in layer 1's weight step only happens here."""
    reference, fast, am_ref, am_fast = am_adam_pair(mode, act, n_out)
    for seed in range(4):
        x, y = data(n_out, seed)
        loss_ref, out_ref = am_ref.step(x, y)
        loss_fast, out_fast = am_fast.step(x, y)
        torch.testing.assert_close(out_ref, out_fast)
        torch.testing.assert_close(loss_ref, loss_fast)
        assert_same_state(reference, fast)


@pytest.mark.parametrize("mode", [Mode.paper, Mode.release])
def test_am_mem_steps_agree_with_the_reference(mode):
    nets = [mlp((20,), 10, [32, 24], "relu").double() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    am_ref, am_fast = (AMMem(net, MuSchedule(0.01), mode, am_mem_cfg(fast)) for net, fast in zip(nets, (False, True)))
    for seed in range(4):
        x, y = data(10, seed)
        am_ref.step(x, y)
        am_fast.step(x, y)
        assert_same_state(*nets)
        for m_ref, m_fast in zip(am_ref.memories, am_fast.memories):
            torch.testing.assert_close(m_ref.A_low, m_fast.A_low)
            torch.testing.assert_close(m_ref.B, m_fast.B)


def test_the_fast_step_reuses_the_encoding(monkeypatch):
    """Per step, f_l's linear part is computed L times by the encoding, K - 1 times per hidden
    code solve and K - 1 times by the head in the top code solve (the first step starts at c^0,
    whose product the encoding made), for layers 2..L and the head in the weight step (layer
    1's input and weights are the encoding's)."""
    L, K = 3, 5
    net = net_for(Mode.release, "relu", 10)
    am = AMAdam(net, MuSchedule(0.003), Mode.release, am_adam_cfg(0.008, fast=True))
    calls = []
    original = LinearBN.linear
    monkeypatch.setattr(LinearBN, "linear", lambda self, a: calls.append(self) or original(self, a))
    am.step(*data(10))
    assert len(calls) == L + (L - 1) * (K - 1) + (K - 1) + (L - 1) + 1
    assert sum(f is am.f[0] for f in calls) == 1  # the encoding's only


def test_encoding_is_not_reused_for_other_inputs():
    """update_weights on activations that are not the encoding's (e.g. offline AM) computes afresh."""
    reference, fast, am_ref, am_fast = am_adam_pair(Mode.release)
    x, y = data(10, 0)
    x2, y2 = data(10, 1)
    for am, net in ((am_ref, reference), (am_fast, fast)):
        c = am.update_codes(am.encode(x), y, 0.003)
        am.update_codes(am.encode(x2), y2, 0.003)  # the last encoding is of x2
        am.update_weights(net.activations(x, c), c, y, 0.003)
    assert_same_state(reference, fast)


def test_encoding_is_not_reused_once_the_weights_moved():
    """encode, a weight step, then codes from the same c^0: the encoding's products are stale."""
    reference, fast, am_ref, am_fast = am_adam_pair(Mode.paper)
    x, y = data(10, 0)
    codes = []
    for am, net in ((am_ref, reference), (am_fast, fast)):
        c0 = am.encode(x)
        c = am.update_codes(c0, y, 0.003)
        am.update_weights(net.activations(x, c), c, y, 0.003)
        codes.append(am.update_codes(c0, y, 0.003))
    for a, b in zip(*codes):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bn", ["none", "train", "eval", "no_affine", "no_running"])
def test_linear_bn_matches_autograd(bn):
    torch.manual_seed(0)
    lin = nn.Linear(6, 5, bias=bn == "none").double()
    mods = [lin]
    if bn != "none":
        mods.append(nn.BatchNorm1d(5, affine=bn != "no_affine", track_running_stats=bn != "no_running").double())
        if bn == "eval":
            mods[1].running_mean.normal_()
            mods[1].running_var.uniform_(0.5, 2.0)
            mods[1].weight.data.uniform_(0.5, 2.0)
    f_ref = nn.Sequential(*mods).train(bn != "eval")
    f_fast = copy.deepcopy(f_ref)
    a = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randn(16, 5, dtype=torch.float64)

    pred = f_ref(a)
    (pred * target).sum().backward()  # d/dpred = target
    closed = LinearBN.of(f_fast)
    pred_fast, saved = closed.forward(a.detach())
    torch.testing.assert_close(pred_fast, pred.detach())
    torch.testing.assert_close(closed.grad_input(target, saved), a.grad)
    closed.set_param_grads(target, saved, a.detach())
    for p, q in zip(f_ref.parameters(), f_fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad)
    for p, q in zip(f_ref.buffers(), f_fast.buffers()):  # running statistics moved alike
        torch.testing.assert_close(q, p)


def test_linear_bn_declines_other_layers():
    assert LinearBN.of(nn.Conv2d(1, 2, 3)) is None
    assert LinearBN.of(nn.Sequential(nn.Linear(3, 3), nn.ReLU())) is None
    assert LinearBN.of(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, momentum=None))) is None
    assert LinearBN.of(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))) is not None


def test_small_cpu_batchnorm_runs_on_one_thread_and_restores_the_pool(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        original = torch.native_batch_norm
        monkeypatch.setattr(torch, "native_batch_norm",
                            lambda *args: seen.append(torch.get_num_threads()) or original(*args))
        closed = LinearBN.of(nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4)))
        closed.forward(torch.randn(32, 8))
        big = LinearBN.of(nn.Sequential(nn.Linear(8, 1024), nn.BatchNorm1d(1024)))
        big.forward(torch.randn(128, 8))  # 131,072 elements: the pool's threads
        assert seen == [1, 2]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_lenet_steps_mix_closed_forms_and_autograd_like_the_reference(batchnorm):
    """Conv blocks go through autograd, the FC blocks and the head in closed form, in one step."""
    from amtrain.models import lenet5
    torch.manual_seed(0)
    reference = lenet5((1, 28, 28), 10, batchnorm=batchnorm).double()
    fast = copy.deepcopy(reference)
    am_ref = AMAdam(reference, MuSchedule(0.003), Mode.release, am_adam_cfg(0.008, fast=False))
    am_fast = AMAdam(fast, MuSchedule(0.003), Mode.release, am_adam_cfg(0.008, fast=True))
    assert [f is not None for f in am_fast.f] == [False, False, True, True] and am_fast.f_head is not None
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        x = torch.randn(16, 1, 28, 28, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (16,), generator=g)
        torch.testing.assert_close(am_ref.step(x, y)[1], am_fast.step(x, y)[1])
        assert_same_state(reference, fast)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_fused_optimizers_equal_the_default_ones(kind):
    """optim.base.fused: the one-kernel Adam / SGD the trainers use is the default update, and a
    parameter it cannot take (here: on the meta device) gets the default implementation."""
    from amtrain.optim.base import fused

    make = {"adam": lambda ps, **kw: (torch.optim.Adam, dict(lr=1e-2, betas=(0.9, 0.99), **kw)),
            "sgd": lambda ps, **kw: (torch.optim.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True, **kw))}[kind]
    nets = [net_for(Mode.paper, "relu", 10) for _ in range(2)]
    cls, kw = make(None)
    opts = [cls(nets[0].parameters(), **kw), fused(cls, nets[1].parameters(), **kw)]
    assert opts[1].defaults["fused"] and not opts[0].defaults.get("fused")
    x, y = data(10)
    for _ in range(50):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(p, q)
    meta = fused(cls, [nn.Parameter(torch.empty(3, device="meta"))], **kw)
    assert not meta.defaults.get("fused")


def test_trainers_step_their_weights_with_fused_optimizers():
    net = net_for(Mode.release, "relu", 10)
    am = AMAdam(net, MuSchedule(0.01), Mode.release, am_adam_cfg())
    assert am.opt.defaults["fused"]
