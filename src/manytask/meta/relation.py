"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018).

An embedding module ``f`` turns every image into feature maps; a relation module ``g`` scores
how related a query is to each class from their channel-concatenated maps (eq. 1)::

    r_{i,j} = g(C(f(x_i), f(x_j))),   i = class (support), j = query,   r in [0, 1]

For K-shot tasks the maps of a class's K support images are **summed** element-wise into one
class map (section 3.3; ``class_maps="mean"`` averages instead, which makes the scale of the
class map independent of K). Training regresses the scores onto one-hot targets (eq. 3)::

    phi, theta <- argmin sum_j sum_i (r_{i,j} - 1(y_i == y_j))^2

which is the spine's ``one_hot_mse`` objective: the recipes set ``objective: one_hot_mse``.
The learner returns the scores ``[T, N*Q, N]`` (not logits); accuracy is their argmax.

Architecture for Omniglot (Figure 2): the embedding module is four blocks ``3x3 conv (64) ->
batch norm -> ReLU``, the first two followed by ``2x2 max-pool``, not flattened: the registered
``conv4`` encoder with ``pool: [true, true, false, false]``, ``flatten: false`` and, as in the
authors' code, ``padding: [0, 0, 1, 1]`` (28x28 -> 64x5x5 maps). The relation module is two
blocks ``3x3 conv (64) -> batch norm -> ReLU -> 2x2 max-pool`` on the ``2C`` concatenated
channels, then ``FC (8) -> ReLU -> FC (1) -> sigmoid``; on 5x5 maps its flattened width is 64,
the paper's ``H = 64`` for Omniglot. The relation module's sizes are read from the encoder's
output, so any encoder works: each of its blocks pools only while its maps are at least 2x2
(both do on the paper's 5x5 maps: 5 -> 2 -> 1), and an encoder that flattens, ``[B, D]``,
gives ``D x 1 x 1`` maps, on which the relation module's convolutions act as linear layers on
the concatenated embeddings (a relation network over any embedding; not the paper's Omniglot
model, whose maps keep their 5x5 layout).

Batched over tasks and over every (query, class) pair. The first convolution of the relation
module is linear in its input, so on the concatenation ``[class map; query map]`` it equals
``W_c * class + W_q * query + b``: it is computed once per class map and once per query map and
broadcast over the ``Q x N`` pairs, instead of once per pair (exact up to float rounding;
``benchmarks/bench_relation_step.py`` times both). One encoder pass embeds the support and
query images of every task together (batch norm sees them together, as for ProtoNet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.meta.base import MetaLearner, check_task_batch
from manytask.nn.conv4 import conv_block
from manytask.nn.mlp import output_shape

__all__ = ["RelationModule", "RelationNet", "class_feature_maps"]

ClassMaps = Literal["sum", "mean"]
_CLASS_MAPS: tuple[str, ...] = get_args(ClassMaps)


def class_feature_maps(
    maps: Tensor, labels: Tensor, ways: int, reduce: ClassMaps = "sum"
) -> Tensor:
    """One feature map per class: the sum (or mean) of its support maps.

    Args:
        maps: ``[T, N*K, C, H, W]`` support feature maps (any trailing shape works).
        labels: ``[T, N*K]`` labels in ``0..ways-1``.
        ways: the number of classes ``N``.
        reduce: ``"sum"`` (the paper) or ``"mean"``.

    Returns:
        ``[T, N, C, H, W]``.

    Raises:
        ValueError: a class has no support example in some task.
    """
    t, s = maps.shape[:2]
    one_hot = F.one_hot(labels, ways).to(maps.dtype)  # [T, S, N]
    counts = one_hot.sum(1)  # [T, N]
    if bool((counts == 0).any()):
        raise ValueError(
            f"every class 0..{ways - 1} needs at least one support example in every task"
        )
    summed = one_hot.transpose(1, 2) @ maps.reshape(t, s, -1)  # [T, N, C*H*W]
    if reduce == "mean":
        summed = summed / counts.unsqueeze(-1)
    return summed.view(t, ways, *maps.shape[2:])


class RelationModule(nn.Module):
    """``g``: scores in ``[0, 1]`` for every (query, class) pair of feature maps.

    Two blocks ``conv3x3 (hidden) -> BN -> ReLU -> max-pool 2``, then ``Linear ->
    ReLU -> Linear -> sigmoid``, on the channel concatenation ``[class map; query map]``.
    A block pools only if its maps are at least 2x2, so maps of any size fit (1x1 included).

    Args:
        channels: channels ``C`` of one feature map (the module reads ``2C``).
        size: the maps' spatial size ``(H, W)``.
        hidden: filters of the two convolutions (64 in the paper).
        relation_dim: width of the hidden fully connected layer (8 in the paper).

    Example:
        >>> g = RelationModule(channels=8, size=(5, 5), hidden=16, relation_dim=4)
        >>> g(torch.rand(2, 3, 8, 5, 5), torch.rand(2, 6, 8, 5, 5)).shape
        torch.Size([2, 6, 3])
        >>> g.pools, g.fc[1].in_features  # 5x5 -> 2x2 -> 1x1
        ((True, True), 16)
    """

    def __init__(
        self, channels: int, size: tuple[int, int], hidden: int = 64, relation_dim: int = 8
    ) -> None:
        super().__init__()
        if channels < 1 or min(size) < 1:
            raise ValueError(
                f"RelationModule: needs maps with channels >= 1 and a size of at least 1x1, "
                f"got channels={channels}, size={size}"
            )
        self.channels, self.size = channels, (int(size[0]), int(size[1]))
        self.hidden, self.relation_dim = hidden, relation_dim
        pools, (h, w) = [], self.size
        for _ in range(2):
            pools.append(min(h, w) >= 2)
            h, w = (h // 2, w // 2) if pools[-1] else (h, w)
        self.pools: tuple[bool, ...] = tuple(pools)
        self.conv = nn.Conv2d(2 * channels, hidden, kernel_size=3, padding=1)
        rest: list[nn.Module] = [nn.BatchNorm2d(hidden), nn.ReLU()]
        self.rest_of_block1 = nn.Sequential(*rest, *([nn.MaxPool2d(2)] if pools[0] else []))
        self.block2 = conv_block(hidden, hidden, pool=pools[1])
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(hidden * h * w, relation_dim),
            nn.ReLU(),
            nn.Linear(relation_dim, 1),
        )

    def forward(self, class_maps: Tensor, query_maps: Tensor) -> Tensor:
        """``[T, N, C, H, W]`` class maps, ``[T, M, C, H, W]`` query maps -> ``[T, M, N]``."""
        t, n = class_maps.shape[:2]
        m = query_maps.shape[1]
        c, (h, w) = self.channels, self.size
        # conv([class; query]) = conv_c(class) + conv_q(query) + b: N + M convolutions, not N*M.
        wc, wq = self.conv.weight[:, :c], self.conv.weight[:, c:]
        by_class = F.conv2d(class_maps.reshape(t * n, c, h, w), wc, self.conv.bias, padding=1)
        by_query = F.conv2d(query_maps.reshape(t * m, c, h, w), wq, None, padding=1)
        pairs = by_query.view(t, m, 1, -1, h, w) + by_class.view(t, 1, n, -1, h, w)
        z = self.block2(self.rest_of_block1(pairs.flatten(0, 2)))
        return torch.sigmoid(self.fc(z)).view(t, m, n)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, size={self.size}, hidden={self.hidden}, "
            f"relation_dim={self.relation_dim}, pools={self.pools}"
        )


class RelationNet(MetaLearner):
    """Relation Network over an encoder of feature maps ``[B, C, H, W]`` (or embeddings ``[B, D]``).

    Args:
        encoder: the embedding module ``f``: the paper's returns feature maps,
            ``Conv4(pool=(True, True, False, False), padding=(0, 0, 1, 1), flatten=False)``;
            an encoder of embeddings ``[B, D]`` is read as ``D x 1 x 1`` maps.
        in_shape: the per-example input shape (injected by the run), to size ``g``.
        hidden: filters of the relation module's convolutions (64 in the paper).
        relation_dim: the relation module's hidden fully connected width (8 in the paper).
        class_maps: how the K support maps of a class make its map: ``"sum"`` (the paper)
            or ``"mean"``.

    Train it with ``objective: one_hot_mse`` (the paper's loss); the outputs are scores in
    ``[0, 1]``, not logits.

    Example:
        >>> from manytask.nn import Conv4
        >>> enc = Conv4(hidden=16, pool=(True, True, False, False), padding=(0, 0, 1, 1),
        ...             flatten=False)
        >>> learner = RelationNet(enc, in_shape=(1, 28, 28), hidden=16)
        >>> sx, qx = torch.rand(2, 10, 1, 28, 28), torch.rand(2, 15, 1, 28, 28)
        >>> sy = torch.arange(5).repeat(2, 2)
        >>> scores = learner(sx, sy, qx, ways=5)
        >>> scores.shape, bool(((scores >= 0) & (scores <= 1)).all())
        (torch.Size([2, 15, 5]), True)
    """

    # Trained as the paper does: relation scores regressed onto one-hot labels (eq. 3).
    classification_objective: ClassVar[str] = "one_hot_mse"

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        hidden: int = 64,
        relation_dim: int = 8,
        class_maps: ClassMaps = "sum",
    ) -> None:
        super().__init__()
        for name, value in (("hidden", hidden), ("relation_dim", relation_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RelationNet: {name} must be an integer >= 1, got {value!r}")
        if class_maps not in _CLASS_MAPS:
            raise ValueError(
                f"RelationNet: class_maps must be one of {_CLASS_MAPS}, got {class_maps!r}"
            )
        self.encoder = encoder
        self.in_shape = tuple(int(s) for s in in_shape)
        self.class_maps = class_maps
        shape = output_shape(encoder, self.in_shape)
        if len(shape) == 1:  # embeddings [B, D]: maps of 1x1
            shape = (shape[0], 1, 1)
        if len(shape) != 3:
            raise ValueError(
                f"RelationNet needs an encoder that returns feature maps [B, C, H, W] (or "
                f"embeddings [B, D]); this one returns [B, {', '.join(map(str, shape))}] for "
                f"inputs {self.in_shape}. The paper's embedding module is encoder conv4 with "
                "encoder_args {pool: [true, true, false, false], padding: [0, 0, 1, 1], "
                "flatten: false}."
            )
        self.map_shape: tuple[int, ...] = shape
        self.relation = RelationModule(shape[0], (shape[1], shape[2]), hidden, relation_dim)

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        if check_task_batch(support_x, support_y, query_x, ways) != "classification":
            raise ValueError("RelationNet classifies: support_y must hold integer labels [T, N*K]")
        if tuple(support_x.shape[2:]) != self.in_shape:
            raise ValueError(
                f"RelationNet was built for examples of shape {self.in_shape} (its relation "
                f"module has the size of their feature maps), got support_x "
                f"{tuple(support_x.shape)}"
            )
        t, ns = support_x.shape[:2]
        nq = query_x.shape[1]
        ways = self.ways_of(support_y, ways)
        maps = self.encoder(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
        support = maps[: t * ns].view(t, ns, *self.map_shape)
        query = maps[t * ns :].view(t, nq, *self.map_shape)
        classes = class_feature_maps(support, support_y, ways, self.class_maps)
        scores = self.relation(classes, query)
        # Under autocast the scores come out in bf16/fp16; the objective compares them in fp32.
        return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, map_shape={self.map_shape}, class_maps={self.class_maps!r}"
        )
