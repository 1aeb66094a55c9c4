"""Conv4's per-block pooling, padding and the unflattened feature maps (Relation Networks)."""

from __future__ import annotations

import pytest
import torch

from manytask.nn import Conv4, output_features, output_shape


def test_defaults_are_the_four_pooled_blocks_of_the_papers():
    enc = Conv4(hidden=8)
    assert enc(torch.zeros(2, 1, 28, 28)).shape == (2, 8)
    assert repr(enc).splitlines()[1].strip() == "in_channels=1, hidden=8"
    assert enc.min_input_size() == 16 and enc.output_size(84, 84) == (5, 5)


def test_relation_network_embedding_keeps_five_by_five_maps():
    # Sung et al. (2018), Figure 2, with the authors' padding: 28 -> 26 -> 13 -> 11 -> 5 -> 5 -> 5.
    enc = Conv4(hidden=8, pool=(True, True, False, False), padding=(0, 0, 1, 1), flatten=False)
    x = torch.rand(3, 1, 28, 28)
    maps = enc(x)
    assert maps.shape == (3, 8, 5, 5) and enc.output_size(28, 28) == (5, 5)
    assert output_shape(enc, (1, 28, 28)) == (8, 5, 5)
    assert len(enc.blocks[2]) == 3 and len(enc.blocks[0]) == 4  # no pool in blocks 3 and 4
    h = x
    for stage in enc.stages():
        h = stage(h)
    torch.testing.assert_close(h, maps)  # the stages still compose to the module
    with pytest.raises(ValueError, match=r"an encoder must return \[B, D\], got \[B, 8, 5, 5\]"):
        output_features(enc, (1, 28, 28))


def test_bad_block_options_and_too_small_images_are_clear_errors():
    with pytest.raises(ValueError, match="pool must list 4 bools, one per block"):
        Conv4(pool=(True, False))
    with pytest.raises(ValueError, match="padding must list 4 ints"):
        Conv4(padding=(1, 1, 1, 1.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding must be >= 0"):
        Conv4(padding=(1, -1, 1, 1))
    with pytest.raises(ValueError, match="flatten must be True or False"):
        Conv4(flatten="no")  # type: ignore[arg-type]
    enc = Conv4(hidden=4, pool=(True, True, False, False), padding=(0, 0, 1, 1))
    assert enc.min_input_size() == 10
    with pytest.raises(ValueError, match=r"at least 10x10 with pool=\(True, True, False, False\)"):
        enc(torch.zeros(1, 1, 9, 9))
    with pytest.raises(ValueError, match="at least 16x16"):
        Conv4(hidden=4)(torch.zeros(1, 1, 15, 15))


def test_group_norm_keeps_examples_independent_and_batch_norm_does_not():
    from manytask.mtl.jacobian import TaskCapture

    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for norm, independent in (("group", True), ("none", True), ("batch", False)):
        enc = Conv4(hidden=8, norm=norm).train()
        alone = enc(x[:1])
        together = enc(x)[:1]
        assert torch.allclose(alone, together, atol=1e-5) == independent, norm
    enc = Conv4(hidden=8, norm="group")
    assert "norm='group'" in repr(enc)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in enc.modules())
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in Conv4(hidden=8, norm="none").modules()
    )
    # a per-example trunk lets a gradient method take every task's gradient from one backward
    assert TaskCapture(enc, list(enc.parameters())).reason is None
    assert TaskCapture(Conv4(hidden=8), list(Conv4(hidden=8).parameters())).reason is not None


@pytest.mark.parametrize("norm", ["group", "none"])
def test_per_example_conv4_takes_the_one_backward_path_exactly(norm):
    """Found by the multi-task step benchmark: Conv4's in-place ReLU modified the norm's output,
    so a group-norm trunk silently fell back to K backward passes."""
    import torch.nn.functional as F

    from manytask.mtl.jacobian import TaskCapture, task_jacobian
    from manytask.nn.conditioning import MultiHead

    torch.manual_seed(0)
    model = MultiHead(lambda: Conv4(hidden=8, norm=norm), (1, 28, 28), (10, 10, 10))
    shared = list(model.shared_parameters())
    g = torch.Generator().manual_seed(1)
    xs = [torch.rand(4, 1, 28, 28, generator=g) for _ in range(3)]
    ys = [torch.randint(0, 10, (4,), generator=g) for _ in range(3)]
    capture = TaskCapture(model, shared)
    with capture:
        outs = model.forward_tasks(xs, [0, 1, 2])
        losses = torch.stack([F.cross_entropy(o, y) for o, y in zip(outs, ys, strict=True)])
    jac, _ = capture.jacobian(losses, [4, 4, 4], retain_graph=True)
    assert capture.last_path == "segments", capture.last_reason
    assert not jac.requires_grad
    from manytask.mtl.aggregators import MGDA

    assert torch.isfinite(MGDA()(jac)).all()  # its solver takes the Gramian to numpy
    torch.testing.assert_close(jac, task_jacobian(losses, shared), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="norm must be one of"):
        Conv4(norm="layer")  # type: ignore[arg-type]
