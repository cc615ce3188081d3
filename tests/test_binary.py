"""Binary (sign) networks: STE in backprop and AM code steps; the gradient-free safeguard is monotone."""
import pandas as pd
import pytest
import torch

from amtrain.config import Mode
from amtrain.models import Sign, mlp
from amtrain.optim.am.online import OnlineAM
from amtrain.optim.am.codes import hidden_data_term, proximal_term, top_data_term
from amtrain.optim.am.mu import MuSchedule
from conftest import am_adam_cfg
from test_cli import amtrain


def test_sign_forward_and_straight_through_backward():
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 5.0], requires_grad=True)
    y = Sign()(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    (g,) = torch.autograd.grad((y * torch.arange(5.0)).sum(), x)
    assert g.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # passed through unchanged


def binary_net(seed, bn=False):
    torch.manual_seed(seed)
    return mlp((20,), 4, [32, 24], ["sign", "tanh"], batchnorm=bn, hidden_bias=not bn)


def test_split_forward_equals_forward():
    net = binary_net(0)
    x = torch.randn(16, 20)
    with torch.no_grad():
        c = net.encode(x)
        a = net.activations(x, c)
        torch.testing.assert_close(net.head(a[-1]), net(x), rtol=0, atol=0)
    assert set(a[1].unique().tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("seed", range(5))
def test_gradient_free_sign_step_never_raises_eq5_and_top_code_lowers_eq4(seed):
    net = binary_net(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 20, generator=g), torch.randint(0, 4, (64,), generator=g)
    mu, mode = 0.01, Mode.paper
    am = OnlineAM(net, MuSchedule(mu), mode, am_adam_cfg(sign_step="accept").codes)
    c0 = am.encode(x)
    c = am.update_codes(c0, y, mu)
    with torch.no_grad():
        eq5 = lambda code: float(hidden_data_term(net, 0, code, c[1], mu, mode) + proximal_term(code, c0[0], mu, mode))  # noqa
        eq4 = lambda code: float(top_data_term(net, code, y, mu, mode) + proximal_term(code, c0[1], mu, mode))  # noqa
        assert eq5(c[0]) <= eq5(c0[0])  # the sign layer: accepted only where it helps
        assert eq4(c[1]) < eq4(c0[1])  # the tanh layer below the output


@pytest.mark.parametrize("optim, extra", [("am_adam", []), ("am_adam", ["optim.codes.sign_step=accept"]),
                                          ("adam", []), ("sgd", [])])
def test_binary_net_learns_tiny_mnist_through_the_cli(tmp_path, mnist_root, optim, extra):
    out = tmp_path / "run"
    r = amtrain("dataset=mnist", "dataset.download=false", "model=binary_mlp", f"optim={optim}", *extra,
                "device=cpu", "progress=false", "batch_size=20", "epochs=4", "eval.first_epoch_batches=2",
                f"hydra.run.dir={out}", cwd=tmp_path, data_root=mnist_root)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out / "metrics.csv")
    assert df[(df.split == "test") & (df.metric == "acc")].value.iloc[-1] > 0.3  # chance: 0.1
