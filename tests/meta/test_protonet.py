import pytest
import torch
from torch import nn

from manytask.meta import ProtoNet, prototypes, squared_distances
from manytask.nn import Conv4


def _tasks(t=3, n=4, k=2, q=3, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(t, n * k, d, generator=g)
    sy = torch.stack([torch.randperm(n * k, generator=g) % n for _ in range(t)])
    qx = torch.randn(t, n * q, d, generator=g)
    return sx, sy, qx


def test_logits_are_negative_squared_distances_to_class_means():
    # Snell et al. eq. 1-2 with an identity embedding, computed naively per task and class.
    sx, sy, qx = _tasks()
    logits = ProtoNet(nn.Identity())(sx, sy, qx)
    t, m, n = logits.shape
    assert (t, m, n) == (3, 12, 4)
    for i in range(t):
        for c in range(n):
            proto = sx[i][sy[i] == c].mean(0)
            expect = -((qx[i] - proto) ** 2).sum(-1)
            torch.testing.assert_close(logits[i, :, c], expect, rtol=1e-5, atol=1e-5)


def test_query_at_a_prototype_is_classified_as_that_class():
    sx, sy, _ = _tasks(t=2, n=5, k=3)
    protos = prototypes(sx, sy, 5)
    logits = ProtoNet(nn.Identity())(sx, sy, protos)
    assert torch.equal(logits.argmax(-1), torch.arange(5).expand(2, 5))


def test_label_permutation_equivariance():
    sx, sy, qx = _tasks(t=1, n=4, k=2)
    perm = torch.tensor([2, 0, 3, 1])
    base = ProtoNet(nn.Identity())(sx, sy, qx)
    permuted = ProtoNet(nn.Identity())(sx, perm[sy], qx)
    torch.testing.assert_close(permuted[..., perm], base)


def test_squared_distances_nonnegative_and_exact():
    a, b = torch.randn(2, 7, 5), torch.randn(2, 3, 5)
    d = squared_distances(a, b)
    torch.testing.assert_close(d, torch.cdist(a, b) ** 2, rtol=1e-4, atol=1e-4)
    assert bool((d >= 0).all())


def test_missing_class_in_support_is_an_error():
    sx = torch.randn(1, 4, 3)
    sy = torch.tensor([[0, 0, 2, 2]])
    with pytest.raises(ValueError, match="at least one support example"):
        ProtoNet(nn.Identity())(sx, sy, torch.randn(1, 2, 3))


def test_shape_errors_name_the_argument():
    net = ProtoNet(nn.Identity())
    with pytest.raises(ValueError, match="support_y"):
        net(torch.randn(2, 4, 3), torch.zeros(2, 5, dtype=torch.long), torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match="query_x"):
        net(torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.long), torch.randn(1, 2, 3))


def test_conv4_protonet_trains_on_a_batch():
    torch.manual_seed(0)  # test-only: the module init uses the global RNG
    learner = ProtoNet(Conv4())
    g = torch.Generator().manual_seed(1)
    sx = torch.rand(2, 5, 1, 28, 28, generator=g)
    sy = torch.arange(5).repeat(2, 1)
    qx = torch.rand(2, 10, 1, 28, 28, generator=g)
    qy = torch.arange(5).repeat(2, 2)
    opt = torch.optim.Adam(learner.parameters(), 1e-3)
    losses = []
    for _ in range(15):
        logits = learner(sx, sy, qx)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), qy.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learner.parameters())


def test_repr_shows_encoder():
    assert "in_channels=1, hidden=64" in repr(ProtoNet(Conv4()))


def test_distances_stay_fp32_under_bf16_autocast():
    learner = ProtoNet(Conv4(hidden=8))
    sx, qx = torch.rand(1, 5, 1, 28, 28), torch.rand(1, 10, 1, 28, 28)
    sy = torch.arange(5)[None]
    ref = learner(sx, sy, qx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = learner(sx, sy, qx)
    assert mixed.dtype == torch.float32
    # bf16 convolutions perturb the embeddings a little, the distances are not cancelled away.
    assert torch.allclose(mixed, ref, rtol=0.05, atol=0.05 * ref.abs().mean().item())
