"""AM-mem (eq. 7): the memories are batch sums and BCD solves the least-squares problem."""
import pytest
import torch

from amtrain.config import Mode
from amtrain.models import mlp
from amtrain.optim.am.online import AMMem
from amtrain.optim.am.memory import BLOCK, CoActivationMemory, bcd, bcd_loop, exact, times_strictly_lower
from amtrain.optim.am.mu import MuSchedule


def surrogate(W, A, B):
    return float(torch.trace(W.T @ W @ A) - 2 * torch.trace(W.T @ B))


def random_problem(n=200, n_in=8, n_out=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n_in, generator=g, dtype=torch.float64)
    c = a @ torch.randn(n_in, n_out, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, n_out, generator=g, dtype=torch.float64)
    return a, c


@pytest.mark.parametrize("bias", [False, True])
def test_memory_update_equals_batch_sums(bias):
    a1, c1 = random_problem(seed=1)
    a2, c2 = random_problem(seed=2)
    mem = CoActivationMemory(8, 5, bias=bias, dtype=torch.float64)
    mem.update(a1, c1)
    mem.update(a2, c2)
    a, c = torch.cat([a1, a2]), torch.cat([c1, c2])
    if bias:
        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    A = sum(torch.outer(ai, ai) for ai in a)  # sum_i a_i a_i^T, sample by sample
    B = sum(torch.outer(ci, ai) for ci, ai in zip(c, a))  # sum_i c_i a_i^T
    torch.testing.assert_close(mem.A, A)
    torch.testing.assert_close(mem.B, B)


def test_wide_layers_accumulate_only_the_lower_block_triangle():
    """n above the block width: A_low holds the blocks on and below the diagonal, A is still a^T a,
    and BCD on A_low gives the same iterate as on the full A."""
    n_in = 2 * BLOCK + 37
    g = torch.Generator().manual_seed(0)
    a1, a2 = (torch.randn(50, n_in, generator=g, dtype=torch.float64) for _ in range(2))
    c1, c2 = (torch.randn(50, 7, generator=g, dtype=torch.float64) for _ in range(2))
    mem = CoActivationMemory(n_in, 7, bias=True, forget=0.9, dtype=torch.float64)
    mem.update(a1, c1)
    mem.update(a2, c2)
    aug = lambda a: torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)  # noqa: E731
    A = 0.9 * aug(a1).T @ aug(a1) + aug(a2).T @ aug(a2)
    torch.testing.assert_close(mem.A, A)
    assert mem.A_low[:BLOCK, BLOCK:].abs().max() == 0  # nothing computed above the diagonal blocks
    torch.testing.assert_close(torch.tril(mem.A_low), torch.tril(A))
    W = torch.randn(7, n_in + 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(times_strictly_lower(W, mem.A_low), W @ torch.tril(A, -1))
    torch.testing.assert_close(bcd(W.clone(), mem.A_low, mem.B, ridge=3.0), bcd_loop(W.clone(), A, mem.B, ridge=3.0))


def test_forgetting_turns_sums_into_moving_averages():
    a1, c1 = random_problem(seed=1)
    a2, c2 = random_problem(seed=2)
    mem = CoActivationMemory(8, 5, bias=False, forget=0.5, dtype=torch.float64)
    mem.update(a1, c1)
    mem.update(a2, c2)
    torch.testing.assert_close(mem.A, 0.5 * a1.T @ a1 + a2.T @ a2)
    torch.testing.assert_close(mem.B, 0.5 * c1.T @ a1 + c2.T @ a2)


def test_bcd_reaches_least_squares_solution_B_Ainv():
    a, c = random_problem()
    A, B = a.T @ a, c.T @ a
    W = bcd(torch.zeros(5, 8, dtype=torch.float64), A, B, sweeps=300)
    torch.testing.assert_close(W, B @ torch.linalg.inv(A), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(W, torch.linalg.lstsq(a, c).solution.T, rtol=1e-8, atol=1e-8)


def test_bcd_never_increases_the_surrogate():
    a, c = random_problem()
    A, B = a.T @ a, c.T @ a
    W = torch.randn(5, 8, dtype=torch.float64)
    values = [surrogate(W, A, B)]
    for _ in range(10):
        W = bcd(W, A, B, sweeps=1)
        values.append(surrogate(W, A, B))
    assert all(v2 <= v1 + 1e-9 for v1, v2 in zip(values, values[1:]))


def test_bcd_leaves_dead_units_alone():
    a, c = random_problem()
    a[:, 3] = 0  # an input that never fires: A_33 = 0
    A, B = a.T @ a, c.T @ a
    W = torch.randn(5, 8, dtype=torch.float64)
    before = W[:, 3].clone()
    W = bcd(W, A, B, sweeps=3)
    assert torch.isfinite(W).all() and torch.equal(W[:, 3], before)


def test_exact_solver_equals_lstsq():
    a, c = random_problem()
    torch.testing.assert_close(exact(a.T @ a, c.T @ a), torch.linalg.lstsq(a, c).solution.T, rtol=1e-6, atol=1e-6)


def test_am_mem_fits_each_layer_to_its_codes():
    """After one batch with the exact solver, W_l, b_l is the least-squares fit c*_l ~ W a_{l-1} + b."""
    torch.manual_seed(0)
    net = mlp((10,), 3, [6, 4], "relu").double()

    class Cfg:
        class codes:
            lr, iters, momentum, nesterov = 0.3, 5, 0.9, True
        bcd_sweeps, forget, solver, ridge, lr, betas, fast = 1, 1.0, "exact", 0.0, 0.008, (0.9, 0.999), True

        class schedule:
            step_epochs, gamma = 0, 0.5

    am = AMMem(net, MuSchedule(0.01), Mode.paper, Cfg)
    x, y = torch.randn(100, 10, dtype=torch.float64), torch.randint(0, 3, (100,))
    c = am.update_codes(am.encode(x), y, 0.01)
    a = net.activations(x, c)
    am.update_weights(a, c, y, 0.01)
    for l, block in enumerate(net.blocks):
        ones = torch.ones(len(x), 1, dtype=x.dtype)
        sol = torch.linalg.lstsq(torch.cat([a[l], ones], 1), c[l]).solution.T
        lin = block.linear()
        torch.testing.assert_close(torch.cat([lin.weight, lin.bias[:, None]], 1).detach(), sol, rtol=1e-5, atol=1e-6)


def test_am_mem_refuses_batchnorm():
    from amtrain.errors import ConfigError

    net = mlp((10,), 3, [6], "relu", batchnorm=True)

    class Cfg:
        codes = None
        solver = "bcd"
        fast = True

    with pytest.raises(ConfigError, match="batchnorm=false"):
        AMMem(net, MuSchedule(0.01), Mode.release, Cfg)


def test_bcd_with_ridge_reaches_the_ridge_solution():
    a, c = random_problem()
    A, B = a.T @ a, c.T @ a
    W = bcd(torch.zeros(5, 8, dtype=torch.float64), A, B, sweeps=300, ridge=50.0)
    torch.testing.assert_close(W, B @ torch.linalg.inv(A + 50.0 * torch.eye(8, dtype=A.dtype)), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(exact(A, B, ridge=50.0), W, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ridge", [0.0, 3.0])
def test_matrix_sweep_equals_the_column_loop(ridge):
    """One Gauss-Seidel sweep as a triangular solve gives the column-by-column iterate exactly."""
    a, c = random_problem(n=60, n_in=12, n_out=5)
    a[:, 4] = 0  # a dead input
    A, B = a.T @ a, c.T @ a
    W0 = torch.randn(5, 12, dtype=torch.float64)
    for sweeps in (1, 3):
        torch.testing.assert_close(bcd(W0.clone(), A, B, sweeps, ridge), bcd_loop(W0.clone(), A, B, sweeps, ridge),
                                   rtol=1e-10, atol=1e-10)
