"""LeNet-5's max-pooling: the fast forward without autograd equals ATen's max_pool2d, and
training through it is exactly training through nn.MaxPool2d."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amtrain.cli import compose
from amtrain.models import build_model, lenet5
from amtrain.models.pooling import MaxPool2d, window_argmax, window_max
from amtrain.optim import build_trainer


def maps(shape, dtype=torch.float32, ties=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if ties:  # few distinct values: many windows with several maxima
        return torch.randint(-1, 2, shape, generator=g).to(dtype)
    return torch.randn(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 3, 24, 24), (4, 2, 7, 9), (3, 8, 8), (2, 1, 3, 3)])
@pytest.mark.parametrize("ties", [False, True])
def test_window_max_is_max_pool2d(k, shape, ties):
    for dtype in (torch.float32, torch.float64):
        x = maps(shape, dtype, ties)
        out = window_max(x, k)
        assert out.is_contiguous() and out.dtype == dtype
        assert torch.equal(out, F.max_pool2d(x, k))


def test_window_max_keeps_nan_and_inf_as_max_pool2d_does():
    x = maps((2, 2, 6, 6))
    x[0, 0, 0, 1] = float("nan")  # one NaN in a window: the window's max is NaN
    x[0, 1, 2:4, 2:4] = float("-inf")  # a window of -inf only
    x[1, 0, 4, 5] = float("inf")
    assert torch.equal(window_max(x, 2), F.max_pool2d(x, 2)) is False  # NaN != NaN: compare with equal_nan
    torch.testing.assert_close(window_max(x, 2), F.max_pool2d(x, 2), rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(window_max(x, 2)[0, 0, 0, 0]) and window_max(x, 2)[0, 1, 1, 1] == float("-inf")
    torch.testing.assert_close(window_argmax(x, 2)[0], F.max_pool2d(x, 2), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 3, 24, 24), (4, 2, 7, 9), (3, 8, 8)])
@pytest.mark.parametrize("ties", [False, True])
def test_window_argmax_gives_atens_indices(k, shape, ties):
    """The first maximum of each window in row-major order, as a flat position in the plane."""
    x = maps(shape, ties=ties)
    x[..., 0, :] = float("-inf")  # windows whose first row is -inf, and (k = 1) whole windows of it
    out, idx = window_argmax(x, k)
    ref_out, ref_idx = torch.ops.aten.max_pool2d_with_indices(x, [k, k], [k, k])
    assert torch.equal(out, ref_out) and idx.dtype == torch.int64 and torch.equal(idx, ref_idx)


def test_window_argmax_indices_are_exact_in_low_precision_on_wide_maps():
    """Positions past 256 in a bfloat16 map: the offsets are counted in float32, not in bfloat16."""
    x = maps((2, 3, 4, 700), ties=True).to(torch.bfloat16)
    out, idx = window_argmax(x, 2)
    ref_out, ref_idx = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
    assert torch.equal(out, ref_out) and torch.equal(idx, ref_idx)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("shape", [(6, 3, 12, 12), (4, 2, 7, 9), (3, 8, 8)])
def test_the_gradient_is_routed_as_nn_maxpool2d_routes_it(k, shape):
    for ties in (False, True):
        for dtype in (torch.float32, torch.float64):
            x = maps(shape, dtype, ties).requires_grad_()
            out = MaxPool2d(k)(x)
            g = maps(out.shape, dtype, seed=1)
            out.backward(g)
            ours, x.grad = x.grad, None
            ref = nn.MaxPool2d(k)(x)
            ref.backward(g)
            assert torch.equal(out, ref) and torch.equal(ours, x.grad)


def test_the_module_takes_each_path_where_it_should(monkeypatch):
    """No gradient to come: window_max alone; under autograd: window_argmax, then ATen's
    backward; any other setting, or a map smaller than a window: nn.MaxPool2d's own forward."""
    import amtrain.models.pooling as pooling

    calls = []
    for name in ("window_max", "window_argmax"):
        real = getattr(pooling, name)
        monkeypatch.setattr(pooling, name, lambda x, k, real=real, name=name: calls.append(name) or real(x, k))
    pool = MaxPool2d(2)
    x = maps((4, 3, 8, 8)).requires_grad_()
    with torch.no_grad():
        pool(x)
    pool(x.detach())
    assert calls == ["window_max", "window_max"]
    pool(x).sum().backward()
    assert calls[2:] == ["window_argmax"]
    other = MaxPool2d(2)
    other.padding = 1
    with torch.no_grad():
        assert torch.equal(other(x), F.max_pool2d(x, 2, padding=1))
        with pytest.raises(RuntimeError):  # a 1 x 1 map: nn.MaxPool2d's own error, as before
            pool(x[..., :1, :1])
    assert calls[3:] == []


def test_lenet_uses_it_and_its_outputs_are_the_same():
    net = lenet5((1, 28, 28), 10)
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(isinstance(m, MaxPool2d) for m in pools)
    x = maps((16, 1, 28, 28))
    with torch.no_grad():
        fast = net(x)
        for m in pools:
            m.forward = lambda a, m=m: nn.MaxPool2d.forward(m, a)
        assert torch.equal(fast, net(x))


@pytest.mark.parametrize("optim,mode", [("am_adam", "release"), ("am_adam", "paper"), ("sgd", "release")])
def test_training_lenet_is_bit_for_bit_what_it_was_with_nn_maxpool2d(optim, mode):
    """AM-Adam's encoding and weight step pool without autograd, its code steps with it: a few
    steps and an evaluation leave the same weights, BatchNorm statistics and outputs."""
    def trained(fast: bool):
        cfg = compose([f"optim={optim}", "model=lenet5", f"mode={mode}", "dataset=synthetic", "device=cpu"])
        torch.manual_seed(0)
        net = build_model(cfg.model, (1, 28, 28), 10)
        if not fast:
            for m in net.modules():
                if isinstance(m, MaxPool2d):
                    m.forward = lambda a, m=m: nn.MaxPool2d.forward(m, a)
        trainer = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            trainer.step(torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g))
        net.eval()
        with torch.no_grad():
            out = net(torch.randn(16, 1, 28, 28, generator=g))
        return net.state_dict(), out

    (w_fast, out_fast), (w_ref, out_ref) = trained(True), trained(False)
    assert w_fast.keys() == w_ref.keys() and all(torch.equal(w_fast[k], w_ref[k]) for k in w_fast)
    assert torch.equal(out_fast, out_ref)
