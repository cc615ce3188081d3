"""The split forward pass (codes and activations) equals the plain forward pass."""
import pytest
import torch

from amtrain.models import build_model, mlp


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_split_forward_equals_forward(batchnorm, act):
    torch.manual_seed(0)
    net = mlp((1, 28, 28), 10, [30, 20, 15], act, batchnorm=batchnorm, hidden_bias=not batchnorm)
    x = torch.randn(16, 1, 28, 28)
    for train in (True, False):
        net.train(train)
        with torch.no_grad():
            c = net.encode(x)
            a = net.activations(x, c)
            out = net.head(a[-1])
            expected = net(x)
        assert [t.shape[1] for t in c] == [30, 20, 15]
        assert len(a) == net.L + 1 and torch.equal(a[0], x.flatten(1))
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_codes_are_pre_activations():
    torch.manual_seed(0)
    net = mlp((5,), 3, [4], "relu")
    x = torch.randn(7, 5)
    lin = net.blocks[0].f[0]
    torch.testing.assert_close(net.encode(x)[0], x @ lin.weight.T + lin.bias)


def test_builder_uses_dataset_widths(make_cfg):
    cfg = make_cfg("model=mlp_2x500", "mode=paper")
    net = build_model(cfg.model, (3, 32, 32), 10)
    assert net.blocks[0].linear().in_features == 3072
    assert [b.linear().out_features for b in net.blocks] == [500, 500]
    assert net.head.out_features == 10
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules())
    release = build_model(make_cfg("mode=release").model, (1, 28, 28), 10)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in release.modules())
    assert release.blocks[0].linear().bias is None
