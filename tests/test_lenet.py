"""LeNet-5: conv codes are pre-activation maps; split forward, code updates, CLI training."""
import pandas as pd
import pytest
import torch

from amtrain.config import Mode
from amtrain.errors import ConfigError
from amtrain.models import lenet5
from amtrain.optim.am.online import AMMem, OnlineAM
from amtrain.optim.am.codes import hidden_data_term, proximal_term, top_data_term
from amtrain.optim.am.mu import MuSchedule
from conftest import am_adam_cfg
from test_cli import amtrain


@pytest.mark.parametrize("batchnorm", [False, True])
def test_split_forward_equals_forward(batchnorm):
    torch.manual_seed(0)
    net = lenet5((1, 28, 28), 10, batchnorm=batchnorm, hidden_bias=not batchnorm)
    x = torch.randn(8, 1, 28, 28)
    for train in (True, False):
        net.train(train)
        with torch.no_grad():
            c = net.encode(x)
            out = net.head(net.blocks[-1].sigma(c[-1]))
            torch.testing.assert_close(out, net(x), rtol=0, atol=0)
    assert [tuple(t.shape[1:]) for t in c] == [(6, 24, 24), (16, 8, 8), (120,), (84,)]


@pytest.mark.parametrize("mode", [Mode.paper, Mode.release])
def test_code_updates_lower_their_subobjectives_through_conv_layers(mode):
    torch.manual_seed(0)
    bn = mode == Mode.release
    net = lenet5((1, 16, 16), 4, fc=(12,), batchnorm=bn, hidden_bias=not bn)
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 4, (32,))
    mu = 0.01
    am = OnlineAM(net, MuSchedule(mu), mode, am_adam_cfg().codes)
    c0 = am.encode(x)
    c = am.update_codes(c0, y, mu)
    for l in range(net.L):
        with torch.no_grad():
            if l == net.L - 1:
                f = lambda code: top_data_term(net, code, y, mu, mode) + proximal_term(code, c0[l], mu, mode)  # noqa
            else:
                f = lambda code: hidden_data_term(net, l, code, c[l + 1], mu, mode) + proximal_term(code, c0[l], mu, mode)  # noqa
            assert float(f(c[l])) < float(f(c0[l])), f"layer {l} ({tuple(c[l].shape[1:])})"


def test_am_mem_refuses_convolutions():
    net = lenet5((1, 28, 28), 10)

    class Cfg:
        codes, solver, fast = None, "bcd", True

    with pytest.raises(ConfigError, match="layer 1 is Conv2d"):
        AMMem(net, MuSchedule(0.01), Mode.paper, Cfg)


def test_lenet_needs_images():
    with pytest.raises(ConfigError, match="image inputs"):
        lenet5((20,), 4)


@pytest.mark.parametrize("optim", ["am_adam", "sgd", "adam", "am_adam_off"])
def test_lenet_learns_tiny_mnist_through_the_cli(tmp_path, mnist_root, optim):
    out = tmp_path / "run"
    r = amtrain("dataset=mnist", "dataset.download=false", "model=lenet5", f"optim={optim}", "device=cpu",
                "progress=false", "batch_size=20", "epochs=5", "eval.first_epoch_batches=2", f"hydra.run.dir={out}",
                cwd=tmp_path, data_root=mnist_root)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out / "metrics.csv")
    assert df[(df.split == "test") & (df.metric == "acc")].value.iloc[-1] > 0.3  # chance: 0.1
