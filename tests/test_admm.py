"""Taylor-style ADMM: every closed form against a brute-force minimiser; warm start; monotonicity."""
import pytest
import torch

from amtrain.cli import compose
from amtrain.data import build_data
from amtrain.models import build_model
from amtrain.optim import build_trainer
from amtrain.optim.fullbatch import steps

D = torch.float64
GRID = torch.linspace(-6, 6, 240001, dtype=D)  # brute force: evaluate on a fine grid


def brute(objective):
    """Entry-wise argmin over GRID of objective(z) for tensors broadcast against GRID[:, None]."""
    return GRID[objective(GRID[:, None]).argmin(0)]


def assert_minimises(f, ours, ref, atol=1e-4):
    """Ours is at least as low as the best grid point, and equal to it where that point is interior."""
    assert (f(ours[None])[0] <= f(ref[None])[0] + 1e-7).all()
    inside = ref.abs() < GRID[-1] - 0.01
    assert inside.float().mean() > 0.8
    torch.testing.assert_close(ours[inside], ref[inside], atol=atol, rtol=0)


def test_relu_z_update_is_the_entrywise_minimiser():
    g = torch.Generator().manual_seed(0)
    a, m = torch.randn(300, generator=g, dtype=D) * 2, torch.randn(300, generator=g, dtype=D) * 2
    for beta, gamma in [(1.0, 10.0), (3.0, 0.5)]:
        ours = steps.update_relu_preactivations(a, m, beta, gamma)
        f = lambda z: gamma * (a - z.clamp_min(0)) ** 2 + beta * (z - m) ** 2  # noqa: E731
        assert_minimises(f, ours, brute(f))


@pytest.mark.parametrize("y", [0.0, 1.0])
def test_hinge_output_update_is_the_entrywise_minimiser(y):
    g = torch.Generator().manual_seed(1)
    m, lam = torch.randn(300, generator=g, dtype=D) * 2, torch.randn(300, generator=g, dtype=D)
    y01 = torch.full_like(m, y)
    for beta in (0.3, 1.0, 5.0):
        ours = steps.update_output_hinge(m, y01, lam, beta)
        f = lambda z: steps.hinge(z, y01) + lam * z + beta * (z - m) ** 2  # noqa: E731
        assert_minimises(f, ours, brute(f))


def test_ce_output_prox_is_stationary_and_minimal():
    g = torch.Generator().manual_seed(2)
    m, lam = torch.randn(50, 10, generator=g, dtype=D) * 3, torch.randn(50, 10, generator=g, dtype=D) * 0.1
    y = torch.randint(0, 10, (50,), generator=g)
    z = steps.update_output_ce(m, y, lam, beta=1.0, newton_steps=10).requires_grad_(True)
    obj = steps.ce_prox_objective(z, m, y, lam, 1.0)
    (grad,) = torch.autograd.grad(obj.sum(), z)
    assert grad.abs().max() < 1e-8
    for _ in range(5):  # strictly convex: any perturbation is worse
        other = z.detach() + 0.01 * torch.randn(z.shape, generator=g, dtype=D)
        assert (steps.ce_prox_objective(other, m, y, lam, 1.0) >= obj.detach() - 1e-12).all()


def test_activation_update_equals_lstsq():
    g = torch.Generator().manual_seed(3)
    W, b = torch.randn(6, 8, generator=g, dtype=D), torch.randn(6, generator=g, dtype=D)
    z_next, h_z = torch.randn(20, 6, generator=g, dtype=D), torch.randn(20, 8, generator=g, dtype=D).relu()
    beta, gamma = 1.5, 4.0
    ours = steps.update_activations(z_next, W, b, h_z, steps.activation_matrix(W, beta, gamma), beta, gamma)
    # argmin_a beta ||z - b - W a||^2 + gamma ||a - h||^2 as one stacked least-squares problem per sample
    A = torch.cat([beta**0.5 * W, gamma**0.5 * torch.eye(8, dtype=D)])
    rhs = torch.cat([beta**0.5 * (z_next - b), gamma**0.5 * h_z], dim=1)
    ref = torch.linalg.lstsq(A, rhs.T).solution.T
    torch.testing.assert_close(ours, ref)


def tiny_admm(*overrides):
    cfg = compose(["dataset=synthetic", "dataset.n_train=400", "dataset.n_test=100", "device=cpu", "progress=false",
                   "optim=admm", "optim.chunk_rows=150", "model.hidden=[16,12]", *overrides])
    torch.manual_seed(0)
    data = build_data(cfg.dataset)
    net = build_model(cfg.model, data.in_shape, data.n_classes).double()
    data.x_train, data.x_test = data.x_train.double(), data.x_test.double()
    return build_trainer(cfg.optim, cfg.mu, cfg.mode, net), data


def test_weight_update_equals_lstsq():
    admm, data = tiny_admm("optim.ridge=0")
    x = data.x_train
    z = torch.randn(len(x), 16, dtype=D)
    W = admm.fit_weights(x, z, bias=True)  # chunked Gram sums, then the normal equations
    ref = torch.linalg.lstsq(steps.augment(x, True), z).solution.T
    torch.testing.assert_close(W, ref)


def test_warm_start_leaves_lambda_zero_then_updates_it():
    admm, data = tiny_admm("optim.warm_start=3")
    for _ in range(3):
        admm.epoch(data, 50, torch.Generator())
        assert torch.count_nonzero(admm.lam) == 0
    admm.epoch(data, 50, torch.Generator())
    assert torch.count_nonzero(admm.lam) > 0


@pytest.mark.parametrize("output", ["hinge", "ce"])
def test_augmented_lagrangian_does_not_increase_during_warm_start(output):
    admm, data = tiny_admm("optim.warm_start=100", f"optim.output={output}", "optim.ridge=1e-10")
    values = []
    for _ in range(6):
        admm.epoch(data, 50, torch.Generator())
        values.append(admm.augmented_lagrangian(data.x_train, data.y_train))
    assert all(v2 <= v1 * (1 + 1e-9) + 1e-9 for v1, v2 in zip(values, values[1:])), values
    assert values[-1] < values[0]


def test_admm_refuses_batchnorm():
    from amtrain.errors import ConfigError

    with pytest.raises(ConfigError, match="batchnorm=false"):
        tiny_admm("model.batchnorm=true")
