"""SNAIL: the paper's blocks, the batched queries against one sequence per query, causality."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from manytask.meta import SNAIL
from manytask.meta.snail import AttentionBlock, DenseBlock, TCBlock, tc_layers
from manytask.nn import Flatten, init_parameters


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small models run fastest on one intra-op thread (and do not fight a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _snail(ways=3, shots=2, out_features=None, **kw) -> SNAIL:
    kw.setdefault("embedding", 8)
    kw.setdefault("key_sizes", (8, 8, 8))
    kw.setdefault("value_sizes", (4, 4, 4))
    kw.setdefault("filters", 6)
    net = SNAIL(
        Flatten((5,)), in_shape=(5,), ways=ways, shots=shots, out_features=out_features, **kw
    )
    return init_parameters(net, 0).eval()


def _tasks(t=2, n=3, k=2, q=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(t, n * k, 5, generator=g)
    sy = torch.stack([torch.randperm(n * k, generator=g) % n for _ in range(t)])
    qx = torch.randn(t, n * q, 5, generator=g)
    return sx, sy, qx


@pytest.mark.parametrize(("n", "k"), [(3, 2), (2, 1), (5, 5)])
def test_batched_queries_equal_one_sequence_per_query(n, k):
    # The paper: N*K support steps, then ONE query step. Batched: every query at that step.
    net = _snail(ways=n, shots=k)
    sx, sy, qx = _tasks(n=n, k=k)
    batched = net(sx, sy, qx, ways=n)
    support, queries = net.steps(sx, sy, qx)
    for j in range(qx.shape[1]):
        sequence = torch.cat([support, queries[:, j : j + 1]], dim=1)  # N*K + 1 steps
        alone = net.forward_sequence(sequence)[:, -1]
        torch.testing.assert_close(batched[:, j], alone, rtol=1e-5, atol=1e-5)


def test_batched_queries_equal_one_sequence_per_query_in_regression():
    net = _snail(ways=None, shots=4, out_features=2)
    g = torch.Generator().manual_seed(1)
    sx, sy, qx = torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, 2), torch.randn(2, 3, 5)
    batched = net(sx, sy, qx)
    assert batched.shape == (2, 3, 2)
    support, queries = net.steps(sx, sy, qx)
    # A support step carries (y, 1), a query step (0, 0): a real target of 0 is not "missing".
    assert torch.equal(support[..., -3:], torch.cat([sy, torch.ones(2, 4, 1)], -1))
    assert not queries[..., -3:].any()
    for j in range(3):
        alone = net.forward_sequence(torch.cat([support, queries[:, j : j + 1]], 1))[:, -1]
        torch.testing.assert_close(batched[:, j], alone, rtol=1e-5, atol=1e-5)


def test_a_query_never_sees_the_other_queries():
    net = _snail()
    sx, sy, qx = _tasks(q=4)
    all_queries = net(sx, sy, qx, ways=3)
    some = net(sx, sy, qx[:, [7, 2]], ways=3)
    torch.testing.assert_close(some, all_queries[:, [7, 2]], rtol=1e-5, atol=1e-5)


def test_every_step_sees_only_the_past():
    net = _snail()
    x = torch.randn(2, 9, net.blocks[0].query.in_features)
    out = net.forward_sequence(x)
    changed = x.clone()
    changed[:, 5:] = torch.randn(2, 4, x.shape[-1])
    torch.testing.assert_close(net.forward_sequence(changed)[:, :5], out[:, :5])
    assert not torch.allclose(net.forward_sequence(changed)[:, 5:], out[:, 5:])


def test_the_tc_block_reaches_every_earlier_step():
    # Dilations 1, 2, 4, ...: ceil(log2 T) kernel-2 layers see all T steps (2, 4, 8, ... would
    # reach even offsets only).
    for length in (2, 6, 11, 26):
        tc = init_parameters(TCBlock(3, length, filters=4), 0)
        assert len(tc.blocks) == tc_layers(length) == max(1, (length - 1).bit_length())
        assert [b.dilation for b in tc.blocks] == [2**i for i in range(len(tc.blocks))]
        x = torch.randn(1, length, 3, requires_grad=True)
        tc.sequence(x)[0, -1, 3:].sum().backward()  # the new channels of the last step
        assert x.grad is not None
        reached = x.grad[0].abs().sum(-1) > 0
        assert bool(reached.all()), (length, reached)


def test_dense_block_is_a_gated_causal_convolution():
    block = init_parameters(DenseBlock(2, dilation=2, filters=3), 0)
    x = torch.randn(1, 5, 2)
    out = block.sequence(x)
    assert torch.equal(out[..., :2], x)
    w, b = block.conv.weight, block.conv.bias
    for t in range(5):
        prev = x[0, t - 2] if t >= 2 else torch.zeros(2)
        pre = w[..., 0] @ prev + w[..., 1] @ x[0, t] + b
        expect = torch.tanh(pre[:3]) * torch.sigmoid(pre[3:])
        torch.testing.assert_close(out[0, t, 2:], expect)


def test_attention_block_is_causal_scaled_dot_product_attention():
    block = init_parameters(AttentionBlock(4, key=3, value=2), 0)
    x = torch.randn(1, 4, 4)
    out = block.sequence(x)
    q, k, v = block.query(x[0]), block.key(x[0]), block.value(x[0])
    for t in range(4):
        p = torch.softmax(q[t] @ k[: t + 1].T / 3**0.5, -1)
        torch.testing.assert_close(out[0, t, 4:], p @ v[: t + 1])


def test_the_papers_omniglot_network():
    # 5-way 1-shot: 64 + 5 inputs; Att(64, 32), TC(6 steps: 3 layers of 128), Att(256, 128),
    # TC, Att(512, 256), then a 1x1 convolution (a linear layer per step) to 5 logits.
    net = SNAIL(nn.Identity(), in_shape=(64,), ways=5, shots=1)
    kinds = [type(b).__name__ for b in net.blocks]
    assert kinds == ["AttentionBlock", "TCBlock", "AttentionBlock", "TCBlock", "AttentionBlock"]
    assert net.blocks[0].query.in_features == 64 + 5
    assert [(b.key_size, b.value_size) for b in net.blocks[::2]] == [
        (64, 32),
        (256, 128),
        (512, 256),
    ]
    assert net.blocks[2].query.in_features == 69 + 32 + 3 * 128
    assert net.head.in_features == 69 + 32 + 3 * 128 + 128 + 3 * 128 + 256
    assert net.head.out_features == 5 and net.length == 6


def test_the_support_labels_drive_the_prediction():
    net = _snail()
    sx, sy, qx = _tasks()
    assert not torch.allclose(net(sx, sy, qx, ways=3), net(sx, (sy + 1) % 3, qx, ways=3))


def test_bad_arguments_and_batches_say_what_to_do():
    with pytest.raises(ValueError, match="needs ways >= 2"):
        SNAIL(Flatten((5,)), in_shape=(5,))
    with pytest.raises(ValueError, match="same, non-zero length"):
        SNAIL(Flatten((5,)), in_shape=(5,), ways=3, key_sizes=(8, 8), value_sizes=(4,))
    with pytest.raises(ValueError, match="shots must be an int >= 1"):
        SNAIL(Flatten((5,)), in_shape=(5,), ways=3, shots=0)
    sx, sy, qx = _tasks(n=3)
    with pytest.raises(ValueError, match="cannot classify 4-way tasks"):
        _snail(ways=3)(sx, sy, qx, ways=4)
    with pytest.raises(ValueError, match="built for classification but got a regression"):
        _snail()(sx, torch.randn(2, 6, 1), qx)


def test_repr_shows_the_hyper_parameters():
    text = repr(SNAIL(nn.Identity(), in_shape=(64,), ways=5, shots=5))
    for part in ("ways=5", "shots=5 (T=26)", "embedding=64", "key_sizes=(64, 256, 512)",
                 "value_sizes=(32, 128, 256)", "filters=128"):  # fmt: skip
        assert part in text


def test_bad_recipe_arguments_are_config_errors_before_anything_is_written(tmp_path):
    # Found by hand: shots=0 and mismatched key/value sizes used to end in a traceback.
    from manytask.config import load_config
    from manytask.recipes import recipe_path
    from manytask.train import RunContext, train
    from manytask.typed import ConfigError

    recipe = recipe_path("sinusoid/snail-k5")
    with pytest.raises(ConfigError, match=r"model.args.shots: 0 is out of range"):
        load_config(recipe, ["model.args.shots=0"])
    with pytest.raises(ConfigError, match=r"model.args.filters: -1 is out of range"):
        load_config(recipe, ["model.args.filters=-1"])
    cfg = load_config(recipe, ["model.args.key_sizes=[64,256]", "quiet=true", "device=cpu"])
    with pytest.raises(
        ConfigError, match=r"model\.args: learner 'snail': SNAIL: key_sizes and value_sizes"
    ):
        train(cfg, tmp_path / "run", RunContext(torch.device("cpu"), progress=False))
    assert not (tmp_path / "run").exists()


def test_predict_with_another_number_of_classes_is_a_one_line_error(tmp_path):
    # Found by hand: `manytask predict` of a 5-way SNAIL on 3 class folders was a traceback.
    from PIL import Image

    from manytask.nn import Conv4
    from manytask.train.predict import predict_folders
    from manytask.typed import ManytaskError

    for c in "abc":
        (tmp_path / "support" / c).mkdir(parents=True)
        Image.new("L", (28, 28), 40 * ord(c) % 255).save(tmp_path / "support" / c / "1.png")
    (tmp_path / "query").mkdir()
    Image.new("L", (28, 28), 0).save(tmp_path / "query" / "q.png")
    args = (tmp_path / "support", tmp_path / "query")
    five = SNAIL(Conv4(hidden=4), in_shape=(1, 28, 28), ways=5, embedding=4)
    with pytest.raises(ManytaskError, match=r"3 classes: .*cannot classify 3-way tasks"):
        predict_folders(five, *args, in_shape=(1, 28, 28))
    three = SNAIL(Conv4(hidden=4), in_shape=(1, 28, 28), ways=3, embedding=4)
    (row,) = predict_folders(three, *args, in_shape=(1, 28, 28))
    assert row.label in "abc" and 0 < row.probability <= 1
