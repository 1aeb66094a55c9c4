"""Backbones cut into stages: MLP, Conv4, any module; shape inference; widening."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from manytask.nn import MLP, Conv4, Trunk, backbone_factory, stages_of
from manytask.nn.backbones import widen_first_layer


def test_stages_compose_to_the_backbone() -> None:
    for module, shape in ((MLP(12, hidden=(6, 5)), (3, 4)), (Conv4(1, hidden=4), (1, 28, 28))):
        module.eval()
        x = torch.randn(2, *shape)
        h = x
        for stage in stages_of(module):
            h = stage(h)
        torch.testing.assert_close(torch.flatten(h, 1), module(x))
    plain = nn.Linear(3, 2)
    assert stages_of(plain) == [plain]


def test_trunk_shapes_leave_batch_norm_statistics_alone() -> None:
    conv = Conv4(1, hidden=4)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    trunk = Trunk(conv, (1, 20, 20))
    assert trunk.shapes == [(1, 20, 20), (4, 10, 10), (4, 5, 5), (4, 2, 2), (4, 1, 1)]
    assert trunk.training
    assert all(torch.equal(before[k], v) for k, v in conv.state_dict().items())
    with pytest.raises(ValueError, match="input_shape must be a non-empty tuple"):
        Trunk(Conv4(), (0, 28, 28))
    with pytest.raises(ValueError, match="stage 0"):
        Trunk(MLP(5), (6,))


def test_widening_keeps_the_old_weights() -> None:
    stage = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU())
    old = stage[0].weight.detach().clone()
    widen_first_layer(stage, 4, (2, 5, 5))
    assert stage[0].in_channels == 6
    assert torch.equal(stage[0].weight[:, :2], old)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    widen_first_layer(flat, 1, (2, 5, 5))
    assert flat[1].in_features == 3 * 5 * 5  # z tiled over the 25 positions
    with pytest.raises(ValueError, match="no Linear or Conv layer"):
        widen_first_layer(nn.ReLU(), 1, (3,))


def test_mlp_and_factory_validate() -> None:
    with pytest.raises(ValueError, match="hidden must be a non-empty sequence"):
        MLP(4, hidden=())
    with pytest.raises(ValueError, match="norm must be one of"):
        MLP(4, norm="group")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout must be in"):
        MLP(4, dropout=1.0)
    make = backbone_factory("conv4", (1, 28, 28), {"hidden": 8})
    a, b = make(), make()
    assert a is not b and isinstance(a, Conv4) and a.hidden == 8
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['in_channels'\]"):
        backbone_factory("conv4", (1, 28, 28), {"in_channels": 3})
