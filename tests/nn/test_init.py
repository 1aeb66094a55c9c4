import math

import pytest
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


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


class _Table(nn.Module):
    """A raw parameter table (like Meta-SGD's learned inner learning rates)."""

    def __init__(self) -> None:
        super().__init__()
        self.lr = nn.Parameter(torch.zeros(5))
        self.rates = nn.ParameterList([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))])
        self.head = nn.Linear(3, 2)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        nn.init.uniform_(self.lr, 0.0, 1.0, generator=generator)
        for r in self.rates:
            nn.init.uniform_(r, 0.0, 1.0, generator=generator)
        nn.init.zeros_(self.head.weight)  # runs after the Linear rule, so it wins


class _NoRule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(4))


def test_every_parameter_comes_from_the_seed():
    # Bug 9: MultiheadAttention, LSTMs and raw parameter tables were drawn from the global RNG.
    def build() -> nn.Module:
        return nn.ModuleDict(
            {
                "mha": nn.MultiheadAttention(8, 2, add_bias_kv=True),
                "lstm": nn.LSTM(4, 3, num_layers=2),
                "emb": nn.Embedding(5, 3, padding_idx=0),
                "table": _Table(),
            }
        )

    a, b, c = init_parameters(build(), 7), init_parameters(build(), 7), init_parameters(build(), 8)
    assert _same(a, b)
    assert not torch.equal(a["mha"].in_proj_weight, c["mha"].in_proj_weight)
    assert not torch.equal(a["table"].lr, c["table"].lr)
    assert not torch.equal(a["table"].rates[1], c["table"].rates[1])
    assert torch.equal(a["table"].head.weight, torch.zeros(2, 3))  # the module's own rule won
    assert torch.equal(a["emb"].weight[0], torch.zeros(3))
    assert torch.equal(a["mha"].in_proj_bias, torch.zeros(24))


def test_no_global_generator_is_read_or_seeded(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("init_parameters touched a global generator")

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LSTM(4, 4), nn.MultiheadAttention(4, 1), _Table())
    for name in ("manual_seed", "seed", "rand", "randn", "randint", "get_rng_state"):
        monkeypatch.setattr(torch, name, forbidden)
    monkeypatch.setattr(torch.random, "manual_seed", forbidden)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", forbidden)
    monkeypatch.setattr(torch.cuda, "manual_seed", forbidden)
    init_parameters(model, 0)


def test_parameters_without_a_rule_are_an_error_naming_the_module():
    model = nn.Sequential(nn.Linear(2, 2), _NoRule())
    with pytest.raises(TypeError, match=r"1 \(_NoRule\).*reset_parameters\(self, generator\)"):
        init_parameters(model, 0)


def test_other_layers_are_deterministic_and_leave_the_global_rng_alone():
    lstm = nn.LSTM(4, 3)
    before = torch.random.get_rng_state()
    init_parameters(lstm, 1)
    w1 = lstm.weight_hh_l0.clone()
    init_parameters(lstm, 1)
    assert torch.equal(w1, lstm.weight_hh_l0)
    assert torch.equal(before, torch.random.get_rng_state())
    assert w1.abs().max() <= 1 / math.sqrt(3)
