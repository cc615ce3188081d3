"""amtrain.optim.cuda_graph.GraphedPass on a GPU (AMTRAIN_TEST_DEVICE=cuda; skipped elsewhere)."""
import os

import pytest
import torch

from amtrain.optim.cuda_graph import GraphedPass

DEVICE = torch.device(os.environ.get("AMTRAIN_TEST_DEVICE", "cpu"))
pytestmark = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs: AMTRAIN_TEST_DEVICE=cuda on a GPU "
                                                               "(scripts/device_check.sh)")


def test_a_replay_computes_the_eager_pass_for_new_inputs_and_numbers():
    w = torch.randn(5, 5, dtype=torch.float64, device=DEVICE)

    def fn(x, s):
        for _ in range(20):  # many small kernels, as a time loop
            x = torch.tanh(w @ x) * s
        return x, x.sum()

    graphed = GraphedPass(fn, reads=lambda: [w])
    for i in range(3):
        x = torch.randn(5, 7, dtype=torch.float64, device=DEVICE)
        got, expected = graphed(x, 0.5 + i), fn(x, 0.5 + i)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)
    assert graphed.captures == 1


def test_outputs_outlive_the_next_replay():
    graphed = GraphedPass(lambda x: (x * 2,))
    (first,) = graphed(torch.ones(3, device=DEVICE))
    graphed(torch.zeros(3, device=DEVICE))
    torch.testing.assert_close(first, torch.full((3,), 2.0, device=DEVICE))


def test_a_new_shape_or_moved_weights_capture_anew():
    holder = {"w": torch.ones(4, 4, device=DEVICE)}
    graphed = GraphedPass(lambda x: (holder["w"] @ x,), reads=lambda: [holder["w"]])
    x = torch.ones(4, 2, device=DEVICE)
    torch.testing.assert_close(graphed(x)[0], torch.full((4, 2), 4.0, device=DEVICE))
    graphed(torch.ones(4, 3, device=DEVICE))
    assert graphed.captures == 2
    holder["w"] = torch.full((4, 4), 2.0, device=DEVICE)  # a new tensor: the old capture would read freed memory
    torch.testing.assert_close(graphed(x)[0], torch.full((4, 2), 8.0, device=DEVICE))
    assert graphed.captures == 3
    holder["w"].mul_(0.5)  # in place, as an optimizer step: the capture reads it as it is now
    torch.testing.assert_close(graphed(x)[0], torch.full((4, 2), 4.0, device=DEVICE))
    assert graphed.captures == 3
