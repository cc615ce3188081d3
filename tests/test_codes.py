"""Code updates (Alg. 2.2, eqs. 4-5): each lowers its own sub-objective; the solver is exact."""
import pytest
import torch
from torch import nn

from amtrain.config import Mode
from amtrain.models import mlp
from amtrain.models.layered import Block, LayeredNet
from amtrain.optim.am.online import OnlineAM
from amtrain.optim.am.codes import hidden_data_term, proximal_term, solve_code, top_data_term
from amtrain.optim.am.mu import MuSchedule


class Codes:  # the code-solver settings of the release: K=5, lr 0.3, Nesterov 0.9
    lr, iters, momentum, nesterov = 0.3, 5, 0.9, True


def setup(mode, seed=0):
    torch.manual_seed(seed)
    bn = mode == Mode.release
    net = mlp((20,), 4, [16, 12, 8], "relu", batchnorm=bn, hidden_bias=not bn)
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    return net, x, y


@pytest.mark.parametrize("mode", [Mode.paper, Mode.release])
@pytest.mark.parametrize("mu", [0.003, 0.1])
def test_each_code_update_lowers_its_subobjective(mode, mu):
    net, x, y = setup(mode)
    am = OnlineAM(net, MuSchedule(mu), mode, Codes)
    c0 = am.encode(x)
    c = am.update_codes(c0, y, mu)
    L = net.L

    def objective(l, code):  # the sub-problem that update_codes solved for layer l
        with torch.no_grad():
            if l == L - 1:
                data = top_data_term(net, code, y, mu, mode)  # eq. 4
            else:
                data = hidden_data_term(net, l, code, c[l + 1], mu, mode)  # eq. 5, with c*_{l+1}
            return float(data + proximal_term(code, c0[l], mu, mode))

    for l in range(L):
        assert not torch.equal(c[l], c0[l]), f"code {l} did not move"
        assert objective(l, c[l]) < objective(l, c0[l]), f"eq. {'4' if l == L - 1 else '5'} rose at layer {l}"


def test_paper_solver_reaches_the_closed_form_minimiser():
    """With sigma = identity, eq. 5 is a ridge problem: c* = (W^T W + I)^-1 (W^T (t - b) + c0)."""
    torch.manual_seed(0)
    blocks = [Block(nn.Sequential(nn.Linear(6, 5)), nn.Identity()), Block(nn.Sequential(nn.Linear(5, 4)), nn.Identity())]
    net = LayeredNet(nn.Identity(), blocks, nn.Linear(4, 3), 3)
    c0, t = torch.randn(10, 5), torch.randn(10, 4)
    mu = 0.5
    c = solve_code(c0, lambda code: hidden_data_term(net, 0, code, t, mu, Mode.paper), mu, Mode.paper,
                   lr=0.05, iters=400, momentum=0.9, nesterov=True)
    W, b = net.blocks[1].f[0].weight.detach(), net.blocks[1].f[0].bias.detach()
    expected = torch.linalg.solve(W.T @ W + torch.eye(5), (W.T @ (t - b).T + c0.T)).T
    torch.testing.assert_close(c, expected, rtol=1e-4, atol=1e-4)


def test_solver_matches_torch_sgd_nesterov():
    """The hand-written momentum is torch.optim.SGD(nesterov=True), as in the release."""
    torch.manual_seed(0)
    net, x, y = setup(Mode.paper)
    c0 = net.encode(x)[-1].detach()
    term = lambda code: top_data_term(net, code, y, 0.01, Mode.release)  # noqa: E731
    ours = solve_code(c0, term, 0.01, Mode.release, lr=0.3, iters=5, momentum=0.9, nesterov=True)
    ref = c0.clone().requires_grad_(True)
    opt = torch.optim.SGD([ref], lr=0.3, momentum=0.9, nesterov=True)
    for _ in range(5):
        opt.zero_grad()
        term(ref).backward()
        opt.step()
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-5, atol=1e-6)


def test_release_proximal_term_has_zero_gradient_and_paper_does_not():
    c0 = torch.randn(4, 3)
    c = (c0 + 1).requires_grad_(True)
    (g,) = torch.autograd.grad(proximal_term(c, c0, 0.1, Mode.paper), c)
    torch.testing.assert_close(g, 2 * 0.1 * torch.ones_like(c))
    assert proximal_term(c, c0, 0.1, Mode.release).requires_grad is False
