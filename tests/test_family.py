"""mDLAM, dlADMM and BCD: closed forms against brute force, bounded backtracking, objectives
that must not rise, the dual at rho = 0, chunking, and learning through run()."""
from __future__ import annotations

import math

import pytest
import torch

from amtrain.cli import compose
from amtrain.data import build_data
from amtrain.models import build_model
from amtrain.optim import build_trainer
from amtrain.optim.fullbatch import steps
from amtrain.optim.fullbatch.base import rows
from amtrain.optim.fullbatch.solvers import backtrack, fista_output, output_loss
from amtrain.train import run

GRID = torch.linspace(-6, 6, 240001, dtype=torch.float64)  # step 5e-5


def grid_argmin(f) -> torch.Tensor:
    """Entry-wise argmin over GRID of f(z) for a (k,) batch of 1-D problems: f(GRID[:, None]) -> (G, k)."""
    return GRID[f(GRID[:, None]).argmin(0)]


def trainer(optim: str, *overrides, n_train=300, hidden="[12,10]", seed=0):
    cfg = compose(["dataset=synthetic", f"dataset.n_train={n_train}", "dataset.n_test=100", "device=cpu",
                   f"optim={optim}", f"model.hidden={hidden}", *overrides])
    torch.manual_seed(seed)
    data = build_data(cfg.dataset)
    net = build_model(cfg.model, data.in_shape, data.n_classes)
    return build_trainer(cfg.optim, cfg.mu, cfg.mode, net), data


# ----------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("w_a, w_m", [(1.0, 1.0), (0.5, 3.0), (4.0, 0.2)])
def test_relu_coupling_is_the_entrywise_minimiser(w_a, w_m):
    """dlADMM's z_l (weights 1, 1) and BCD's U_l (gamma/2, (rho + alpha)/2): argmin w_a (a - ReLU(z))^2 + w_m (z - m)^2."""
    g = torch.Generator().manual_seed(1)
    a = (torch.randn(400, generator=g, dtype=torch.float64) * 1.5).clamp(-4, 4)
    m = (torch.randn(400, generator=g, dtype=torch.float64) * 1.5).clamp(-4, 4)
    z = steps.update_relu_preactivations(a, m, beta=w_m, gamma=w_a)
    f = lambda zz: w_a * (a - torch.relu(zz)) ** 2 + w_m * (zz - m) ** 2  # noqa: E731
    brute = grid_argmin(f)
    fz, fb = f(z[None])[0], f(brute[None])[0]
    assert torch.all(fz <= fb + 1e-8)  # never worse than the grid's best (a finer grid only gets closer)
    assert torch.all(fb - fz < 1e-7)
    # where the minimiser is unique (the two branches' minima differ), it is the grid's point
    other = torch.where(z > 0, w_a * a**2 + w_m * (m.clamp_max(0) - m) ** 2,
                        f(((w_a * a + w_m * m) / (w_a + w_m)).clamp_min(0)[None])[0])
    unique = (other - fz).abs() > 1e-3
    assert unique.sum() > 200 and torch.allclose(z[unique], brute[unique], atol=1e-4)


def test_mdlam_boxed_z_and_a_are_the_minimisers_inside_the_box():
    g = torch.Generator().manual_seed(2)
    m, a, z0 = ((torch.randn(300, generator=g, dtype=torch.float64) * 1.5).clamp(-4, 4) for _ in range(3))
    for eps in (0.05, 0.5, 3.0):
        a = a.clamp_min(-eps)  # the box around a is empty for a < -eps; mDLAM's a never leaves [ReLU(z) - eps, .]
        z = steps.box_preactivations(m, a, eps)
        assert torch.all((a - torch.relu(z)).abs() <= eps + 1e-12)  # feasible
        feasible = (a - torch.relu(GRID[:, None])).abs() <= eps
        brute = grid_argmin(lambda zz: torch.where(feasible, (zz - m) ** 2, torch.inf))
        assert torch.allclose(z, brute, atol=1e-4)
        # a: the nearest point of [ReLU(z0) - eps, ReLU(z0) + eps]
        proj = steps.box_activations(m, z0, eps)
        inside = (GRID[:, None] - torch.relu(z0)).abs() <= eps
        brute = grid_argmin(lambda aa: torch.where(inside, (aa - m) ** 2, torch.inf))
        assert torch.allclose(proj, brute, atol=1e-4)


def test_bcd_v_update_solves_its_least_squares():
    """V_l = argmin rho/2 ||U_{l+1} - V W^T - b||^2 + gamma/2 ||V - ReLU(U_l)||^2 (a stacked lstsq)."""
    g = torch.Generator().manual_seed(3)
    n, d_in, d_out, rho, gamma = 50, 7, 5, 0.7, 1.3
    W, b = torch.randn(d_out, d_in, generator=g, dtype=torch.float64), torch.randn(d_out, generator=g, dtype=torch.float64)
    U_next, U = torch.randn(n, d_out, generator=g, dtype=torch.float64), torch.randn(n, d_in, generator=g, dtype=torch.float64)
    M = steps.activation_matrix(W, rho, gamma)
    V = steps.update_activations(U_next, W, b, torch.relu(U), M, rho, gamma)
    A = torch.cat([math.sqrt(rho) * W, math.sqrt(gamma) * torch.eye(d_in, dtype=torch.float64)])
    B = torch.cat([math.sqrt(rho) * (U_next - b).T, math.sqrt(gamma) * torch.relu(U).T])
    assert torch.allclose(V, torch.linalg.lstsq(A, B).solution.T, atol=1e-10)


def test_bcd_w_and_b_updates_solve_their_proximal_least_squares():
    g = torch.Generator().manual_seed(4)
    n, d_in, d_out, rho, alpha = 60, 6, 4, 1.0, 5.0
    V, U = torch.randn(n, d_in, generator=g, dtype=torch.float64), torch.randn(n, d_out, generator=g, dtype=torch.float64)
    W0, b0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64), torch.randn(d_out, generator=g, dtype=torch.float64)
    W = steps.prox_least_squares(V.T @ V, (U - b0).T @ V, W0, alpha, rho)
    # argmin_W rho/2 ||U - V W^T - b0||^2 + alpha/2 ||W - W0||^2 as one stacked least squares
    A = torch.cat([math.sqrt(rho) * V, math.sqrt(alpha) * torch.eye(d_in, dtype=torch.float64)])
    B = torch.cat([math.sqrt(rho) * (U - b0), math.sqrt(alpha) * W0.T])
    assert torch.allclose(W, torch.linalg.lstsq(A, B).solution.T, atol=1e-10)
    # then b with the new W: argmin_b rho/2 ||U - V W^T - b||^2 + alpha/2 ||b - b0||^2
    b = steps.prox_bias((U - V @ W.T).sum(0), b0, n, alpha, rho)
    A = torch.cat([math.sqrt(rho) * torch.ones(n, 1, dtype=torch.float64), math.sqrt(alpha) * torch.ones(1, 1, dtype=torch.float64)])
    B = torch.cat([math.sqrt(rho) * (U - V @ W.T), math.sqrt(alpha) * b0[None]])
    assert torch.allclose(b, torch.linalg.lstsq(A, B).solution[0], atol=1e-10)


def test_fista_output_minimises_the_output_problem_and_never_worsens_a_row():
    g = torch.Generator().manual_seed(5)
    t, _ = trainer("mdlam")
    net, n, rho = t.net, 40, 0.3
    y = torch.randint(0, 4, (n,), generator=g)
    center, z0 = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g) * 3
    z = fista_output(net, y, net.loss_target(y, torch.float32), center, rho, z0, step=1.0, tol=0.0, max_steps=3000)
    # at the minimiser the gradient softmax(z) - onehot + rho (z - center) vanishes
    grad = torch.softmax(z, 1) - torch.nn.functional.one_hot(y, 4) + rho * (z - center)
    assert grad.abs().max() < 1e-4
    per_row = lambda zz: output_loss(net, zz, y) + rho / 2 * ((zz - center) ** 2).sum(1)  # noqa: E731
    short = fista_output(net, y, net.loss_target(y, torch.float32), center, rho, z0, step=4.0, tol=1e-4, max_steps=3)
    assert torch.all(per_row(short) <= per_row(z0))


@pytest.mark.parametrize("single", [False, True])
def test_fista_in_the_authors_layout_equals_the_row_layout_reference(single):
    """fista_output works on (outputs, samples) arrays for speed; the same FISTA on rows, written
    plainly, gives the same z (tol=0: both run every step)."""
    cfg = compose(["dataset=synthetic", f"model.single_logit={str(single).lower()}"])
    k = 2 if single else 10
    net = build_model(cfg.model, (20,), k)
    g = torch.Generator().manual_seed(7)
    n, rho, step = 400, 0.05, 4.0
    y = torch.randint(0, k, (n,), generator=g)
    target = net.loss_target(y, torch.float32)
    center, z = torch.randn(n, net.n_outputs, generator=g), torch.randn(n, net.n_outputs, generator=g)
    per_row = lambda zz: output_loss(net, zz, y) + rho / 2 * ((zz - center) ** 2).sum(1)  # noqa: E731
    z0, zeta, lam = z.clone(), z.clone(), 1.0
    for _ in range(60):
        lam_old, lam = lam, (1 + math.sqrt(1 + 4 * lam * lam)) / 2
        gamma = (1 - lam_old) / lam
        zeta_old = zeta
        zeta = (rho * center + (z - step * net.loss_grad(z, target)) / step) / (rho + 1 / step)
        z = (1 - gamma) * zeta + gamma * zeta_old
    reference = torch.where((per_row(z) <= per_row(z0))[:, None], z, z0)
    fast = fista_output(net, y, target, center, rho, z0, step, tol=0.0, max_steps=60)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- backtracking
def test_backtrack_returns_the_first_step_on_the_ladder_or_none():
    assert backtrack(0.3, 1.0, 2.0, 10) == 1.0
    assert backtrack(5.0, 1.0, 2.0, 10) == 8.0
    assert backtrack(5000.0, 1.0, 2.0, 10) is None  # 2^10 = 1024 < 5000: refused
    assert backtrack(math.inf, 1.0, 2.0, 10) is None


def _phi(z, a_prev, W, b, rho):
    return rho / 2 * float(((z - a_prev @ W.T - b) ** 2).sum())


@pytest.mark.parametrize("cap", [0, 3, 10])
def test_mdlam_weight_and_activation_steps_satisfy_their_bound_or_keep_the_old_point(cap):
    t, data = trainer("mdlam", f"optim.backtrack_max={cap}", "optim.rho=1.0")
    x, y = rows(data)
    t.iterate(x, y)  # a state to step from
    g = torch.Generator().manual_seed(6)
    for l in range(t.L):
        a_prev = x if l == 0 else t.a[l - 1]
        S = t.W[l] + 0.3 * torch.randn(t.W[l].shape, generator=g)
        W, alpha = t.weight_step(l, S, a_prev)
        if alpha is None:
            assert torch.equal(W, S)
            continue
        G = t.rho * (a_prev @ S.T + t.b[l] - t.z[l]).T @ a_prev
        d = W - S
        lhs = _phi(t.z[l], a_prev, W, t.b[l], t.rho)
        assert lhs <= _phi(t.z[l], a_prev, S, t.b[l], t.rho) + float((G * d).sum()) + alpha / 2 * float((d * d).sum()) \
            + 1e-3 * (1 + abs(lhs))
    for l in range(t.L - 1):
        S = t.a[l] + 0.5 * torch.randn(t.a[l].shape, generator=g)
        a, step = t.activation_step(l, S)
        start = steps.box_activations(S, t.z[l], t.eps)
        if step is None:
            assert torch.equal(a, start)
            continue
        W, b, z = t.W[l + 1], t.b[l + 1], t.z[l + 1]
        grad = t.rho * (start @ W.T + b - z) @ W
        d = a - start
        lhs = _phi(z, a, W, b, t.rho)
        assert lhs <= _phi(z, start, W, b, t.rho) + float((grad * d).sum()) + step / 2 * float((d * d).sum()) \
            + 1e-3 * (1 + abs(lhs))
        assert torch.all((a - torch.relu(t.z[l])).abs() <= t.eps + 1e-5)  # inside the box


@pytest.mark.parametrize("cap", [0, 40])
def test_dladmm_weight_and_activation_steps_satisfy_their_bound_or_keep_the_old_point(cap):
    t, data = trainer("dladmm", f"optim.backtrack_max={cap}", "optim.rho=0.5", "optim.theta=1e-3", "optim.tau=1e-3")
    x, y = rows(data)
    t.iterate(x, y)
    L = t.L
    for l in range(L):
        a_prev = x if l == 0 else t.a[l - 1]
        target = torch.cat([t.target(l, sl) for sl in t.chunks(len(y))])
        f = lambda W: t.rho / 2 * float(((target - a_prev @ W.T - t.b[l]) ** 2).sum())  # noqa: E731
        W0 = t.W[l]
        W, theta = t.weight_step(l, a_prev)
        if theta is None:
            assert cap == 0 and torch.equal(W, W0)  # refused: the old W
            continue
        G = t.rho * (a_prev @ W0.T + t.b[l] - target).T @ a_prev
        d = W - W0
        assert f(W) <= f(W0) + float((G * d).sum()) + theta / 2 * float((d * d).sum()) + 1e-3 * (1 + abs(f(W)))
    for l in range(L - 1):
        target = torch.cat([t.target(l + 1, sl) for sl in t.chunks(len(y))])
        W, b, r = t.W[l + 1], t.b[l + 1], torch.relu(t.z[l])
        f = lambda a: t.rho / 2 * (float(((target - a @ W.T - b) ** 2).sum()) + float(((a - r) ** 2).sum()))  # noqa: E731
        a0 = t.a[l]
        a, tau = t.activation_step(l)
        if tau is None:
            assert cap == 0 and torch.equal(a, a0)
            continue
        grad = t.rho * ((a0 @ W.T + b - target) @ W + a0 - r)
        d = a - a0
        assert f(a) <= f(a0) + float((grad * d).sum()) + tau / 2 * float((d * d).sum()) + 1e-3 * (1 + abs(f(a)))


# ----------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("accelerate", [True, False])
def test_mdlam_objective_never_rises_at_fixed_eps(accelerate):
    """With eps fixed, every block update lowers F or leaves it: 20 iterations, acceleration on and off."""
    t, data = trainer("mdlam", f"optim.accelerate={str(accelerate).lower()}", "optim.eps0=0.5", "optim.eps_decay=1.0",
                      "optim.eps_min=0.5", "optim.rho=0.05")
    x, y = rows(data)
    t.iterate(x, y)
    values = [t.F(x, y)]
    for _ in range(20):
        t.iterate(x, y)
        values.append(t.F(x, y))
    assert all(b <= a * (1 + 1e-5) + 1e-6 for a, b in zip(values, values[1:])), values
    assert values[-1] < values[0]
    if accelerate:
        assert t.prev and t.t > 5  # the extrapolation was in use (t_k grows)


def test_mdlam_extrapolates_unlike_the_released_script():
    """The released script sets X_{k-1} = X_k just before extrapolating (and t stays 0): no
    acceleration. Here X_{k-1} is the previous iteration's block, so the start moves."""
    t, data = trainer("mdlam", "optim.rho=0.05")
    x, y = rows(data)
    for _ in range(3):
        t.iterate(x, y)
    W_k, W_prev = t.W[0].clone(), t.prev[("W", 0)].clone()
    assert not torch.equal(W_k, W_prev)
    omega = (t.t - 1) / ((1 + math.sqrt(1 + 4 * t.t * t.t)) / 2)
    assert omega > 0.1  # the extrapolated start W_k + omega (W_k - W_{k-1}) differs from W_k


def test_mdlam_default_schedule_tightens_the_box():
    t, data = trainer("mdlam")
    x, y = rows(data)
    for _ in range(25):
        t.iterate(x, y)
    assert t.eps == pytest.approx(1e-3)  # 100 halved 25 times, floored at eps_min
    assert t.box_gap() <= t.eps + 1e-6


def test_bcd_objective_never_rises():
    t, data = trainer("bcd", n_train=400)
    x, y = rows(data)
    t.iterate(x, y)
    values = [t.phi(x, y)]
    for _ in range(20):
        t.iterate(x, y)
        values.append(t.phi(x, y))
    assert all(b <= a * (1 + 1e-6) for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.5 * values[0]


def test_dladmm_dual_stays_zero_when_rho_is_zero():
    t, data = trainer("dladmm", "optim.rho=0")
    x, y = rows(data)
    t.train_loss = [3.0, 2.0, 2.5, 2.6, 2.7]  # three rises: the schedule would multiply rho
    for _ in range(5):
        t.iterate(x, y)
        assert torch.count_nonzero(t.u) == 0
    assert t.rho == 0.0


def test_dladmm_rho_schedule_after_three_rises_capped():
    t, _ = trainer("dladmm", "optim.rho=0.01", "optim.rho_max=0.05")
    t.train_loss = [2.0, 1.5, 1.6, 1.7, 1.8]  # three rises in a row
    t._rho_schedule()
    assert t.rho == pytest.approx(0.05) and t.theta == pytest.approx(10.0) and t.tau == pytest.approx(10.0)
    t.train_loss = [1.5, 1.6, 1.7, 1.6]  # not three in a row
    t._rho_schedule()
    assert t.rho == pytest.approx(0.05) and t.theta == pytest.approx(10.0)


@pytest.mark.parametrize("optim, extra", [("bcd", []), ("dladmm", ["optim.rho=0.01"]), ("mdlam", ["optim.rho=0.05"])])
def test_chunking_does_not_change_an_iteration(optim, extra):
    results, objectives = [], []
    for chunk in (1000, 37):
        t, data = trainer(optim, f"optim.chunk_rows={chunk}", *extra)
        x, y = rows(data)
        for _ in range(3):
            t.iterate(x, y)
        results.append([w.clone() for w in t.W])
        objectives.append(t.objective(data)["objective"])
    if optim == "mdlam":
        # z_L keeps, row by row, the better of FISTA's start and its end, and FISTA stops on a
        # tolerance: where two candidates are within rounding of each other (the output's flat
        # direction, softmax(z + c) = softmax(z)), the choice follows the rounding, so the
        # weights move by ~1e-3 and F by ~2e-4 of itself after three iterations
        assert objectives[0] == pytest.approx(objectives[1], rel=1e-3)
        return
    assert objectives[0] == pytest.approx(objectives[1], rel=1e-5)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)


def test_state_above_the_memory_limit_is_one_line(tmp_path, make_cfg):
    from amtrain.errors import ConfigError

    with pytest.raises(ConfigError, match="GB of per-sample state in memory, above optim.state_memory_gb=0"):
        run(make_cfg("optim=bcd", "optim.state_memory_gb=0"), tmp_path)


@pytest.mark.parametrize("optim, extra", [("bcd", []), ("dladmm", ["optim.rho=0.01"]), ("mdlam", [])])
def test_each_method_learns_and_records_its_objective(make_cfg, tmp_path, optim, extra):
    import pandas as pd

    metrics = run(make_cfg(f"optim={optim}", "epochs=15", *extra), tmp_path)
    assert metrics["test/acc"] > 0.6  # chance: 0.25
    df = pd.read_csv(tmp_path / "metrics.csv")
    objective = df[(df.split == "train") & (df.metric == "objective")]
    assert len(objective) == 15 and objective.value.notna().all()


def test_dladmm_bias_and_weight_steps_from_the_layer_sums_equal_the_direct_passes():
    t, data = trainer("dladmm", "optim.rho=0.3", "optim.theta=1e-3", "optim.chunk_rows=70", hidden="[40,30]")
    x, y = rows(data)
    t.iterate(x, y)
    for l in range(t.L - 1):  # the hidden layers (the output layer is stepped directly)
        a_prev = x if l == 0 else t.a[l - 1]
        sums = t.layer_sums(l, a_prev)
        assert sums is not None
        W_fast, theta_fast = t.weight_step(l, a_prev, sums)
        W_ref, theta_ref = t.weight_step(l, a_prev)
        assert theta_fast == theta_ref
        torch.testing.assert_close(W_fast, W_ref, rtol=1e-5, atol=1e-6)
        b0 = t.b[l].clone()
        t.update_bias(l, a_prev, sums)
        b_fast = t.b[l].clone()
        t.b[l] = b0
        t.update_bias(l, a_prev)
        torch.testing.assert_close(b_fast, t.b[l], rtol=1e-5, atol=1e-6)
    assert t.layer_sums(t.L - 1, t.a[-1]) is None
