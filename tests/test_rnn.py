"""Elman RNN: split forward through time, recurrent code updates, AM-Adam's weight step, CLI."""
import os

import pytest
import torch

from amtrain.cli import compose
from amtrain.config import Mode
from amtrain.errors import ConfigError
from amtrain.models import build_model
from amtrain.models.rnn import ElmanRNN
from amtrain.optim import build_trainer
from amtrain.optim.am.rnn import readout_grad, readout_scale, readout_term, step_grad, step_term, top_term
from amtrain.train import run


READOUTS = ["last", "mean", "sequence"]
# The closed forms and the fast, reference and compiled passes on another device
# (scripts/device_check.sh: AMTRAIN_TEST_DEVICE=cuda); the trainer-level runs stay on the CPU
DEVICE = torch.device(os.environ.get("AMTRAIN_TEST_DEVICE", "cpu"))


def rnn(readout="last", T=12, n_inputs=1, d=6):
    return ElmanRNN(n_inputs, d, 3, readout=readout, n_steps=T).double().to(DEVICE)


def batch(g, T=12, n=32):
    return (torch.randn(n, T, generator=g, dtype=torch.float64).to(DEVICE),
            torch.randint(0, 3, (n,), generator=g).to(DEVICE))


def assert_same_run(a, b):
    """Two runs, each (the steps' (loss, output) pairs, the final weights), equal to float tolerance."""
    (out_a, w_a), (out_b, w_b) = a, b
    for (loss_a, o_a), (loss_b, o_b) in zip(out_a, out_b, strict=True):
        torch.testing.assert_close(loss_a, loss_b)
        torch.testing.assert_close(o_a, o_b)
    for p, q in zip(w_a, w_b, strict=True):
        torch.testing.assert_close(p, q)


def setup(mode="paper", seed=0, T=12, d=6, readout="last"):
    torch.manual_seed(seed)
    net = rnn(readout, T, d=d)
    cfg = compose(["model=rnn", "optim=am_adam", f"mode={mode}", "dataset=synthetic"])
    x, y = batch(torch.Generator().manual_seed(seed), T)
    return net, build_trainer(cfg.optim, cfg.mu, cfg.mode, net), x, y


@pytest.mark.parametrize("readout", READOUTS)
def test_split_forward_through_time_equals_the_fused_rnn(readout):
    net, _, x, _ = setup(readout=readout)
    c = net.encode(x)
    assert c.shape == (32, 12, 6)
    torch.testing.assert_close(net.readout(c), net(x).detach())
    h, _ = net.rnn(net.sequence(x))
    torch.testing.assert_close(torch.tanh(c), h.detach())  # every step's hidden state
    # the logits are the sum of every step's contribution relu(h_t) W_o(t)^T, and the bias
    parts = [torch.relu(h[:, t]) @ net.step_weights(t, 12).T for t in range(12) if net.step_weights(t, 12) is not None]
    torch.testing.assert_close(sum(parts) + net.head.bias, net(x).detach())
    expected = {"last": 1, "mean": 12, "sequence": 12}[readout]
    assert len(parts) == expected and net.head.in_features == (72 if readout == "sequence" else 6)


@pytest.mark.parametrize("readout", READOUTS)
def test_the_evaluation_forward_equals_the_training_one_and_pool_leaves_its_input(readout):
    """Without autograd the forward takes relu of its own hidden states in place (on the CPU, in
    the column layout: forward_columns); the values are the fused forward's, and pool() and
    readout_columns() called on someone else's states do not touch them."""
    net, _, x, _ = setup(readout=readout)
    x_before = x.clone()
    with torch.no_grad():
        evaluated = net(x)
        h, _ = net.rnn(net.sequence(x))
        fused = net.head(net.pool(h.clone(), in_place=True))
        before = h.clone()
        net.pool(h)
        hc = torch.tanh(net.encode_columns(net.drive_columns(x))[0])
        hc_before = hc.clone()
        net.readout_columns(hc)
    assert torch.equal(h, before) and torch.equal(hc, hc_before) and torch.equal(x, x_before)
    assert evaluated.shape == (32, 3) and evaluated.is_contiguous()
    torch.testing.assert_close(evaluated, fused, rtol=1e-12, atol=1e-12)  # float64: rounding only
    torch.testing.assert_close(evaluated, net(x).detach(), rtol=1e-12, atol=1e-12)  # with autograd: nn.RNN
    if DEVICE.type == "cpu":
        torch.testing.assert_close(net.forward_columns(x), evaluated, rtol=0, atol=0)  # the path taken


@pytest.mark.parametrize("readout", READOUTS)
def test_the_column_evaluation_at_full_length_in_float32_agrees_with_the_fused_rnn(readout):
    """T = 784 one-pixel steps, float32, as Figure 6 evaluates: the logits agree to float32
    rounding over 784 steps and every prediction is the same."""
    torch.manual_seed(1)
    net = ElmanRNN(1, 15, 10, readout=readout, n_steps=784).to(DEVICE)
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with torch.no_grad():
        h, _ = net.rnn(net.sequence(x))
        fused = net.head(net.pool(h))
        columns = net.forward_columns(x)
    torch.testing.assert_close(columns, fused, rtol=1e-5, atol=1e-5)
    assert torch.equal(columns.argmax(1), fused.argmax(1))


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("mode", [Mode.paper, Mode.release])
def test_closed_form_readout_gradient_equals_autograd(readout, mode):
    net, _, x, y = setup(readout=readout)
    c = net.encode(x)
    z = net.readout(c).detach()
    target = net.loss_target(y, z.dtype)
    for t in (11, 5):
        W_t = net.step_weights(t, 12)
        if W_t is None:
            continue
        W_t = W_t.detach()
        z_rest = z - torch.relu(torch.tanh(c[:, t])) @ W_t.T
        ct = (c[:, t] + 0.05).clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(readout_term(net, ct, W_t, z_rest, y, 0.01, mode), ct)
        got = readout_grad(net, W_t, z_rest, target, readout_scale(y, 0.01, mode))(c[:, t] + 0.05)
        torch.testing.assert_close(got, ref)


def test_closed_form_step_gradient_equals_autograd():
    net, _, x, _ = setup()
    u, c = net.drive(x).detach(), net.encode(x)
    for mode in (Mode.paper, Mode.release):
        ct = c[:, 4].clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(step_term(net, ct, u[:, 5], c[:, 5] + 0.1, 0.01, mode), ct)
        torch.testing.assert_close(step_grad(net, u[:, 5], c[:, 5] + 0.1, 0.01, mode)(c[:, 4]), ref)


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("mode", ["paper", "release"])
def test_recurrent_code_updates_lower_their_subobjectives(mode, readout):
    """Each step's solve lowers its own sub-objective: the loss term where the step reaches the
    read-out (with the other steps' logits as they were when it was solved), its successor's
    constraint below the last step, and the proximal term (paper mode)."""
    net, am, x, y = setup(mode, readout=readout)
    mu, m = 0.01, Mode(mode)
    u, c0 = net.drive(x).detach(), net.encode(x)
    c = am.update_codes(u, c0, y, mu)
    T = c.shape[1]

    def prox(a, b):
        return mu * (a - b).pow(2).sum() if m == Mode.paper else 0.0

    with torch.no_grad():
        if readout == "last":  # the original eq. 4 for the last code
            top = lambda code: float(top_term(net, code, y, mu, m) + prox(code, c0[:, -1]))  # noqa: E731
            assert top(c[:, -1]) < top(c0[:, -1])
        z = net.readout(c0)  # logits as the top-down pass had them before solving step t
        lowered = 0
        for t in reversed(range(T)):
            W_t = net.step_weights(t, T)
            z_rest = None if W_t is None else z - torch.relu(torch.tanh(c0[:, t])) @ W_t.T

            def f(code, t=t, W_t=W_t, z_rest=z_rest):
                value = prox(code, c0[:, t])
                if W_t is not None:
                    value = value + readout_term(net, code, W_t, z_rest, y, mu, m)
                if t < T - 1:
                    value = value + step_term(net, code, u[:, t + 1], c[:, t + 1], mu, m)
                return float(value)

            assert f(c[:, t]) <= f(c0[:, t]) + 1e-12, f"step {t}"
            lowered += f(c[:, t]) < f(c0[:, t])
            if W_t is not None:
                z = z_rest + torch.relu(torch.tanh(c[:, t])) @ W_t.T
        assert lowered >= T // 2


def test_weight_step_touches_shared_weights_only_through_local_losses():
    """Given the codes, the weight step needs no backprop through time: each step's loss sees
    only its own input and the previous code."""
    net, am, x, y = setup()
    u, c0 = net.drive(x).detach(), net.encode(x)
    c = am.update_codes(u, c0, y, 0.01)
    before = [p.detach().clone() for p in net.parameters()]
    am.update_weights(x, c, y, 0.01)
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_other_methods_refuse_the_rnn_when_composed():
    from amtrain.config import validate

    for optim in ("am_mem", "admm", "am_adam_off", "am_mem_off"):
        with pytest.raises(ConfigError, match=f"optim={optim} cannot train model=rnn"):
            validate(compose(["model=rnn", f"optim={optim}"]))
    for optim in ("am_adam", "sgd", "adam"):
        validate(compose(["model=rnn", f"optim={optim}"]))


@pytest.mark.parametrize("optim", ["am_adam", "sgd", "adam"])
def test_rnn_learns_a_sequence_problem(make_cfg, tmp_path, optim):
    """The synthetic problem read as a 20-step sequence of single values."""
    cfg = make_cfg("model=rnn", "model.hidden=16", f"optim={optim}", "epochs=8", "dataset.n_features=20")
    assert run(cfg, tmp_path)["test/acc"] > 0.45  # chance: 0.25


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("optim", ["am_adam", "sgd", "adam"])
def test_every_readout_learns_a_short_sequence_task(optim, readout):
    """Sequences of 12 values drawn around -1, 0 or +1 by class: what a mean, the whole sequence or
    the last state can all tell apart (the synthetic clusters read in order need positions a mean
    pools away)."""
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (600,), generator=g)
    x = (y[:, None].float() - 1.0) + torch.randn(600, 12, generator=g)
    torch.manual_seed(0)
    cfg = compose(["model=rnn", "model.hidden=16", f"model.readout={readout}", f"optim={optim}", "dataset=synthetic"])
    net = build_model(cfg.model, (12,), 3)
    trainer = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
    for epoch in range(15):
        for idx in torch.randperm(500, generator=g).split(50):
            trainer.step(x[idx], y[idx])
    with torch.no_grad():
        acc = float((net(x[500:]).argmax(1) == y[500:]).float().mean())
    assert acc > 0.6, acc  # chance: 0.33


@pytest.mark.parametrize("init", ["orthogonal", "identity"])
def test_recurrent_init(init):
    net = build_model(compose(["model=rnn", f"model.recurrent_init={init}"]).model, (1, 28, 28), 10)
    W = net.W_h.detach()
    assert torch.allclose(W @ W.T, torch.eye(W.shape[0]), atol=1e-5)
    if init == "identity":
        assert torch.equal(W, torch.eye(W.shape[0]))
    with pytest.raises(ConfigError, match="recurrent_init"):
        build_model(compose(["model=rnn", "model.recurrent_init=zeros"]).model, (1, 28, 28), 10)


def test_gradient_clipping_bounds_the_sgd_step():
    torch.manual_seed(0)
    cfg = compose(["model=rnn", "optim=sgd", "optim.lr=1.0", "optim.grad_clip=0.01"])
    net = build_model(cfg.model, (20,), 3)
    trainer = build_trainer(cfg.optim, cfg.mu, Mode.release, net)
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    trainer.step(torch.randn(64, 20) * 10, torch.randint(0, 3, (64,)))
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert 0 < (after - before).norm() <= 0.01 * 1.0 + 1e-6  # lr * clip


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("mode", [Mode.paper, Mode.release])
def test_the_fused_code_gradient_equals_the_readout_and_step_gradients(readout, mode):
    from amtrain.optim.am.rnn import code_grad, scaled_back

    net, _, x, y = setup(readout=readout)
    u, c = net.drive(x).detach(), net.encode(x)
    z = net.readout(c).detach()
    target, mu = net.loss_target(y, z.dtype), 0.01
    scale_next = 2.0 * mu if mode == Mode.paper else 2.0 / c[:, 0].numel()
    for t in (11, 4):
        W_t = net.step_weights(t, 12)
        W_t = None if W_t is None else W_t.detach()
        expected = 0
        z_rest = None
        if W_t is not None:
            z_rest = z - torch.relu(torch.tanh(c[:, t])) @ W_t.T
            expected = expected + readout_grad(net, W_t, z_rest, target, readout_scale(y, mu, mode))(c[:, t] + 0.05)
        nxt = (u[:, t + 1], c[:, t + 1] + 0.1) if t < 11 else (None, None)
        if nxt[0] is not None:
            expected = expected + step_grad(net, *nxt, mu, mode)(c[:, t] + 0.05)
        cols = lambda a: None if a is None else a.T.contiguous()  # noqa: E731 (the fast pass's (features, B) layout)
        W_h = net.W_h.detach()
        W_t_back = None if W_t is None else scaled_back(W_t, readout_scale(y, mu, mode))
        at = cols(c[:, t] + 0.05)
        got = code_grad(W_t, W_t_back, cols(z_rest), cols(target), W_h, scaled_back(W_h, scale_next),
                        *map(cols, nxt))
        torch.testing.assert_close(got(at).T, expected)
        # the solve's first call at c^0 takes its tanh and relu from the encoding: the same gradient
        h = torch.tanh(at)
        first = code_grad(W_t, W_t_back, cols(z_rest), cols(target), W_h, scaled_back(W_h, scale_next),
                          *map(cols, nxt), start=(h, torch.relu(h)))
        torch.testing.assert_close(first(at).T, expected)
        torch.testing.assert_close(first(at).T, expected)  # and the second call computes them


@pytest.mark.parametrize("readout", READOUTS)
def test_the_step_weight_table_holds_every_steps_readout_weights(readout):
    net = rnn(readout)
    table, row = net.step_weight_table(12)
    assert table.is_contiguous() and len(row) == 12
    for t in range(12):
        W_t = net.step_weights(t, 12)
        assert (row[t] is None) == (W_t is None)
        if W_t is not None:
            torch.testing.assert_close(table[row[t]], W_t, rtol=0, atol=0)


@pytest.mark.parametrize("readout", READOUTS)
def test_the_jacobi_variant_lowers_the_joint_code_objective(readout):
    """optim.codes.order=jacobi moves every step's code at once: gradient steps on the code part
    of eq. 3 (the read-out's loss plus every step's constraint on its successor, and the
    proximal term), which therefore goes down."""
    torch.manual_seed(0)
    net = rnn(readout)
    cfg = compose(["model=rnn", "optim=am_adam", "mode=paper", "dataset=synthetic", "optim.codes.order=jacobi",
                   "optim.codes.lr=0.05"])
    am = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
    g = torch.Generator().manual_seed(0)
    x, y = batch(g)
    mu = 0.01
    u, c0 = net.drive(x).detach(), net.encode(x)

    @torch.no_grad()
    def joint(c):
        value = net.loss(net.readout(c), y, reduction="sum") + mu * ((c - c0) ** 2).sum()
        pred = u[:, 1:] + torch.tanh(c[:, :-1]) @ net.W_h.T
        return float(value + mu * ((c[:, 1:] - pred) ** 2).sum())

    c = am.update_codes(u, c0, y, mu)
    assert joint(c) < joint(c0)


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("mode", ["paper", "release"])
def test_the_fast_code_pass_equals_the_reference_pass(readout, mode):
    torch.manual_seed(0)
    net = rnn(readout)
    g = torch.Generator().manual_seed(1)
    x, y = batch(g)
    u, c0 = net.drive(x).detach(), net.encode(x)
    codes = []
    for fast in ("true", "false"):
        cfg = compose(["model=rnn", "optim=am_adam", f"mode={mode}", "dataset=synthetic", f"optim.fast={fast}"])
        codes.append(build_trainer(cfg.optim, cfg.mu, cfg.mode, net).update_codes(u, c0, y, 0.01))
    torch.testing.assert_close(codes[0], codes[1])


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("n_inputs", [1, 3])
def test_the_column_layout_maps_equal_the_row_ones(readout, n_inputs):
    """drive_columns, encode_columns, readout_columns: the row maps in the (T, d, B) layout."""
    torch.manual_seed(0)
    net = rnn(readout, 12 // n_inputs, n_inputs)
    x = torch.randn(32, 12, dtype=torch.float64).to(DEVICE)
    rows = lambda a: a.permute(2, 0, 1)  # noqa: E731 (T, d, B) -> (B, T, d)
    u = net.drive_columns(x)
    assert u.is_contiguous()
    torch.testing.assert_close(rows(u), net.drive(x))
    c, h = net.encode_columns(u)
    torch.testing.assert_close(rows(c), net.encode(x))
    torch.testing.assert_close(h, torch.tanh(c))
    torch.testing.assert_close(net.readout_columns(h).T, net.readout(net.encode(x)))


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("mode", ["paper", "release"])
def test_a_fast_step_equals_a_reference_step(readout, mode):
    """Three whole AM-Adam steps, fast (column layout throughout) against the reference (rows):
    the same losses, outputs and weights."""
    results = []
    for fast in ("true", "false"):
        torch.manual_seed(0)
        net = rnn(readout)
        cfg = compose(["model=rnn", "optim=am_adam", f"mode={mode}", "dataset=synthetic", f"optim.fast={fast}"])
        am = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
        g = torch.Generator().manual_seed(1)
        out = []
        for _ in range(3):
            x, y = batch(g)
            out.append(am.step(x, y))
        results.append((out, [p.detach().clone() for p in net.parameters()]))
    assert_same_run(*results)


def test_a_fast_step_with_several_weight_steps_equals_the_reference():
    """optim.weight_iters=2: the fast step reuses the encoding's drives W_x x + b for the first weight
    step only (the second sees W_x moved), so it still equals the reference, which recomputes them."""
    results = []
    for fast in ("true", "false"):
        torch.manual_seed(0)
        net = rnn("sequence")
        cfg = compose(["model=rnn", "optim=am_adam", "dataset=synthetic", "optim.weight_iters=2", f"optim.fast={fast}"])
        am = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
        g = torch.Generator().manual_seed(1)
        for _ in range(2):
            am.step(*batch(g))
        results.append([p.detach().clone() for p in net.parameters()])
    for p, q in zip(*results):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("mode", ["paper", "release"])
@pytest.mark.parametrize("n_inputs", [1, 3])
def test_the_closed_form_constraint_gradients_equal_autograd(mode, n_inputs):
    """The fast weight step's gradients of eq. 6 (summed over steps) in closed form, against
    autograd on the same objective written in rows (update_weights' local term)."""
    torch.manual_seed(0)
    T = 12 // n_inputs
    net = rnn(T=T, n_inputs=n_inputs)
    cfg = compose(["model=rnn", "optim=am_adam", f"mode={mode}", "dataset=synthetic"])
    am = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 12, generator=g, dtype=torch.float64).to(DEVICE)
    c = net.encode(x) + 0.3 * torch.randn(32, T, 6, generator=g, dtype=torch.float64).to(DEVICE)  # codes off the forward pass
    mu, (B, d) = 0.05, (32, 6)
    h_prev = torch.cat([c.new_zeros(B, 1, d), torch.tanh(c[:, :-1])], dim=1)
    pred = net.drive(x) + h_prev @ net.W_h.T
    local = (mu * (c - pred).pow(2).sum() / B if mode == "paper" else (pred - c).pow(2).sum() / (B * d))
    params = (net.rnn.weight_ih_l0, net.W_h, net.rnn.bias_ih_l0, net.rnn.bias_hh_l0)
    expected = torch.autograd.grad(local, params)
    cols = c.permute(1, 2, 0).contiguous()
    got = am.constraint_grads(x, cols, torch.tanh(cols), mu)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def _has_cxx_compiler() -> bool:
    import shutil

    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not _has_cxx_compiler(), reason="torch.compile's CPU backend needs a C++ compiler")
@pytest.mark.parametrize("readout", ["last", "sequence"])
def test_the_compiled_code_pass_equals_the_eager_one(readout):
    """optim.compile=true: two whole AM-Adam steps through torch.compile equal the eager fast
    pass (float64, paper mode: mu, and so every scale, enters the graph as a tensor, and mu
    moves between the steps without a recompile)."""
    results = []
    for compiled in ("false", "true"):
        torch.manual_seed(0)
        net = rnn(readout)
        cfg = compose(["model=rnn", "optim=am_adam", "mode=paper", "mu=additive", "dataset=synthetic",
                       f"optim.compile={compiled}", "optim.codes.iters=2"])
        am = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
        g = torch.Generator().manual_seed(1)
        out, graphs = [], []
        for _ in range(2):
            x, y = batch(g)
            out.append(am.step(x, y)[1])
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        results.append((out, [p.detach().clone() for p in net.parameters()]))
    assert graphs[1] == graphs[0]  # the second step (another mu) compiled nothing
    (out_e, w_e), (out_c, w_c) = results
    for a, b in zip(out_e + w_e, out_c + w_c):
        torch.testing.assert_close(a, b)


def test_compile_is_refused_where_there_is_no_compiled_pass():
    net = ElmanRNN(1, 6, 3)
    cfg = compose(["model=rnn", "optim=am_adam", "dataset=synthetic", "optim.compile=true", "optim.fast=false"])
    with pytest.raises(ConfigError, match="optim.fast=false"):
        build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
    cfg = compose(["optim=am_adam", "dataset=synthetic", "optim.compile=true"])
    with pytest.raises(ConfigError, match="model=rnn"):
        build_trainer(cfg.optim, cfg.mu, cfg.mode, build_model(cfg.model, (20,), 3))


def test_a_failed_compile_is_one_line_naming_the_fix(monkeypatch):
    from amtrain.optim.am import rnn as am_rnn

    class InvalidCxxCompiler(RuntimeError):
        __module__ = "torch._inductor.exc"  # as torch's own compile errors are

    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise InvalidCxxCompiler("No working C++ compiler found in torch._inductor.config.cpp.cxx\nmore")
        return run

    monkeypatch.setattr(am_rnn.torch, "compile", broken_compile)
    net = ElmanRNN(1, 6, 3, n_steps=12)
    cfg = compose(["model=rnn", "optim=am_adam", "dataset=synthetic", "optim.compile=true"])
    am = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
    with pytest.raises(ConfigError) as e:
        am.step(torch.randn(8, 12), torch.randint(0, 3, (8,)))
    msg = str(e.value)
    assert "\n" not in msg and "No working C++ compiler" in msg and "optim.compile=false" in msg


ON_CUDA = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs: AMTRAIN_TEST_DEVICE=cuda on a GPU "
                                                              "(scripts/device_check.sh)")


@ON_CUDA
@pytest.mark.parametrize("readout, mode, compiled", [(r, m, False) for r in READOUTS for m in ("paper", "release")]
                         + [("sequence", "paper", True), ("last", "release", True)])
def test_a_graphed_step_equals_an_eager_step(readout, mode, compiled):
    """optim.cuda_graph: the encoding and the code pass replayed as captured graphs give the eager
    steps' losses, outputs and weights (float64), mu moving between steps (paper mode: mu and every
    scale are the graph's inputs) and a smaller last batch captured anew; with optim.compile, the
    compiled time steps' kernels captured."""
    if compiled and not _has_cxx_compiler():
        pytest.skip("torch.compile needs a C compiler")
    results = []
    for graphed in ("false", "true"):
        torch.manual_seed(0)
        net = rnn(readout)
        cfg = compose(["model=rnn", "optim=am_adam", f"mode={mode}", "mu=additive", "dataset=synthetic",
                       f"optim.cuda_graph={graphed}", "optim.codes.iters=2", f"optim.compile={compiled}"])
        am = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
        g = torch.Generator().manual_seed(1)
        out = [am.step(*batch(g, n=n)) for n in (32, 32, 32, 20)]
        results.append((out, [p.detach().clone() for p in net.parameters()]))
        if graphed == "true":
            assert {k: p.captures for k, p in am.graphs.items()} == {"encode": 2, "codes": 2}  # batch 32, then 20
        else:
            assert am.graphs == {}
    assert_same_run(*results)


def test_on_the_cpu_the_passes_stay_eager_and_a_checkpoint_drops_captured_graphs():
    import pickle

    torch.manual_seed(0)
    net = ElmanRNN(1, 6, 3, readout="sequence", n_steps=12).double()
    cfg = compose(["model=rnn", "optim=am_adam", "dataset=synthetic"])
    am = build_trainer(cfg.optim, cfg.mu, cfg.mode, net)
    assert am.cuda_graph  # the default: on where the tensors are on CUDA
    am.step(*(t.cpu() for t in batch(torch.Generator().manual_seed(1))))
    assert am.graphs == {}
    am.graphs["codes"] = object()  # what a CUDA run holds: not picklable, and tied to its process
    state = pickle.loads(pickle.dumps(am.__getstate__()))
    assert state["graphs"] == {} and state["cuda_graph"] is True
