import math

import torch
from torch import nn

from manytask.nn import Conv4, init_parameters


def test_same_seed_same_parameters_and_global_rng_untouched():
    before = torch.random.get_rng_state()
    a = init_parameters(Conv4(hidden=8), 3)
    b = init_parameters(Conv4(hidden=8), 3)
    c = init_parameters(Conv4(hidden=8), 4)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["blocks.0.0.weight"], pc["blocks.0.0.weight"])
    # Building Conv4 itself draws from the global RNG (PyTorch's constructors); re-initialising
    # must not: the state after init equals the state after only constructing.
    torch.random.set_rng_state(before)
    Conv4(hidden=8)
    after_construct = torch.random.get_rng_state()
    torch.random.set_rng_state(before)
    init_parameters(Conv4(hidden=8), 3)
    assert torch.equal(torch.random.get_rng_state(), after_construct)


def test_matches_pytorch_default_distributions():
    conv = init_parameters(nn.Conv2d(64, 64, 3), 0)
    fan_in = 64 * 9
    bound_w = math.sqrt(6 / ((1 + 5) * fan_in))  # kaiming_uniform with a = sqrt(5)
    assert conv.weight.abs().max() <= bound_w
    assert conv.weight.abs().max() > 0.9 * bound_w
    assert conv.bias.abs().max() <= 1 / math.sqrt(fan_in)
    # A uniform on [-b, b] has std b / sqrt(3).
    assert abs(conv.weight.std().item() - bound_w / math.sqrt(3)) < 0.02 * bound_w


def test_other_layers_use_their_own_reset_under_a_forked_rng():
    lstm = nn.LSTM(4, 3)
    before = torch.random.get_rng_state()
    init_parameters(lstm, 1)
    w1 = lstm.weight_hh_l0.clone()
    init_parameters(lstm, 1)
    assert torch.equal(w1, lstm.weight_hh_l0)
    assert torch.equal(before, torch.random.get_rng_state())
