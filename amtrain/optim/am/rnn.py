"""AM-Adam for the Elman RNN (docs/rnn.md has the derivation).

Algorithm 2.1 with one code per time step, c_t (the pre-activation), shared weights. The
prediction is W_o P(relu(tanh(c_1)), ..., relu(tanh(c_T))) + b_o, a sum of per-step
contributions relu(tanh(c_t)) W_o(t)^T (``model.readout``: the last step only, their mean,
or the whole sequence; :meth:`ElmanRNN.step_weights`)::

    c0 = encode(x)                                                # forward through time
    for t = T .. 1:                                               # top-down, as Alg. 2.2
        c_t <- argmin_c [loss(y, z_{-t} + relu(tanh(c)) W_o(t)^T)]            (where W_o(t) exists: eq. 4)
                      + [mu ||c*_{t+1} - u_{t+1} - W_h tanh(c)||^2]           (t < T: eq. 5)
                      + mu ||c - c0_t||^2
    W_o   <- Adam step on loss(y, W_o P(relu(tanh(c*))) + b_o)
    W_x, W_h, b <- Adam step on sum_t mu ||c*_t - W_x x_t - b - W_h tanh(c*_{t-1})||^2  (eq. 6, shared)

with u_t = W_x x_t + b and z_{-t} the logits of every other step's current code. With
``readout=last`` only c_T meets the loss, as before; with ``mean`` or ``sequence`` every
c_t does, and its problem has the loss term beside its neighbour's constraint. The T code
problems are solved in sequence (each needs the code above it, and the logits are brought
up to date after each); each is a few batched tensor operations with closed-form
gradients. The weight step sums the per-step local losses over all t in one batched
product: given the codes, no gradient flows through time. Release mode uses the
release's reductions (``(1/mu)`` mean loss, mean squared errors), paper mode the sums.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from amtrain.config import Mode
from amtrain.errors import ConfigError
from amtrain.models.rnn import ElmanRNN, products
from amtrain.optim.base import Trainer, fused, make_step_lr
from amtrain.optim.cuda_graph import GraphedPass
from amtrain.optim.am.codes import solve_code
from amtrain.optim.am.linear_bn import one_thread_if_small
from amtrain.optim.am.mu import MuSchedule


def readout_scale(y: torch.Tensor, mu: float, mode: Mode) -> float:
    """The loss's weight in a code problem: the sum (paper), or (1/mu) the mean (release; y (B,)
    or, on a seed axis, (S, B): each copy's mean)."""
    return 1.0 if mode == Mode.paper else 1.0 / (mu * y.shape[-1])


def readout_term(net: ElmanRNN, c_t, W_t, z_rest, y, mu: float, mode: Mode):
    """eq. 4's data term for step t's code: the loss of the logits with step t's contribution from c_t."""
    out = z_rest + torch.relu(torch.tanh(c_t)) @ W_t.T
    return net.loss(out, y, reduction="sum") * readout_scale(y, mu, mode)


def readout_grad(net: ElmanRNN, W_t, z_rest, target, scale: float):
    """Closed-form gradient of readout_term with respect to c_t."""
    W_t = W_t.detach()

    def grad(c):
        h = torch.tanh(c)
        r = torch.relu(h)
        dz = net.loss_grad(torch.addmm(z_rest, r, W_t.T), target).mul_(scale)
        return (dz @ W_t).mul_((h > 0).to(c.dtype)).mul_(1 - h * h)

    return grad


def scaled_back(W, scale):
    """(scale W)^T, contiguous (batched over a leading axis): a backward through W with a loss's
    factor folded in, which is linear in its upstream gradient."""
    return (W * scale).transpose(-1, -2).contiguous()


def code_grad(W_t, W_t_back, zT_rest, targetT, W_h, W_h_back, u_next, c_next, start=None):
    """The gradient of step t's whole data term (the read-out's loss where W_t is given, its
    successor's constraint where u_next is), with tanh(c) computed once. The same numbers as
    readout_grad + step_grad (a test), in the fast pass's layout: every array is a (features,
    samples) column block, the code c and u_next, c_next (d, B), the logits zT_rest and the
    targets (outputs, B). On the CPU the small products are 2 to 5 times faster that way
    (W (15 x 15) times (15 x 1024): 15 us, against 32 us for (1024 x 15) times W^T; the read-out's
    10 x 15 product 12 us against 62 us), and a softmax over 10 classes about 20 times faster
    along the leading dimension.

    Built once per time step and called K times, so what does not depend on c is done before:
    the loss's factors folded into W_t_back = scaled_back(W_t, scale) and W_h_back =
    scaled_back(W_h, scale_next), made once per pass for every step, and the successor's constant
    part u_{t+1} - c*_{t+1}, here. ``start``: (tanh(c^0_t), relu(tanh(c^0_t))) from the encoding;
    the solve's first call is at c = c^0_t, so it takes them rather than compute them again. A call
    is then 11 tensor operations (the first 9); at T = 784 a pass makes T K calls on 15 x 1024
    arrays, so their number, not their arithmetic, sets its time.

    On a seed axis every array has the copies first, (S, d, B) and (S, outputs, B), every weight
    (S, ...), and the products are batched (amtrain.models.rnn.products): the same operations."""
    rest_next = None if u_next is None else u_next - c_next
    first = [start]
    ops = products(W_h if W_t is None else W_t)
    mm, addmm, addmm_ = ops.mm, ops.addmm, ops.addmm_

    def grad(c):
        if first[0] is not None:  # c is still c^0_t
            (h, r), first[0] = first[0], None
        else:
            h, r = torch.tanh(c), None
        g = None
        if W_t is not None:
            zT = addmm(zT_rest, W_t, torch.relu(h) if r is None else r)
            p = torch.sigmoid(zT) if zT.shape[-2] == 1 else torch.softmax(zT, dim=-2)
            g = torch.ops.aten.threshold_backward(mm(W_t_back, p.sub_(targetT)), h, 0)  # where h > 0
        if u_next is not None:
            r = addmm(rest_next, W_h, h)  # W_h tanh(c) + u_{t+1} - c*_{t+1}
            g = mm(W_h_back, r) if g is None else addmm_(g, W_h_back, r)
        return g.addcmul_(g * h, h, value=-1.0)  # times tanh' = 1 - h^2

    return grad


def code_step_columns(c0_t, h0_t, r0_t, zT, W_t, W_t_back, targetT, W_h, W_h_back, u_next, c_next, mu, *,
                      solve: dict):
    """Step t of the fast pass whole: the logits without step t, the code solve (K Nesterov steps on
    code_grad, from c^0_t, whose tanh h0_t and its relu r0_t the encoding made), and the logits with
    the new code. Returns c_t, h_t = tanh(c_t) (kept for the weight step) and the logits. A function
    of tensors only (mu may be a 0-d tensor), so that ``optim.compile`` can hand it to torch.compile
    whole: one graph for all T steps, its element-wise work fused between the products."""
    addmm = products(W_h).addmm
    zT_rest = None if W_t is None else addmm(zT, W_t, r0_t, alpha=-1.0)  # the logits without step t
    c = solve_code(c0_t, None, mu=mu, **solve,
                   data_grad=code_grad(W_t, W_t_back, zT_rest, targetT, W_h, W_h_back, u_next, c_next,
                                       start=(h0_t, r0_t)))
    h = torch.tanh(c)
    return c, h, (zT if W_t is None else addmm(zT_rest, W_t, torch.relu(h)))  # the logits with the new c_t


def compiled(fn):
    """torch.compile(fn) for a fixed-shape pass, its failure to build (no C++ compiler, say) as one line."""
    graph = torch.compile(fn, dynamic=False)

    def run(*args, **kw):
        try:
            return graph(*args, **kw)
        except Exception as e:  # torch's compile errors have no common base class
            if not type(e).__module__.startswith("torch"):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ConfigError(f"optim.compile=true: torch.compile failed ({type(e).__name__}: {first[:200]}): "
                              "install a C++ compiler (the CPU backend needs one) or set optim.compile=false") from e

    return run


def top_term(net: ElmanRNN, c_T, y, mu: float, mode: Mode):
    """eq. 4's data term for the last step's code with the last-step read-out."""
    out = net.head(torch.relu(torch.tanh(c_T)))
    return net.loss(out, y, reduction="sum") if mode == Mode.paper else net.loss(out, y) / mu


def step_term(net: ElmanRNN, c_t, u_next, c_next, mu: float, mode: Mode):
    """eq. 5's data term: how well code c_t predicts the updated code of the next step."""
    pred = u_next + torch.tanh(c_t) @ net.W_h.T
    return mu * (c_next - pred).pow(2).sum() if mode == Mode.paper else F.mse_loss(pred, c_next)


def step_grad(net: ElmanRNN, u_next, c_next, mu: float, mode: Mode):
    """Closed-form gradient of step_term with respect to c_t."""
    W_h = net.W_h.detach()
    scale = 2.0 * mu if mode == Mode.paper else 2.0 / c_next.numel()

    def grad(c):
        h = torch.tanh(c)
        r = torch.addmm(u_next, h, W_h.T).sub_(c_next).mul_(scale)
        return (r @ W_h).mul_(1 - h * h)

    return grad


class AMAdamRNN(Trainer):
    diverge_hint = "lower optim.lr or optim.codes.lr, or change mu.mu0"

    def __init__(self, net: ElmanRNN, mu: MuSchedule, mode: Mode, cfg):
        super().__init__(net)
        self.mu, self.mode, self.codes_cfg = mu, Mode(mode), cfg.codes
        self.fast = bool(cfg.get("fast", True))  # false: the two terms' gradients apart, logits as rows (reference)
        if net.seeds is not None and not (self.fast and getattr(self.codes_cfg, "order", "topdown") == "topdown"):
            raise ConfigError("AM-Adam trains the RNN on a seed axis through its fast top-down pass only: "
                              "drop optim.fast=false and optim.codes.order=jacobi, or run a process per seed")
        self.opt = fused(torch.optim.Adam, net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.weight_iters = cfg.weight_iters
        self.schedulers = make_step_lr(self.opt, cfg.schedule)
        self.compile = bool(cfg.get("compile", False))
        if self.compile and not self.fast:
            raise ConfigError("optim.compile=true compiles the fast code pass: drop optim.fast=false, or the compile")
        self.cuda_graph = bool(cfg.get("cuda_graph", True))
        self.code_step = compiled(code_step_columns) if self.compile else code_step_columns
        self.graphs = {}  # the passes captured as CUDA graphs, by name (_graphed)

    def __getstate__(self) -> dict:
        """For a checkpoint (amtrain.checkpoint): a compiled pass is rebuilt on load, a captured
        graph recaptured, neither pickled."""
        state = dict(self.__dict__)
        state.pop("code_step")
        state["graphs"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("cuda_graph", True)  # a checkpoint written before optim.cuda_graph
        state.setdefault("graphs", {})
        self.__dict__.update(state)
        self.code_step = compiled(code_step_columns) if self.compile else code_step_columns

    def step(self, x, y):
        if self.fast and getattr(self.codes_cfg, "order", "topdown") != "jacobi":
            return self.step_columns(x, y)
        net, mu = self.net, self.mu.value
        with torch.no_grad():
            u = net.drive(x)
            c0 = net.encode(x)  # Alg. 2.2 encodeInput, through time
            output = net.readout(c0)
            loss = net.loss(output, y)
        c = self.update_codes(u, c0, y, mu, output)
        self.update_weights(x, c, y, mu)
        self.mu.after_batch()
        return loss, output

    def step_columns(self, x, y):
        """The same step (optim.fast) with every array in the column layout of ElmanRNN.drive_columns."""
        net, mu = self.net, self.mu.value
        with torch.no_grad():
            u = net.drive_columns(x)
            c0, h0 = self._graphed("encode", net.encode_columns, u)(u)  # Alg. 2.2 encodeInput, through time
            zT = net.readout_columns(h0)
            output = zT.mT  # (B, outputs), or (S, B, outputs) on a seed axis
            loss = net.loss(output, y)
        c, h = self.update_codes_columns(u, c0, y, mu, zT, h0, hidden=True)
        self.update_weights_columns(x, c, y, mu, h, u)
        self.mu.after_batch()
        return loss, output

    def _scales(self, y, mu: float, B: int, d: int):
        """The loss's weight in a code problem, and the successor constraint's gradient factor
        2 mu (paper) or 2 / (B d) (release's mean squared error)."""
        return readout_scale(y, mu, self.mode), 2.0 * mu if self.mode == Mode.paper else 2.0 / (B * d)

    def _solver(self, mu: float) -> dict:
        cc = self.codes_cfg
        return dict(mu=mu, mode=self.mode, lr=cc.lr, iters=cc.iters, momentum=cc.momentum, nesterov=cc.nesterov)

    def update_codes(self, u, c0, y, mu, logits=None):
        """Top-down through time: each step's code problem (the loss term where the step reaches the
        read-out, its successor's constraint below the last step), then the logits brought up to date.
        Codes (B, T, d) in and out; the fast pass runs in the column layout (update_codes_columns)."""
        if getattr(self.codes_cfg, "order", "topdown") == "jacobi":
            return self.update_codes_jacobi(u, c0, y, mu)
        if self.fast:
            cols = lambda a: a.permute(1, 2, 0).contiguous()  # noqa: E731 (B, T, d) -> (T, d, B)
            return self.update_codes_columns(cols(u), cols(c0), y, mu).permute(2, 0, 1).contiguous()
        net, T = self.net, c0.shape[1]
        solve = self._solver(mu)
        with torch.no_grad():
            zT = (net.readout(c0) if logits is None else logits).T.contiguous()  # (outputs, samples)
            targetT = net.loss_target(y, zT.dtype).T.contiguous()
            scale, _ = self._scales(y, mu, c0.shape[0], c0.shape[2])
        c = c0.clone()
        for t in reversed(range(T)):
            W_t = net.step_weights(t, T)
            zT_rest = None
            if W_t is not None:
                W_t = W_t.detach()
                zT_rest = torch.addmm(zT, W_t, torch.relu(torch.tanh(c0[:, t])).T, alpha=-1.0)
            nxt = (u[:, t + 1], c[:, t + 1]) if t < T - 1 else (None, None)
            grad = self._reference_grad(W_t, zT_rest, targetT, scale, nxt, mu)
            c[:, t] = solve_code(c0[:, t], None, **solve, data_grad=grad)
            if W_t is not None:
                zT = torch.addmm(zT_rest, W_t, torch.relu(torch.tanh(c[:, t])).T)  # the logits with the new c_t
        return c

    @torch.no_grad()
    def update_codes_columns(self, u, c0, y, mu, zT=None, h0=None, hidden: bool = False):
        """The same pass (optim.fast) on codes and drives (T, d, B), logits zT (outputs, B) and
        hidden states h0 = tanh(c0) where known: each step's problem solved on contiguous (d, B)
        blocks by code_step_columns (compiled with optim.compile, the whole pass replayed as one
        CUDA graph with optim.cuda_graph). Returns the codes, and with ``hidden`` their tanh as well."""
        net, (d, B) = self.net, c0.shape[-2:]
        h0 = torch.tanh(c0) if h0 is None else h0
        zT = net.readout_columns(h0) if zT is None else zT
        targetT = net.loss_target(y, zT.dtype).mT.contiguous()
        scale, scale_next = self._scales(y, mu, B, d)
        if self.compile:  # graph inputs, not constants: mu moves every mini-batch
            scale, scale_next, mu = (torch.tensor(v, dtype=c0.dtype, device=c0.device) for v in (scale, scale_next, mu))
        c, h = self._graphed("codes", self.code_pass, c0)(u, c0, h0, zT, targetT, scale, scale_next, mu)
        return (c, h) if hidden else c

    def code_pass(self, u, c0, h0, zT, targetT, scale, scale_next, mu):
        """Alg. 2.2 through time on tensors (T, d, B): for t = T..1, step t's code problem given the
        code above it, then the logits brought up to date. Returns the codes and their tanh."""
        net, T = self.net, c0.shape[0]
        solve = self._solver(mu)
        mu_t = solve.pop("mu")
        W_h = net.W_h.detach()
        W_h_back = scaled_back(W_h, scale_next)  # the same for every step
        table, row = net.step_weight_table(T)  # every step's W_o(t), and its backward, made once
        table = table.detach()
        backs = scaled_back(table, scale)
        # the read-out's input at c^0, relu(tanh(c^0_t)), for the steps that reach the read-out only
        # (readout=last: one step of T)
        r0 = (torch.relu(h0) if None not in row
              else [None if k is None else torch.relu(h0[t]) for t, k in enumerate(row)])
        c, h = c0.clone(), torch.empty_like(c0)
        with one_thread_if_small(c0[0]):  # T x K small steps: a thread pool's fork costs more than it saves
            for t in reversed(range(T)):
                k = row[t]
                W_t, W_t_back = (None, None) if k is None else (table[k], backs[k])
                nxt = (W_h_back, u[t + 1], c[t + 1]) if t < T - 1 else (None, None, None)
                c[t], h[t], zT = self.code_step(c0[t], h0[t], r0[t], zT, W_t, W_t_back, targetT, W_h, *nxt, mu_t,
                                                solve=solve)
        return c, h

    def _graphed(self, name: str, fn, like: torch.Tensor):
        """fn, or on CUDA (optim.cuda_graph) fn replayed as a captured graph that reads the network's
        weights where they lie (amtrain.optim.cuda_graph); with optim.compile the graph holds the
        compiled time steps' kernels."""
        if not (self.cuda_graph and like.is_cuda):
            return fn
        if name not in self.graphs:
            self.graphs[name] = GraphedPass(fn, reads=lambda: [p.detach() for p in self.net.parameters()])
        return self.graphs[name]

    def _reference_grad(self, W_t, zT_rest, targetT, scale, nxt, mu):
        """The same gradient as code_grad, from readout_grad and step_grad apart (optim.fast=false)."""
        grads = []
        if W_t is not None:
            grads.append(readout_grad(self.net, W_t, zT_rest.T.contiguous(), targetT.T.contiguous(), scale))
        if nxt[0] is not None:
            grads.append(step_grad(self.net, nxt[0], nxt[1], mu, self.mode))
        return grads[0] if len(grads) == 1 else (lambda c: grads[0](c).add_(grads[1](c)))

    @torch.no_grad()
    def update_codes_jacobi(self, u, c0, y, mu):
        """A variant (``optim.codes.order=jacobi``), not Alg. 2.2: every step's code moves at once.

        Each of the K Nesterov steps takes, for all t together, the gradient of step t's data term
        at the current iterate: the read-out's loss at the current logits, and the successor's
        constraint with c_{t+1} as it stands (not yet updated). That is a gradient step on f's code
        part, in T x fewer, larger operations; but the label's signal moves one step back through
        the recurrence per iteration, so with readout=last it reaches c_{T-K} only."""
        cc, net, T = self.codes_cfg, self.net, c0.shape[1]
        B, d = c0.shape[0], c0.shape[2]
        target, scale = net.loss_target(y, c0.dtype), readout_scale(y, mu, self.mode)
        scale_next = 2.0 * mu if self.mode == Mode.paper else 2.0 / (B * d)
        W_h, W_o = net.W_h.detach(), net.head.weight.detach()
        c, buf = c0.clone(), None
        for _ in range(int(cc.iters)):
            h = torch.tanh(c)
            dz = net.loss_grad(net.head(net.pool(h)), target).mul_(scale)  # (B, outputs)
            g = torch.zeros_like(c)
            if net.readout_kind == "sequence":
                g += (dz @ W_o).view(B, T, d)
            elif net.readout_kind == "mean":
                g += (dz @ W_o / T)[:, None, :]
            else:
                g[:, -1] = dz @ W_o
            g.mul_((h > 0).to(c.dtype))
            r = (u[:, 1:] + h[:, :-1] @ W_h.T - c[:, 1:]).mul_(scale_next)  # successors' constraints
            g[:, :-1] += r @ W_h
            g.mul_(1 - h * h)
            if self.mode == Mode.paper:
                g.add_(c - c0, alpha=2.0 * mu)
            if not cc.momentum:
                c.add_(g, alpha=-cc.lr)
                continue
            buf = g if buf is None else torch.add(g, buf, alpha=cc.momentum)
            if cc.nesterov:
                c.add_(g, alpha=-cc.lr).add_(buf, alpha=-cc.lr * cc.momentum)
            else:
                c.add_(buf, alpha=-cc.lr)
        return c

    def update_weights(self, x, c, y, mu):
        net = self.net
        h_prev = torch.cat([c.new_zeros(c.shape[0], 1, c.shape[2]), torch.tanh(c[:, :-1])], dim=1)  # h_0 = 0
        for _ in range(self.weight_iters):
            self.opt.zero_grad(set_to_none=True)
            out_loss = net.loss(net.readout(c), y)  # Alg. 2.3 line 1
            pred = net.drive(x) + h_prev @ net.W_h.T  # every step's prediction of its code, at once
            if self.mode == Mode.paper:  # eq. 6 summed over steps, mean over samples
                local = mu * (c - pred).pow(2).sum(dim=(1, 2)).mean()
            else:
                local = F.mse_loss(pred, c, reduction="sum") / (c.shape[0] * c.shape[2])
            (out_loss + local).backward()
            self.opt.step()

    def update_weights_columns(self, x, c, y, mu, h=None, u=None):
        """update_weights on codes c (T, d, B), h = tanh(c) and the drives u = W_x x + b where known
        (the encoding's): the read-out's loss through autograd, the constraints' gradients (eq. 6,
        shared weights) in closed form."""
        net = self.net
        h = torch.tanh(c) if h is None else h
        for i in range(self.weight_iters):
            self.opt.zero_grad(set_to_none=True)
            loss = net.loss(net.readout_columns(h).mT, y)  # Alg. 2.3 line 1: W_o, b_o
            (loss if loss.dim() == 0 else loss.sum()).backward()  # (.sum(): the copies of a seed axis)
            with torch.no_grad():
                grads = self.constraint_grads(x, c, h, mu, u if i == 0 else None)  # u is stale once W_x moved
            for p, g in zip((net.rnn.weight_ih_l0, net.W_h, net.rnn.bias_ih_l0, net.rnn.bias_hh_l0), grads):
                p.grad = g
            self.opt.step()

    def constraint_grads(self, x, c, h, mu, u=None):
        """The gradients of eq. 6 summed over steps, sum_t mu ||c_t - W_x x_t - b - W_h h_{t-1}||^2 / B
        (paper; the release's mean squared error: / (B d), no mu), with respect to W_x, W_h and
        both of torch's biases. With r_t = s (pred_t - c_t), s the loss's factor:
        dW_x = sum_t r_t x_t^T, dW_h = sum_t r_t h_{t-1}^T, db = sum_t r_t 1 (h_0 = 0, so t = 1
        has no W_h term). Every sum over t and the samples is one batched product. ``u``: the drives
        W_x x_t + b (T, d, B) at the current weights where the caller has them (the step's encoding),
        which spares recomputing them (23 ms of a 1024-sample step at T = 784 on our CPU)."""
        net, (d, B) = self.net, c.shape[-2:]
        r = (net.drive_columns(x) if u is None else u).sub(c)  # pred_t - c_t, the W_h term still to add
        r[1:].add_(torch.matmul(net.W_h.detach(), h[:-1]))
        r.mul_(2.0 * mu / B if self.mode == Mode.paper else 2.0 / (B * d))
        x_cols = net.columns(x)  # (T, n_inputs, B)

        def summed(a, b):  # sum_t a_t b_t^T, one batched product (over time, and the copies of a seed axis)
            return torch.bmm(a.flatten(0, -3), b.flatten(0, -3).mT).view(*a.shape[:-1], b.shape[-2]).sum(0)

        dW_x, dW_h = summed(r, x_cols), summed(r[1:], h[:-1])
        db = r.sum(dim=(0, -1))
        return dW_x, dW_h, db, db.clone()

