"""AM weight updates (Alg. 2.3): layer-local and independent given the codes."""
import copy

import torch

from amtrain.config import Mode
from amtrain.models import mlp
from amtrain.optim.am.online import AMAdam
from amtrain.optim.am.mu import MuSchedule
from conftest import am_adam_cfg


Cfg = am_adam_cfg(lr=0.01)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)


def test_weight_updates_are_layer_local_and_independent():
    """Each layer's new weights depend only on (a_{l-1}, c*_l): changing another layer's codes changes nothing."""
    torch.manual_seed(0)
    net = mlp((12,), 3, [10, 8, 6], "relu")
    x, y = batch()
    am = AMAdam(net, MuSchedule(0.01), Mode.paper, Cfg)
    c = am.update_codes(am.encode(x), y, 0.01)
    a = net.activations(x, c)

    def after_update(codes, acts):
        am2 = AMAdam(copy.deepcopy(net), MuSchedule(0.01), Mode.paper, Cfg)
        am2.update_weights(acts, codes, y, 0.01)
        return [b.linear().weight.detach().clone() for b in am2.net.blocks] + [am2.net.head.weight.detach().clone()]

    base = after_update(c, a)
    # perturb only the top code (and the activation computed from it): layers 1 and 2 must not notice
    c_pert = list(c)
    c_pert[2] = c[2] + torch.randn_like(c[2])
    a_pert = net.activations(x, c_pert)
    moved = after_update(c_pert, a_pert)
    assert torch.equal(base[0], moved[0]) and torch.equal(base[1], moved[1])
    assert not torch.equal(base[2], moved[2]) and not torch.equal(base[3], moved[3])


def test_one_adam_over_all_layers_equals_separate_adams_per_layer():
    torch.manual_seed(0)
    net = mlp((12,), 3, [10, 8], "relu")
    ref = copy.deepcopy(net)
    x, y = batch()
    am = AMAdam(net, MuSchedule(0.01), Mode.paper, Cfg)
    c = am.update_codes(am.encode(x), y, 0.01)
    a = net.activations(x, c)
    am.update_weights(a, c, y, 0.01)
    # reference: one Adam per layer, each on its own loss, run one after the other
    ref_am = AMAdam(ref, MuSchedule(0.01), Mode.paper, Cfg)
    opts = [torch.optim.Adam(b.parameters(), lr=Cfg.lr) for b in ref.blocks] + [torch.optim.Adam(ref.head.parameters(), lr=Cfg.lr)]
    for l, opt in enumerate(opts[:-1]):
        opt.zero_grad()
        ref_am.local_loss(l, a[l], c[l], 0.01).backward()
        opt.step()
    opts[-1].zero_grad()
    ref_am.output_loss(a[-1], y).backward()
    opts[-1].step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


def test_am_step_lowers_the_training_loss():
    torch.manual_seed(0)
    net = mlp((12,), 3, [16, 16], "relu")
    x, y = batch()
    am = AMAdam(net, MuSchedule(0.003), Mode.release, Cfg)
    first, _ = am.step(x, y)
    for _ in range(30):
        last, _ = am.step(x, y)
    assert float(last) < 0.5 * float(first)
