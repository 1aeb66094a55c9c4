"""What each paper (or the lecture) says its architecture is, checked against the code."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conditioning_cases import NUM_OUTPUTS, TASKS
from torch import nn

from manytask.nn import (
    CGC,
    MLP,
    PLE,
    ConcatConditioning,
    Conv4,
    CrossStitch,
    FiLM,
    MMoE,
    MultiHead,
    MultiplicativeConditioning,
    MultiplicativeGating,
    SoftOrdering,
    build_conditioning,
    init_parameters,
    mask_logits,
    stages_of,
)
from manytask.nn.conditioning import TaskHeads

K = len(TASKS)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _separate_networks(model: nn.Module, factory, columns) -> list[nn.Sequential]:
    """K networks built on their own by ``factory``, loaded with the weights of the columns."""
    nets = []
    for k in range(K):
        body = nn.Sequential(*stages_of(factory()))
        body.load_state_dict(nn.Sequential(*columns(k).stages).state_dict())
        head = nn.Linear(body_out(body, model.input_shape), NUM_OUTPUTS[k])
        head.load_state_dict(model.heads.towers[k][0].state_dict())
        nets.append(nn.Sequential(body, nn.Flatten(), head))
    return nets


def body_out(body: nn.Module, shape: tuple[int, ...]) -> int:
    body.eval()
    with torch.no_grad():
        n = torch.flatten(body(torch.zeros(1, *shape)), 1).shape[1]
    body.train()
    return n


@pytest.mark.parametrize(
    ("factory", "shape"),
    [
        (partial(MLP, 5, hidden=(8, 8), norm="batch"), (5,)),
        (partial(Conv4, 1, hidden=4), (1, 16, 16)),
    ],
    ids=["mlp-batchnorm", "conv4"],
)
def test_gating_with_one_hot_z_is_exactly_independent_networks(factory, shape) -> None:
    """The lecture: multiplicative gating with one-hot z_i = independent networks. Same
    outputs, same gradients, same batch-norm statistics as K separately built networks."""
    model = init_parameters(MultiplicativeGating(factory, shape, NUM_OUTPUTS), 0).train()
    nets = _separate_networks(model, factory, model.column)
    assert model.parameter_counts()["shared"] == 0
    xs = [torch.randn(n, *shape, generator=_gen(n)) for n in (3, 4, 5)]
    weights = [
        torch.randn(x.shape[0], n, generator=_gen(9)) for x, n in zip(xs, NUM_OUTPUTS, strict=True)
    ]

    # int tasks, one call per task, and forward_tasks: bit-for-bit the separate networks
    ys_model = model.forward_tasks(xs, [0, 1, 2])
    ys_nets = [net(x) for net, x in zip(nets, xs, strict=True)]
    for a, b in zip(ys_model, ys_nets, strict=True):
        assert torch.equal(a, b)
    sum((w * y).sum() for w, y in zip(weights, ys_model, strict=True)).backward()
    sum((w * y).sum() for w, y in zip(weights, ys_nets, strict=True)).backward()
    for k, net in enumerate(nets):
        mine = [*model.column(k).parameters(), *model.heads.towers[k].parameters()]
        theirs = list(net.parameters())
        assert len(mine) == len(theirs)
        for p, q in zip(mine, theirs, strict=True):
            assert torch.equal(p.grad, q.grad)
        for (name, a), (_, b) in zip(
            nn.Sequential(*model.column(k).stages).named_buffers(),
            net[0].named_buffers(),
            strict=True,
        ):
            assert torch.equal(a, b), name
    for x, k in zip(xs, range(K), strict=True):  # one call per task: the same again
        assert torch.equal(model(x, k), nets[k](x))

    # a mixed batch with one-hot gates: row b is network task[b] on x[b] alone
    model.zero_grad()
    x = torch.cat(xs)
    task = torch.tensor([0] * 3 + [1] * 4 + [2] * 5)[torch.randperm(12, generator=_gen(1))]
    y = model(x, torch.eye(K)[task])
    for k in range(K):
        rows = (task == k).nonzero().squeeze(1)
        assert torch.equal(y[rows, : NUM_OUTPUTS[k]], nets[k](x[rows]))
        assert not y[rows, NUM_OUTPUTS[k] :].any()


def test_cross_stitch_at_identity_is_independent_networks() -> None:
    factory = partial(MLP, 5, hidden=(8, 8, 8))
    model = init_parameters(CrossStitch(factory, (5,), NUM_OUTPUTS, alpha_self=1.0), 0)
    nets = _separate_networks(model, factory, model.column)
    x = torch.randn(4, 5, generator=_gen(0))
    for k in range(K):
        torch.testing.assert_close(model(x, k), nets[k](x), rtol=0, atol=1e-6)
        # a = I: the units pass no gradient between columns
        model.zero_grad(set_to_none=True)
        model(x, k).sum().backward()
        for j in range(K):
            for p in model.column(j).parameters():
                assert (p.grad is not None and p.grad.any()) == (j == k)
    # with the paper's init (0.9, 0.05) the columns do share
    shared = init_parameters(CrossStitch(factory, (5,), NUM_OUTPUTS, alpha_self=0.9), 0)
    assert not torch.allclose(shared(x, 0), nets[0](x))
    unit = shared.unit(1)
    assert torch.allclose(unit.matrix().sum(1), torch.ones(K))  # rows are convex combinations
    assert unit.matrix().detach()[0, 0].item() == pytest.approx(0.9)


def test_mmoe_gates_sum_to_one_per_task_and_one_expert_is_shared_bottom() -> None:
    factory = partial(MLP, 5, hidden=(8,))
    mmoe = init_parameters(MMoE(factory, (5,), NUM_OUTPUTS, num_experts=3), 0)
    x = torch.randn(6, 5, generator=_gen(0))
    gates = [mmoe.gate_weights(x, k) for k in range(K)]
    for g in gates:
        assert g.shape == (6, 3)
        assert (g >= 0).all()
        torch.testing.assert_close(g.sum(1), torch.ones(6))
    assert not torch.allclose(gates[0], gates[1])  # one gate per task (not OMoE)

    one = init_parameters(MMoE(factory, (5,), NUM_OUTPUTS, num_experts=1), 1)
    bottom = MultiHead(factory, (5,), NUM_OUTPUTS)
    bottom.trunk.load_state_dict(one.experts[0].state_dict())
    bottom.heads.load_state_dict(one.towers.state_dict())
    for k in range(K):
        assert torch.equal(one(x, k), bottom(x, k))


def test_cgc_without_task_experts_is_mmoe_and_ple_with_one_level_is_cgc() -> None:
    factory = partial(MLP, 5, hidden=(8,))
    x = torch.randn(6, 5, generator=_gen(0))
    cgc = init_parameters(CGC(factory, (5,), NUM_OUTPUTS, shared_experts=3, task_experts=0), 0)
    mmoe = MMoE(factory, (5,), NUM_OUTPUTS, num_experts=3)
    level = cgc.level(0)
    mmoe.experts.load_state_dict(level.shared_experts.state_dict())
    mmoe.gates.load_state_dict(level.task_gates.state_dict())
    mmoe.towers.load_state_dict(cgc.towers.state_dict())
    for k in range(K):
        torch.testing.assert_close(cgc(x, k), mmoe(x, k), rtol=0, atol=1e-6)

    cgc = init_parameters(CGC(factory, (5,), NUM_OUTPUTS, shared_experts=2, task_experts=2), 3)
    ple = PLE(factory, (5,), NUM_OUTPUTS, levels=1, shared_experts=2, task_experts=2)
    ple.load_state_dict(cgc.state_dict())
    for k in range(K):
        assert torch.equal(cgc(x, k), ple(x, k))
    # PLE's split: below the last level task experts feed the shared gate, so they are shared
    deep = PLE(factory, (5,), NUM_OUTPUTS, levels=2)
    low = {id(p) for p in deep.level(0).task_experts.parameters()}
    assert low <= {id(p) for p in deep.shared_parameters()}
    assert {id(p) for p in deep.level(0).task_gates[1].parameters()} <= {
        id(p) for p in deep.task_parameters(1)
    }


def test_film_applies_gamma_and_beta_feature_wise_and_starts_near_identity() -> None:
    factory = partial(MLP, 5, hidden=(8, 8))
    model = init_parameters(FiLM(factory, (5,), NUM_OUTPUTS, at=(1,)), 0)
    x = torch.randn(4, 5, generator=_gen(0))
    z = model.descriptors[[2, 2, 2, 2]]
    gamma, beta = model.film(1, z)
    h = model.trunk.stages[0](x)
    h = gamma * h + beta  # eq. (1): FiLM(F | gamma, beta) = gamma F + beta
    h = model.trunk.stages[1](h)
    torch.testing.assert_close(model(x, 2), model.heads(h, 2))
    # a zero generator is the identity: the model is the plain backbone and head
    with torch.no_grad():
        for gen in model.generators.values():
            gen.weight.zero_()
            gen.bias.zero_()
    plain = model.heads(model.trunk(x), 0)
    torch.testing.assert_close(model(x, 0), plain)


def test_concatenation_is_additive_conditioning_of_the_next_layer() -> None:
    """``W [x ; z] + b = W_x x + W_z z + b``: with one-hot z, a learned bias per task."""
    factory = partial(MLP, 5, hidden=(8,))
    model = init_parameters(ConcatConditioning(factory, (5,), NUM_OUTPUTS, at=(0,)), 0)
    first = model.trunk.stages[0][1]
    assert first.in_features == 5 + K
    x = torch.randn(4, 5, generator=_gen(0))
    for k in range(K):
        pre = x @ first.weight[:, :5].T + first.weight[:, 5 + k] + first.bias
        torch.testing.assert_close(model(x, k), model.heads(torch.relu(pre), k))


def test_multiplicative_gains_with_one_hot_z_are_a_vector_per_task() -> None:
    factory = partial(MLP, 5, hidden=(8,))
    model = init_parameters(MultiplicativeConditioning(factory, (5,), NUM_OUTPUTS), 0)
    w = model.gains["1"].weight
    for k in range(K):
        torch.testing.assert_close(model.gain(1, torch.eye(K)[k : k + 1])[0], 1 + w[:, k])
    x = torch.randn(3, 5, generator=_gen(0))
    h = model.trunk.stages[0](x) * (1 + w[:, 1])
    torch.testing.assert_close(model(x, 1), model.heads(h, 1))


def test_soft_ordering_mixes_shared_layers_and_recovers_a_hard_order() -> None:
    factory = partial(MLP, 5, hidden=(8, 8, 8, 8))
    model = init_parameters(SoftOrdering(factory, (5,), NUM_OUTPUTS), 0)
    assert model.depth == 3
    for k in range(K):
        s = model.order_weights(k)
        torch.testing.assert_close(s, torch.full((3, 3), 1 / 3))  # uniform at init
    # task 1 learns the order F_3, F_1, F_2 (the softmax is exactly one-hot at these logits)
    order = [2, 0, 1]
    with torch.no_grad():
        model.scalars[1].logits.copy_(1e4 * torch.eye(3)[order])
    x = torch.randn(4, 5, generator=_gen(0))
    h = model.encoders[1](x)
    for j in order:
        h = model.layers[j](h)
    torch.testing.assert_close(model(x, 1), model.heads(h, 1))
    # the other tasks still mix: a different function of the same shared layers
    assert not torch.allclose(model(x, 0)[:, :1], model.heads(h, 1)[:, :1])


def test_shared_heads_slice_and_mask_heterogeneous_outputs() -> None:
    heads = init_parameters(TaskHeads(6, NUM_OUTPUTS, mode="shared"), 0)
    h = torch.randn(5, 6, generator=_gen(0))
    full = heads.all_outputs(h)
    assert full.shape == (5, max(NUM_OUTPUTS))
    for k, n in enumerate(NUM_OUTPUTS):
        assert torch.equal(heads(h, k), full[:, :n])
    task = torch.tensor([0, 1, 2, 1, 0])
    masked = mask_logits(full, torch.tensor(NUM_OUTPUTS)[task])
    ce = torch.nn.functional.cross_entropy(masked[:1], torch.tensor([2]))
    torch.testing.assert_close(
        ce, torch.nn.functional.cross_entropy(full[:1, :3], torch.tensor([2]))
    )
    assert torch.isinf(masked[1, 1:]).all() and torch.isfinite(masked[1, :1]).all()
    per_task = TaskHeads(6, NUM_OUTPUTS, mode="per_task")
    with pytest.raises(ValueError, match="heads='shared'"):
        per_task.all_outputs(h)


def test_multi_head_shared_representation_feeds_the_heads() -> None:
    model = init_parameters(MultiHead(partial(MLP, 5, hidden=(8,)), (5,), NUM_OUTPUTS), 0)
    x = torch.randn(3, 5, generator=_gen(0))
    z = model.shared_representation(x)
    assert z.shape == (3, 8)
    for k in range(K):
        assert torch.equal(model.forward_representation(z, k), model(x, k))


def test_builder_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"unknown conditioning model 'moe'.*'mmoe'"):
        build_conditioning("moe", TASKS, (5,))
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['experts'\].*num_experts"):
        build_conditioning("mmoe", TASKS, (5,), experts=2)
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        build_conditioning("mmoe", TASKS, (5,), backbone="resnet")
    with pytest.raises(ValueError, match=r"backbone 'mlp': unknown argument\(s\) \['width'\]"):
        build_conditioning("mmoe", TASKS, (5,), backbone_args={"width": 3})
    with pytest.raises(ValueError, match="needs image inputs"):
        build_conditioning("mmoe", TASKS, (5,), backbone="conv4")
    with pytest.raises(ValueError, match="reads no descriptor"):
        build_conditioning("multi_head", TASKS, (5,), descriptor="text")
    with pytest.raises(ValueError, match="heads must be one of"):
        build_conditioning("film", TASKS, (5,), heads="each")
    with pytest.raises(ValueError, match="granularity must be one of"):
        build_conditioning("cross_stitch", TASKS, (5,), granularity="pixel")
    with pytest.raises(ValueError, match="encoder must be one of"):
        build_conditioning("soft_ordering", TASKS, (5,), encoder="none")
    with pytest.raises(ValueError, match=r"at must be distinct ints in \[0, 2\]"):
        build_conditioning("film", TASKS, (5,), at=(3,))
    with pytest.raises(ValueError, match="keep the channel count"):
        build_conditioning("soft_ordering", TASKS, (5,), backbone_args={"hidden": (8, 4)})
    with pytest.raises(ValueError, match="num_experts must be a positive int"):
        build_conditioning("mmoe", TASKS, (5,), num_experts=0)


def test_builder_reads_text_and_metadata_descriptors() -> None:
    film = build_conditioning(
        "film",
        TASKS,
        (5,),
        descriptor=["metadata", "text"],
        text_encoder_args={"dim": 32},
    )
    assert film.descriptors.shape == (K, 2 + 32)
    y = film(torch.zeros(2, 5), film.descriptors[[0, 2]])
    assert y.shape == (2, max(NUM_OUTPUTS))
    nameless = [TASKS[0], TASKS[1].__class__("x", "binary", 1)]
    with pytest.raises(ValueError, match=r"tasks \['x'\] have none"):
        build_conditioning("concat", nameless, (5,), descriptor="text")
