"""Every path to the per-task Jacobian against K separate backward passes."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from manytask.mtl.jacobian import (
    TaskCapture,
    representation_gramian,
    representation_jacobian,
    task_jacobian,
)
from manytask.nn.backbones import MLP
from manytask.nn.conditioning import FiLM, MultiHead


def reference(losses: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """K separate backward passes, the definition of J."""
    rows = []
    for i in range(losses.shape[0]):
        gs = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).flatten()
                    for g, p in zip(gs, params, strict=True)
                ]
            )
        )
    return torch.stack(rows)


class Net(nn.Module):
    """A trunk and one head per task; the trunk is chosen by the test."""

    def __init__(self, trunk: nn.Module, width: int, k: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = trunk
        self.heads = nn.ModuleList(nn.Linear(width, 3) for _ in range(k))

    def losses(self, x: torch.Tensor, y: torch.Tensor, segments: list[int]) -> torch.Tensor:
        z = self.trunk(x)
        out, start = [], 0
        for i, n in enumerate(segments):
            out.append(F.cross_entropy(self.heads[i](z[start : start + n]), y[start : start + n]))
            start += n
        return torch.stack(out)


def mlp(norm: str = "none") -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(12, 8)]
    if norm == "batch":
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Linear(8, 6), nn.Tanh()]
    return nn.Sequential(*layers)


def conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 3, 3, stride=2, padding="valid", bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3, 6),
    )


def normed() -> nn.Module:
    """Per-example normalisation layers with affine parameters (GroupNorm, LayerNorm)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 6),
        nn.LayerNorm(6),
        nn.Tanh(),
    )


def data(segments: list[int], shape: tuple[int, ...], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = sum(segments)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("segments", [[5, 5, 5], [4, 1, 7], [6]])
@pytest.mark.parametrize("kind", ["mlp", "conv", "norm"])
def test_segment_path_equals_separate_backward_passes(kind, segments):
    trunk = {"mlp": mlp, "conv": conv, "norm": normed}[kind]()
    net = Net(trunk, 6, len(segments))
    x, y = data(segments, (12,) if kind == "mlp" else (1, 6, 6))
    shared, heads = list(net.trunk.parameters()), list(net.heads.parameters())
    capture = TaskCapture(net, shared, exclude=heads)
    assert capture.reason is None
    with capture:
        losses = net.losses(x, y, segments)
    ref = reference(losses, shared)
    ref_heads = torch.autograd.grad(losses.sum(), heads, retain_graph=True)
    jac, head_grads = capture.jacobian(losses, segments, extra=heads)
    assert capture.last_path == "segments"
    assert not jac.requires_grad  # plain numbers: MGDA's solver calls .numpy() on its Gramian
    torch.testing.assert_close(jac, ref, atol=1e-6, rtol=1e-5)
    for g, r in zip(head_grads, ref_heads, strict=True):
        torch.testing.assert_close(g, r)


def test_linear_on_sequences_and_a_layer_called_twice():
    """A Linear on [B, T, in] and one module applied twice (weights shared across depth)."""
    lin = nn.Linear(4, 4)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x))).mean(1)

    torch.manual_seed(0)
    trunk = Twice()
    heads = nn.ModuleList(nn.Linear(4, 3) for _ in range(2))
    x = torch.randn(6, 5, 4)
    y = torch.randint(0, 3, (6,))
    capture = TaskCapture(trunk, list(trunk.parameters()))
    with capture:
        z = trunk(x)
        losses = torch.stack(
            [
                F.cross_entropy(heads[i](z[3 * i : 3 * i + 3]), y[3 * i : 3 * i + 3])
                for i in range(2)
            ]
        )
    ref = reference(losses, list(trunk.parameters()))
    jac, _ = capture.jacobian(losses, [3, 3])
    assert capture.last_path == "segments"
    assert not jac.requires_grad  # plain numbers: MGDA's solver calls .numpy() on its Gramian
    torch.testing.assert_close(jac, ref, atol=1e-6, rtol=1e-5)


def test_batch_norm_in_training_mode_takes_the_exact_general_path():
    segments = [4, 4]
    net = Net(mlp("batch"), 6, 2)
    x, y = data(segments, (12,))
    shared = list(net.trunk.parameters())
    capture = TaskCapture(net, shared, exclude=list(net.heads.parameters()))
    assert capture.reason is not None and "BatchNorm1d" in capture.reason  # affine params
    with capture:
        losses = net.losses(x, y, segments)
    ref = reference(losses, shared)
    jac, _ = capture.jacobian(losses, segments)
    assert capture.last_path == "loop"
    torch.testing.assert_close(jac, ref)


def test_parameter_free_batch_norm_couples_tasks_and_is_detected():
    trunk = nn.Sequential(nn.Linear(12, 6), nn.BatchNorm1d(6, affine=False), nn.ReLU())
    net = Net(trunk, 6, 2)
    x, y = data([4, 4], (12,))
    capture = TaskCapture(net, list(trunk.parameters()))
    assert capture.reason is None
    with capture:
        losses = net.losses(x, y, [4, 4])
    ref = reference(losses, list(trunk.parameters()))
    jac, _ = capture.jacobian(losses, [4, 4])
    assert capture.last_path == "loop" and "couples" in capture.last_reason
    torch.testing.assert_close(jac, ref)
    # In eval mode batch norm is per-example: the segment path is exact again.
    net.eval()
    with capture:
        losses = net.losses(x, y, [4, 4])
    ref = reference(losses, list(trunk.parameters()))
    jac, _ = capture.jacobian(losses, [4, 4])
    assert capture.last_path == "segments"
    assert not jac.requires_grad  # plain numbers: MGDA's solver calls .numpy() on its Gramian
    torch.testing.assert_close(jac, ref, atol=1e-6, rtol=1e-5)


def test_an_output_modified_in_place_falls_back():
    trunk = nn.Sequential(nn.Linear(12, 6), nn.ReLU(inplace=True), nn.Linear(6, 6))
    net = Net(trunk, 6, 2)
    x, y = data([3, 3], (12,))
    capture = TaskCapture(net, list(trunk.parameters()))
    with capture:
        losses = net.losses(x, y, [3, 3])
    ref = reference(losses, list(trunk.parameters()))
    jac, _ = capture.jacobian(losses, [3, 3])
    assert capture.last_path == "loop" and "in place" in capture.last_reason
    torch.testing.assert_close(jac, ref)


def test_shared_inputs_take_the_batched_path():
    net = Net(mlp(), 6, 3)
    x, y = data([5], (12,))
    capture = TaskCapture(net, list(net.trunk.parameters()))
    with capture:
        z = net.trunk(x)
        losses = torch.stack([F.cross_entropy(h(z), y) for h in net.heads])
    ref = reference(losses, list(net.trunk.parameters()))
    jac, _ = capture.jacobian(losses, None)
    assert capture.last_path == "batched"
    torch.testing.assert_close(jac, ref, atol=1e-6, rtol=1e-5)
    # forward_tasks on one shared tensor runs the trunk once on its rows: segments of the
    # per-task requests do not match the captured rows, and the check says so.
    model = MultiHead(partial(MLP, 12, hidden=(8,)), (12,), (3, 3, 3))
    capture = TaskCapture(model, list(model.shared_parameters()))
    with capture:
        outs = model.forward_tasks([x, x, x], [0, 1, 2])
        losses = torch.stack([F.cross_entropy(o, y) for o in outs])
    ref = reference(losses, list(model.shared_parameters()))
    jac, _ = capture.jacobian(losses, [5, 5, 5])
    assert capture.last_path == "loop" and "rows" in capture.last_reason
    torch.testing.assert_close(jac, ref)


@pytest.mark.parametrize("method", ["batched", "loop"])
def test_general_paths(method):
    net = Net(conv(), 6, 2)
    x, y = data([3, 2], (1, 6, 6))
    losses = net.losses(x, y, [3, 2])
    params = [*net.trunk.parameters(), torch.zeros(2, requires_grad=True)]  # unused -> 0
    ref = reference(losses, params)
    torch.testing.assert_close(task_jacobian(losses, params, method=method), ref)


def test_unsupported_layers_are_named():
    model = nn.Sequential(nn.Linear(3, 3), nn.PReLU())
    capture = TaskCapture(model, list(model.parameters()))
    assert "PReLU" in capture.reason
    assert "general" in repr(capture)


def test_conditioning_models_through_forward_tasks():
    """The real models: MultiHead (segments) and FiLM (shared FiLM generator: still Linear)."""
    for cls in (MultiHead, FiLM):
        torch.manual_seed(0)
        model = cls(partial(MLP, 6, hidden=(8, 8)), (6,), (3, 2, 4))
        xs = [torch.randn(n, 6) for n in (4, 3, 5)]
        ys = [torch.randint(0, c, (x.shape[0],)) for x, c in zip(xs, (3, 2, 4), strict=True)]
        shared = list(model.shared_parameters())
        heads = [p for t in range(3) for p in model.task_parameters(t)]
        capture = TaskCapture(model, shared, exclude=heads)
        with capture:
            outs = model.forward_tasks(xs, [0, 1, 2])
            losses = torch.stack([F.cross_entropy(o, y) for o, y in zip(outs, ys, strict=True)])
        ref = reference(losses, shared)
        jac, _ = capture.jacobian(losses, [4, 3, 5])
        assert capture.last_path == "segments", (cls, capture.last_reason)
        torch.testing.assert_close(jac, ref, atol=1e-6, rtol=1e-5)


def test_representation_jacobian_and_gramian():
    torch.manual_seed(0)
    model = MultiHead(partial(MLP, 6, hidden=(8,)), (6,), (3, 2))
    x = torch.randn(7, 6)
    y0, y1 = torch.randint(0, 3, (4,)), torch.randint(0, 2, (3,))
    z = model.shared_representation(x)
    losses = torch.stack(
        [
            F.cross_entropy(model.forward_representation(z[:4], 0), y0),
            F.cross_entropy(model.forward_representation(z[4:], 1), y1),
        ]
    )
    ref = reference(losses, [z])
    jac = representation_jacobian(losses, z, [4, 3])
    torch.testing.assert_close(jac, ref)
    torch.testing.assert_close(representation_jacobian(losses, z), ref)
    gram = representation_gramian(losses, z, [4, 3])
    torch.testing.assert_close(gram, (ref @ ref.T).double(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(representation_gramian(losses, z), (ref @ ref.T).double())


def test_clear_errors():
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="float tensor \\[K\\]"):
        task_jacobian(w.sum(), [w])
    with pytest.raises(ValueError, match="do not require grad"):
        task_jacobian(torch.ones(2), [w])
    with pytest.raises(ValueError, match="params is empty"):
        task_jacobian(torch.stack([w.sum(), w.sum()]), [])
    capture = TaskCapture(nn.Linear(2, 2), list(nn.Linear(2, 2).parameters()))
    assert "not a parameter of the model" in capture.reason
    lin = nn.Linear(2, 1)
    capture = TaskCapture(lin, list(lin.parameters()))
    with capture:
        out = lin(torch.ones(3, 2))
    with pytest.raises(ValueError, match="segments must be 2 positive ints"):
        capture.jacobian(torch.stack([out[0, 0], out[1:, 0].sum()]), [1, 0])
