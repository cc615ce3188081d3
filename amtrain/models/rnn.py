"""An Elman RNN for sequential MNIST (one pixel per step), as codes for AM.

    c_t = W_x x_t + b + W_h h_{t-1},   h_t = tanh(c_t),   h_0 = 0,   t = 1..T
    prediction = W_o P(relu(h_1), ..., relu(h_T)) + b_o

The paper applies "ReLU to the output sequence before making a prediction"; the read-out
P (``model.readout``) is one of its readings:

* ``last``: P = relu(h_T), the last step only;
* ``mean``: P = (1/T) sum_t relu(h_t), the sequence pooled;
* ``sequence``: P = vec(relu(h_1), ..., relu(h_T)), the whole sequence (W_o is n_out x T d).

In every reading the logits are a sum of per-step contributions, relu(h_t) W_o(t)^T + b_o
(:meth:`ElmanRNN.step_weights`), which is what AM's code problems use.

The codes are the pre-activations c_t of every step (B x T x d). Backprop baselines run
the same weights through torch's fused ``nn.RNN``; :meth:`ElmanRNN.encode` is the split
forward pass AM uses (a test checks both agree). Without autograd on the CPU (evaluation),
the forward runs the time loop in the column layout instead (:meth:`ElmanRNN.forward_columns`).

The column-layout maps also take S networks stacked on a seed axis
(:class:`amtrain.models.stacked.StackedElmanRNN`): each array gains the seed axis after
time, (T, S, d, B), and each product is batched over it (:func:`products`).
"""
from __future__ import annotations

import torch
from torch import nn

from amtrain.errors import ConfigError
from amtrain.models.layered import Classifier


READOUTS = ("last", "mean", "sequence")


class _Products:
    """The products of the column layout for one network's matrices (d, d) ..., or for S
    networks' stacked on a seed axis (S, d, d) ...: mm and addmm, or bmm and baddbmm."""

    def __init__(self, mm, addmm, addmm_):
        self.mm, self.addmm, self.addmm_ = mm, addmm, addmm_


ONE = _Products(torch.mm, torch.addmm, torch.Tensor.addmm_)
STACKED = _Products(torch.bmm, torch.baddbmm, torch.Tensor.baddbmm_)


def products(W: torch.Tensor) -> _Products:
    """The products for weights W: ONE for a matrix, STACKED for a seed axis of them. Chosen
    once per pass or time step, not per product: a time step's small products are set by
    their overhead."""
    return ONE if W.dim() == 2 else STACKED


class ElmanRNN(Classifier):
    def __init__(self, n_inputs: int, hidden: int, n_outputs: int, recurrent_init: str = "default",
                 readout: str = "last", n_steps: int = 0):
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(f"model.readout={readout!r} is unknown: use one of {', '.join(READOUTS)}")
        if readout == "sequence" and n_steps < 1:
            raise ConfigError("model.readout=sequence needs the number of steps (the input's length / n_inputs)")
        self.rnn = nn.RNN(n_inputs, hidden, nonlinearity="tanh", batch_first=True)
        self.head = nn.Linear(hidden * n_steps if readout == "sequence" else hidden, n_outputs)
        self.readout_kind, self.n_steps = readout, n_steps
        with torch.no_grad():
            if recurrent_init == "orthogonal":
                nn.init.orthogonal_(self.rnn.weight_hh_l0)
            elif recurrent_init == "identity":  # Le et al. 2015
                self.rnn.weight_hh_l0.copy_(torch.eye(hidden))
            elif recurrent_init != "default":
                raise ConfigError(f"model.recurrent_init={recurrent_init!r} is unknown: use default, "
                                  "orthogonal or identity")
        self.n_inputs, self.hidden, self.n_outputs = n_inputs, hidden, n_outputs

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) or vectors (B, F) -> sequences (B, T, n_inputs), row-major pixel order."""
        return x.reshape(x.shape[0], -1, self.n_inputs)

    @property
    def W_h(self) -> torch.Tensor:
        return self.rnn.weight_hh_l0

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """u_t = W_x x_t + b (both of torch's biases) for every step at once: (B, T, d)."""
        r = self.rnn
        return torch.nn.functional.linear(self.sequence(x), r.weight_ih_l0, r.bias_ih_l0 + r.bias_hh_l0)

    def pool(self, h: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """P(relu(h_1), ..., relu(h_T)) for hidden states h (B, T, d). ``in_place``: h is the caller's
        own temporary, so the relu may overwrite it (evaluation: at T = 784 a copy of 10,000
        images' states is 470 MB, a quarter of the evaluation's time on our CPU)."""
        if self.readout_kind == "last":
            return torch.relu(h[:, -1])
        r = h.relu_() if in_place else torch.relu(h)
        return r.mean(dim=1) if self.readout_kind == "mean" else r.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and x.device.type == "cpu":
            return self.forward_columns(x)
        h, _ = self.rnn(self.sequence(x))
        return self.head(self.pool(h, in_place=not torch.is_grad_enabled()))  # no autograd: nothing needs h

    @torch.no_grad()
    def forward_columns(self, x: torch.Tensor) -> torch.Tensor:
        """The logits (B, n_out) without autograd, the time loop in the column layout: each step
        h_t = tanh(u_t + W_h h_{t-1}) written over its own drive u_t, so the states take no second
        (T, d, B) array, and relu taken in place before the read-out. The fused forward's values
        to float rounding; on our CPU it evaluates 10,000 images at T = 784 in 0.58 s against
        1.24 s (one thread). On CUDA the fused (cuDNN) forward stays: a kernel per step is slower."""
        h = self.drive_columns(x)  # (T, d, B): the drives u, then the hidden states
        h_prev = h.new_zeros(h.shape[1:])
        addmm_ = products(self.W_h).addmm_
        for t in range(h.shape[0]):
            h_prev = addmm_(h[t], self.W_h, h_prev).tanh_()
        return self.readout_columns(h, in_place=True).mT.contiguous()

    def readout(self, c: torch.Tensor) -> torch.Tensor:
        """The prediction from all codes c (B, T, d): W_o P(relu(tanh(c))) + b_o."""
        return self.head(self.pool(torch.tanh(c)))

    def step_weights(self, t: int, T: int):
        """W_o(t): the columns of W_o that relu(h_t) meets (None: step t does not reach the read-out).
        last: W_o at t = T-1 only; mean: W_o / T at every step; sequence: W_o's t-th block of d columns."""
        W = self.head.weight
        if self.readout_kind == "last":
            return W if t == T - 1 else None
        if self.readout_kind == "mean":
            return W / T
        return W[:, t * self.hidden:(t + 1) * self.hidden]

    def step_weight_table(self, T: int):
        """Every step's W_o(t) made at once: a contiguous table (k, n_out, d) and, for each t, the row
        of the table that is W_o(t), or None where step t does not reach the read-out. sequence: W_o's
        T blocks (k = T); mean: W_o / T for every step (k = 1); last: W_o at t = T-1 only (k = 1)."""
        W = self.head.weight  # (n_out, T d), or (S, n_out, T d) on a seed axis: the table's rows then (S, n_out, d)
        if self.readout_kind == "sequence":
            return W.view(*W.shape[:-1], T, self.hidden).movedim(-2, 0).contiguous(), list(range(T))
        if self.readout_kind == "mean":
            return (W / T)[None], [0] * T
        return W[None].contiguous(), [None] * (T - 1) + [0]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """All codes c_1..c_T (B, T, d) of a forward pass: the time loop, batched over samples."""
        u = self.drive(x)
        c = torch.empty_like(u)
        h = u.new_zeros(u.shape[0], self.hidden)
        for t in range(u.shape[1]):
            c[:, t] = torch.addmm(u[:, t], h, self.W_h.T)
            h = torch.tanh(c[:, t])
        return c

    # The same maps with each step's arrays as (features, samples) column blocks, stacked over
    # time: codes and drives (T, d, B), logits (outputs, B). AM-Adam's fast pass works in this
    # layout, where a step's small products are 2 to 5 times faster on the CPU
    # (amtrain.optim.am.rnn.code_grad); tests check each against its row version above.
    # On a seed axis: (T, S, d, B) and (S, outputs, B), the same code (StackedElmanRNN).
    def columns(self, x: torch.Tensor) -> torch.Tensor:
        """The inputs as columns: (T, n_inputs, B), a view ((T, S, n_inputs, B) on a seed axis)."""
        return self.sequence(x).movedim(-2, 0).transpose(-1, -2)

    def drive_columns(self, x: torch.Tensor) -> torch.Tensor:
        """u (T, d, B): u[t] = W_x x_t + b."""
        r = self.rnn
        x_cols = self.columns(x).contiguous()  # (T, n_inputs, B); its layout is u's
        bias = (r.bias_ih_l0 + r.bias_hh_l0)[..., None]
        if self.n_inputs == 1:  # one pixel per step: an outer product, one pass (a matmul with k = 1 is slower)
            return torch.addcmul(bias, r.weight_ih_l0, x_cols)
        return torch.matmul(r.weight_ih_l0, x_cols) + bias

    @torch.no_grad()
    def encode_columns(self, u: torch.Tensor):
        """All codes c (T, d, B) given the drives u (T, d, B), c[t] = u[t] + W_h h_{t-1}, and the
        hidden states h = tanh(c) met on the way."""
        c, h = (u.new_empty(u.shape) for _ in range(2))  # contiguous: each step's block c[t] is
        h_prev = u.new_zeros(u.shape[1:])
        addmm = products(self.W_h).addmm
        for t in range(u.shape[0]):
            addmm(u[t], self.W_h, h_prev, out=c[t])
            h_prev = torch.tanh(c[t], out=h[t])
        return c, h

    def readout_columns(self, h: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """The logits (outputs, B) from the hidden states h = tanh(c) (T, d, B): W_o P(relu(h)) + b_o.
        ``in_place``: h is the caller's own temporary, and relu may overwrite it."""
        W, b = self.head.weight, self.head.bias[..., None]
        addmm = products(W).addmm
        if self.readout_kind == "last":
            return addmm(b, W, torch.relu(h[-1]))
        r = h.relu_() if in_place else torch.relu(h)
        if self.readout_kind == "mean":
            return addmm(b, W, r.mean(dim=0))
        # row t*d + j: step t's unit j, as pool() (on a seed axis each copy's rows)
        r = r.movedim(0, -3)  # (S,) T, d, B
        return addmm(b, W, r.reshape(*r.shape[:-3], -1, r.shape[-1]))
