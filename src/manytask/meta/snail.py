"""SNAIL: a Simple Neural AttentIve meta-Learner (Mishra, Rohaninejad, Chen & Abbeel, ICLR 2018).

Black-box adaptation with a sequence model: the support set is read as a sequence of
``(embedding, label)`` steps, and the query is the last step, with its label zeroed; the network
predicts that step's label. Whatever the network has "learned" about the task is in its
activations: the whole adaptation ``phi_i = f_theta(D_i^tr)`` is one causal forward pass.

Building blocks (section 3 and appendix A of the paper):

``DenseBlock(R, D)``
    a causal convolution of kernel 2 and dilation ``R`` with ``D`` filters, a gated activation
    ``tanh(x_f) * sigmoid(x_g)`` (two convolutions, one for the filter, one for the gate), and
    the result concatenated to the block's input (dense connections, ``+D`` channels).
``TCBlock(T, D)``
    ``ceil(log2 T)`` dense blocks of growing dilation: with kernel 2 its receptive field covers
    all ``T`` steps of the sequence (``+D ceil(log2 T)`` channels).
``AttentionBlock(K, V)``
    single-head causal soft attention: keys and queries of size ``K`` and values of size ``V``
    are affine maps of the input; ``softmax(q k^T / sqrt(K))`` over the current and earlier
    steps reads the values, and the read is concatenated to the input (``+V`` channels).

The few-shot classification network of the paper (Omniglot and mini-ImageNet, appendix B)::

    AttentionBlock(64, 32), TCBlock(T, 128), AttentionBlock(256, 128), TCBlock(T, 128),
    AttentionBlock(512, 256), then a 1x1 convolution to N channels (the logits)

with ``T = N*K + 1``, on an embedding of each image: for Omniglot the four-block Conv4 of
Vinyals et al. (64 filters) followed by a fully-connected layer to 64 features. These are the
defaults here (``key_sizes=(64, 256, 512)``, ``value_sizes=(32, 128, 256)``,
``filters=128``, ``embedding=64``).

Where we differ from the paper, and why:

- **Dilations 1, 2, 4, ...** The paper's pseudo-code writes ``DenseBlock(2^i)`` for
  ``i = 1..ceil(log2 T)`` (dilations 2, 4, 8, ...). With kernel 2 that reaches only even
  offsets, so a step never sees the step just before it through the convolutions; starting at
  dilation 1 gives the receptive field ``2^ceil(log2 T) >= T`` the paper describes.
- **Several queries per sequence, batched and exact.** The paper feeds one query, at step
  ``N*K + 1``. Here every query of a task is placed at that same step: the support steps are
  computed once, and each query sees the support steps and itself, never another query. This
  equals running one sequence per query (tested) at the cost of one.
- **Sequence length.** ``T`` sizes the TC blocks at construction (``shots``: the ``K`` of the
  ``N*K + 1`` steps, the run's shots). A call with a longer support set still works; the
  attention blocks see every step whatever ``T``.
- **Regression** (not in the paper's experiments; the sinusoid recipes use it): a step is
  ``(f(x), y, 1)`` for a support point and ``(f(x), 0, 0)`` for the query, the last value
  telling a real zero target from a missing one; the output layer has ``out_features`` units,
  trained on the MSE.

The order of the support set matters (``order_invariant = False``): the causal convolutions
and attention read it as a sequence, so permuting the support steps changes the predictions.
The episode samplers shuffle the support set of every task, so SNAIL learns not to rely on a
particular order, but it is not invariant to it. Each query's prediction does not depend on the
other queries of its task (a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.meta.base import Kind, MetaLearner, check_task_batch
from manytask.nn import output_features
from manytask.typed import PositiveInt

__all__ = ["SNAIL", "AttentionBlock", "DenseBlock", "TCBlock", "tc_layers"]


def tc_layers(length: int) -> int:
    """Dense blocks in a ``TCBlock(T)``: ``ceil(log2 T)`` (at least one)."""
    return max(1, math.ceil(math.log2(length)))


class DenseBlock(nn.Module):
    """Gated causal convolution (kernel 2, dilation ``dilation``), output concatenated.

    ``[.., C] -> [.., C + filters]`` on a support stream ``[T, L, C]`` and a query stream
    ``[T, M, C]`` whose steps all sit at position ``L``.
    """

    def __init__(self, in_channels: int, dilation: int, filters: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.filters = filters
        # One convolution with 2*filters outputs: the filter half, then the gate half.
        self.conv = nn.Conv1d(in_channels, 2 * filters, kernel_size=2, dilation=dilation)

    def _gate(self, pre: Tensor) -> Tensor:
        f, g = pre.chunk(2, dim=-1)
        return torch.tanh(f) * torch.sigmoid(g)

    def sequence(self, x: Tensor) -> Tensor:
        """The block on full sequences ``[B, S, C] -> [B, S, C + filters]`` (zero left pad)."""
        pre = F.conv1d(
            F.pad(x.transpose(1, 2), (self.dilation, 0)),
            self.conv.weight, self.conv.bias, dilation=self.dilation,
        ).transpose(1, 2)  # fmt: skip
        return torch.cat([x, self._gate(pre)], dim=-1)

    def forward(self, s: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        out_s = self.sequence(s)
        # A query at position L reads itself and position L - dilation (a support step, or the
        # zero padding when the support set is shorter than the dilation).
        length, d = s.shape[1], self.dilation
        w_prev, w_now = self.conv.weight[..., 0], self.conv.weight[..., 1]  # [2D, C] each
        pre = F.linear(q, w_now, self.conv.bias)
        if length - d >= 0:
            pre = pre + F.linear(s[:, length - d], w_prev).unsqueeze(1)
        return out_s, torch.cat([q, self._gate(pre)], dim=-1)


class TCBlock(nn.Module):
    """``ceil(log2 T)`` dense blocks with dilations 1, 2, 4, ...: ``+filters`` channels each."""

    def __init__(self, in_channels: int, length: int, filters: int) -> None:
        super().__init__()
        blocks = []
        for i in range(tc_layers(length)):
            blocks.append(DenseBlock(in_channels + i * filters, 2**i, filters))
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_channels + len(blocks) * filters

    def sequence(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            assert isinstance(block, DenseBlock)
            x = block.sequence(x)
        return x

    def forward(self, s: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.blocks:
            s, q = block(s, q)
        return s, q


class AttentionBlock(nn.Module):
    """Causal single-head soft attention, read concatenated: ``[.., C] -> [.., C + value]``."""

    def __init__(self, in_channels: int, key: int, value: int) -> None:
        super().__init__()
        self.key_size, self.value_size = key, value
        self.query = nn.Linear(in_channels, key)
        self.key = nn.Linear(in_channels, key)
        self.value = nn.Linear(in_channels, value)
        self.out_channels = in_channels + value

    def sequence(self, x: Tensor) -> Tensor:
        """The block on full sequences ``[B, S, C]``: step ``i`` attends to steps ``<= i``."""
        s = x.shape[1]
        logits = self.query(x) @ self.key(x).transpose(1, 2) / math.sqrt(self.key_size)
        future = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
        probs = logits.masked_fill(future, float("-inf")).softmax(-1)
        return torch.cat([x, probs @ self.value(x)], dim=-1)

    def forward(self, s: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        out_s = self.sequence(s)
        # Each query attends to every support step and to itself (it is the last step).
        scale = 1.0 / math.sqrt(self.key_size)
        qq = self.query(q)  # [T, M, K]
        ks, vs = self.key(s), self.value(s)  # [T, L, K], [T, L, V]
        to_support = qq @ ks.transpose(1, 2) * scale  # [T, M, L]
        to_self = (qq * self.key(q)).sum(-1, keepdim=True) * scale  # [T, M, 1]
        probs = torch.cat([to_support, to_self], dim=-1).softmax(-1)
        read = probs[..., :-1] @ vs + probs[..., -1:] * self.value(q)
        return out_s, torch.cat([q, read], dim=-1)


class SNAIL(MetaLearner):
    """SNAIL over any encoder: the paper's stack of attention and temporal-convolution blocks.

    Args:
        encoder: the embedding network ``[B, *in_shape] -> [B, D]`` (Conv4 for images).
        in_shape: the per-example input shape (the run supplies it).
        ways: the number of classes ``N`` (the run supplies it for classification); the
            one-hot label input and the output layer are sized by it.
        out_features: the target width of a regression problem (the run supplies it).
        shots: the support examples per class ``K`` that the TC blocks are sized for
            (``T = N*K + 1`` steps; ``K + 1`` for regression, where ``K`` is the number of
            support points). Set it to the run's ``train.episode.shots``.
        embedding: width of the fully-connected layer after the encoder (the paper's 64);
            ``None`` feeds the encoder's output as it is.
        key_sizes: key size of each attention block; ``len(key_sizes) - 1`` TC blocks sit
            between them.
        value_sizes: value size of each attention block (as many as ``key_sizes``).
        filters: filters ``D`` of every dense block.

    Shapes: classification ``[T, N*K, *x], [T, N*K], [T, M, *x] -> [T, M, N]`` logits;
    regression ``[T, K, *x], [T, K, out], [T, Q, *x] -> [T, Q, out]``.

    Example:
        >>> from manytask.nn import Conv4
        >>> snail = SNAIL(Conv4(hidden=8), in_shape=(1, 28, 28), ways=5, shots=1)
        >>> sx, qx = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
        >>> sy = torch.arange(5).repeat(2, 1)
        >>> snail(sx, sy, qx, ways=5).shape
        torch.Size([2, 10, 5])
    """

    problems: ClassVar[tuple[Kind, ...]] = ("classification", "regression")
    order_invariant: ClassVar[bool] = False
    tiny_args: ClassVar[Mapping[str, Any]] = {
        "embedding": 16, "key_sizes": [16, 16, 16], "value_sizes": [8, 8, 8], "filters": 16
    }  # fmt: skip

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        ways: int | None = None,
        out_features: int | None = None,
        shots: PositiveInt = 1,
        embedding: PositiveInt | None = 64,
        key_sizes: Sequence[PositiveInt] = (64, 256, 512),
        value_sizes: Sequence[PositiveInt] = (32, 128, 256),
        filters: PositiveInt = 128,
    ) -> None:
        super().__init__()
        self.kind: Kind = "classification" if out_features is None else "regression"
        if self.kind == "classification" and (
            isinstance(ways, bool) or not isinstance(ways, int) or ways < 2
        ):
            raise ValueError(
                f"SNAIL: classification needs ways >= 2 at construction (its label input and "
                f"output layer have one unit per class), got ways={ways!r}"
            )
        if self.kind == "regression" and (
            isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1
        ):
            raise ValueError(f"SNAIL: out_features must be an int >= 1, got {out_features!r}")
        for name, value in (("shots", shots), ("filters", filters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SNAIL: {name} must be an int >= 1, got {value!r}")
        if embedding is not None and (
            isinstance(embedding, bool) or not isinstance(embedding, int) or embedding < 1
        ):
            raise ValueError(f"SNAIL: embedding must be an int >= 1 or None, got {embedding!r}")
        keys, values = tuple(key_sizes), tuple(value_sizes)
        if not keys or len(keys) != len(values):
            raise ValueError(
                f"SNAIL: key_sizes and value_sizes need the same, non-zero length (one per "
                f"attention block), got {keys!r} and {values!r}"
            )
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in keys + values):
            raise ValueError(
                f"SNAIL: key_sizes and value_sizes must be positive ints, got {keys!r}, {values!r}"
            )
        self.in_shape = tuple(int(s) for s in in_shape)
        self.ways, self.out_features, self.shots = ways, out_features, shots
        self.embedding, self.filters = embedding, filters
        self.key_sizes, self.value_sizes = keys, values
        if self.kind == "classification":
            assert ways is not None
            self.length = ways * shots + 1
            label_width, out = ways, ways
        else:
            assert out_features is not None
            self.length = shots + 1
            label_width, out = out_features + 1, out_features  # (y, 1) or (0, 0)

        self.encoder = encoder
        width = output_features(encoder, self.in_shape)
        self.project = nn.Linear(width, embedding) if embedding is not None else nn.Identity()
        channels = (embedding or width) + label_width
        blocks: list[nn.Module] = []
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            if i > 0:
                tc = TCBlock(channels, self.length, filters)
                blocks.append(tc)
                channels = tc.out_channels
            att = AttentionBlock(channels, k, v)
            blocks.append(att)
            channels = att.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, out)  # the paper's final 1x1 convolution

    def extra_repr(self) -> str:
        return (
            f"ways={self.ways}, out_features={self.out_features}, shots={self.shots} "
            f"(T={self.length}), embedding={self.embedding}, key_sizes={self.key_sizes}, "
            f"value_sizes={self.value_sizes}, filters={self.filters}"
        )

    def steps(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> tuple[Tensor, Tensor]:
        """The input steps: support ``[T, L, C]`` (embedding, label) and queries ``[T, M, C]``."""
        t, ns = support_x.shape[:2]
        nq = query_x.shape[1]
        z = self.encoder(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
        z = self.project(z)
        zs, zq = z[: t * ns].view(t, ns, -1), z[t * ns :].view(t, nq, -1)
        if self.kind == "classification":
            assert self.ways is not None
            label = F.one_hot(support_y, self.ways).to(zs.dtype)
        else:
            y = support_y.to(zs.dtype)
            label = torch.cat([y, torch.ones_like(y[..., :1])], dim=-1)
        blank = zq.new_zeros(t, nq, label.shape[-1])
        return torch.cat([zs, label], dim=-1), torch.cat([zq, blank], dim=-1)

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        self._check(support_x, support_y, query_x, ways)
        s, q = self.steps(support_x, support_y, query_x)
        for block in self.blocks:
            s, q = block(s, q)
        out: Tensor = self.head(q)
        return out

    def forward_sequence(self, steps: Tensor) -> Tensor:
        """The paper's network on whole sequences: ``[B, S, C] -> [B, S, out]``, every step.

        Step ``i`` sees steps ``0..i`` only. :meth:`forward` equals this on the sequence
        ``support + [query]`` at its last step, for each query (the test of the batching).
        """
        x = steps
        for block in self.blocks:
            assert isinstance(block, TCBlock | AttentionBlock)
            x = block.sequence(x)
        out: Tensor = self.head(x)
        return out

    def _check(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None
    ) -> None:
        kind = check_task_batch(support_x, support_y, query_x, ways)
        if kind != self.kind:
            raise ValueError(
                f"this SNAIL was built for {self.kind} but got a {kind} batch (support_y "
                f"{tuple(support_y.shape)}, dtype {support_y.dtype}); build it for this problem"
            )
        if kind == "classification" and ways is not None and ways != self.ways:
            raise ValueError(
                f"this SNAIL has {self.ways} outputs, one per class (built with "
                f"ways={self.ways}); it cannot classify {ways}-way tasks. Train one at {ways} ways"
            )
        if kind == "regression" and support_y.shape[-1] != self.out_features:
            raise ValueError(
                f"support_y has {support_y.shape[-1]} target values per point, this SNAIL was "
                f"built for out_features={self.out_features}"
            )
