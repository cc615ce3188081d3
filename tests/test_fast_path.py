"""The closed-form code gradients (optim.codes.fast) equal autograd's: same codes, weights, BN state."""
import copy

import pytest
import torch

from amtrain.config import Mode
from amtrain.models import mlp
from amtrain.optim.am import AMAdam
from amtrain.optim.codes import hidden_data_grad, hidden_data_term, top_data_grad, top_data_term
from amtrain.optim.mu import MuSchedule
from conftest import am_adam_cfg


CASES = [(Mode.release, "relu", 10), (Mode.paper, "relu", 10), (Mode.paper, "tanh", 10), (Mode.release, "tanh", 1),
         (Mode.paper, "relu", 1)]


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


@pytest.mark.parametrize("mode, act, n_out", CASES)
def test_fast_and_reference_paths_give_the_same_step(mode, act, n_out):
    reference, fast = net_for(mode, act, n_out), net_for(mode, act, n_out)
    am_ref = AMAdam(reference, MuSchedule(0.003), mode, am_adam_cfg(0.008, fast=False))
    am_fast = AMAdam(fast, MuSchedule(0.003), mode, am_adam_cfg(0.008, fast=True))
    for seed in range(3):
        x, y = data(n_out, seed)
        c_ref = am_ref.update_codes(am_ref.encode(x), y, 0.003)
        c_fast = am_fast.update_codes(am_fast.encode(x), y, 0.003)
        for a, b in zip(c_ref, c_fast):
            torch.testing.assert_close(a, b)
        am_ref.update_weights(reference.activations(x, c_ref), c_ref, y, 0.003)
        am_fast.update_weights(fast.activations(x, c_fast), c_fast, y, 0.003)
        for p, q in zip(list(reference.parameters()) + list(reference.buffers()),
                        list(fast.parameters()) + list(fast.buffers())):
            torch.testing.assert_close(p, q)
