"""An Elman RNN for sequential MNIST (one pixel per step), as codes for AM.

    c_t = W_x x_t + b + W_h h_{t-1},   h_t = tanh(c_t),   h_0 = 0,   t = 1..T
    prediction = W_o relu(h_T) + b_o                      (ReLU, then a linear read-out of the last step)

The codes are the pre-activations c_t of every step (B x T x d). Backprop baselines run
the same weights through torch's fused ``nn.RNN``; :meth:`ElmanRNN.encode` is the split
forward pass AM uses (a test checks both agree).
"""
from __future__ import annotations

import torch
from torch import nn

from amtrain.errors import ConfigError
from amtrain.models.layered import Classifier


class ElmanRNN(Classifier):
    def __init__(self, n_inputs: int, hidden: int, n_outputs: int, recurrent_init: str = "default"):
        super().__init__()
        self.rnn = nn.RNN(n_inputs, hidden, nonlinearity="tanh", batch_first=True)
        self.head = nn.Linear(hidden, n_outputs)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.sequence(x))
        return self.head(torch.relu(h[:, -1]))

    def readout(self, c_T: torch.Tensor) -> torch.Tensor:
        """The prediction from the last step's code: W_o relu(tanh(c_T)) + b_o."""
        return self.head(torch.relu(torch.tanh(c_T)))

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
