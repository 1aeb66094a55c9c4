"""Feedforward + average: Conditional Neural Processes (Garnelo et al., ICML 2018).

The black-box adaptation of the lecture with a feedforward network and a mean in place of a
recurrent reader. With ``f`` the input encoder (Conv4, flatten or an MLP for images):

- every support pair is encoded on its own, ``r_j = h(f(x_j), y_j)`` (eq. 2, the encoder
  ``h``);
- the task representation is their mean, ``r = (1/n) sum_j r_j`` (eq. 3, the commutative
  aggregation ``a``): ``phi_i = r`` is the whole adaptation, one forward pass;
- a decoder reads a query with it, ``g(f(x_q), r)`` (eq. 4, the decoder ``g``).

Because the mean ignores the order of the support set, the predictions do too
(``order_invariant = True``).

Two ways to aggregate, the typed option ``aggregate``:

``"class"`` (the default for classification)
    one representation per class, ``r_c = mean_{j: y_j = c} h(f(x_j))``, and one logit per
    class, ``logit_c = g(f(x_q), r_c)``. This is the paper's classification set-up (section 4.3:
    the observations of each class are aggregated into a class representation, and the query is
    scored against each). The label enters through the grouping only, so the learner is
    equivariant to relabelling the classes and its size does not depend on the number of ways.
    It is the default because it wins: a class representation averages its own K shots, not a
    mixture of every class (see the table in docs/RESULTS.md, where both are run).
``"set"``
    one representation of the whole support set, ``r = mean_j h(f(x_j), onehot(y_j))``, and a
    decoder with ``ways`` outputs, ``logits = g(f(x_q), r)``: the literal "encode (x, y) pairs,
    average, decode" of the lecture's diagram. Its output layer is sized ``ways`` at
    construction.
``"auto"``
    ``"class"`` for classification, ``"set"`` for regression (the only one that means
    anything without classes).

Regression (few-shot regression, section 4.1 of the paper): ``r_j = h(f(x_j), y_j)``,
``r = mean_j r_j`` and the decoder returns a Gaussian per query point, ``[T, Q, 2*out]``: the
mean, then the raw scale that :func:`manytask.objectives.gaussian_params` maps to the variance
``(0.1 + 0.9 softplus(raw))^2``. It trains on the Gaussian negative log-likelihood (run it with
``objective: gaussian_nll``, which reports the MSE of the mean), as in the paper.

Sizes follow the paper's 1-D regression model: ``h`` is an MLP of three hidden layers of 128
and a linear layer to the 128-wide representation; ``g`` has two hidden layers of 128 and a
linear output layer. ReLU activations.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.meta.base import Kind, MetaLearner, check_task_batch
from manytask.nn import output_features
from manytask.typed import PositiveInt

__all__ = ["CNP", "class_means", "set_mean"]

Aggregate = Literal["auto", "class", "set"]


def set_mean(r: Tensor) -> Tensor:
    """The mean over the support set: ``[T, n, R] -> [T, R]`` (eq. 3 of the paper)."""
    return r.mean(dim=1)


def class_means(r: Tensor, labels: Tensor, ways: int) -> Tensor:
    """The mean representation of each class: ``[T, n, R], [T, n] -> [T, ways, R]``.

    Raises:
        ValueError: a class ``0..ways-1`` has no support example in some task.
    """
    t, _, d = r.shape
    sums = r.new_zeros(t, ways, d).scatter_add_(1, labels.unsqueeze(-1).expand(-1, -1, d), r)
    counts = torch.zeros(t, ways, dtype=r.dtype, device=r.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=r.dtype))
    if bool((counts == 0).any()):
        raise ValueError(
            f"every class 0..{ways - 1} needs at least one support example in every task"
        )
    return sums / counts.unsqueeze(-1)


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU`` between consecutive ``widths``, the last layer linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _widths(name: str, value: Sequence[int]) -> tuple[int, ...]:
    out = tuple(value)
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in out):
        raise ValueError(f"CNP: {name} must be positive ints, got {value!r}")
    return out


class CNP(MetaLearner):
    """Conditional Neural Process: encode each support pair, average, decode each query.

    Args:
        encoder: the input encoder ``f`` ``[B, *in_shape] -> [B, D]`` (Conv4, flatten, MLP).
        in_shape: the per-example input shape (the run supplies it).
        ways: the number of classes (the run supplies it for classification); needed by
            ``aggregate="set"``, whose output layer has one unit per class.
        out_features: the target width of a regression problem (the run supplies it); ``None``
            for classification.
        aggregate: ``"class"``, ``"set"`` or ``"auto"`` (module docstring).
        encoder_hidden: hidden widths of the pair encoder ``h``.
        representation: the width ``R`` of ``r_j`` and ``r``.
        decoder_hidden: hidden widths of the decoder ``g``.

    Shapes: classification ``[T, N*K, *x], [T, N*K], [T, M, *x] -> [T, M, N]`` logits;
    regression ``[T, K, *x], [T, K, out], [T, Q, *x] -> [T, Q, 2*out]`` (mean, raw scale).

    Example:
        >>> from manytask.nn import Conv4
        >>> cnp = CNP(Conv4(hidden=8), in_shape=(1, 28, 28))
        >>> sx, qx = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
        >>> sy = torch.arange(5).repeat(2, 1)
        >>> cnp(sx, sy, qx, ways=5).shape
        torch.Size([2, 10, 5])
        >>> from manytask.nn import Flatten
        >>> reg = CNP(Flatten((1,)), in_shape=(1,), out_features=1)
        >>> reg(torch.rand(3, 5, 1), torch.rand(3, 5, 1), torch.rand(3, 7, 1)).shape
        torch.Size([3, 7, 2])
    """

    problems: ClassVar[tuple[Kind, ...]] = ("classification", "regression")
    order_invariant: ClassVar[bool] = True
    regression_objective: ClassVar[str] = "gaussian_nll"

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        ways: int | None = None,
        out_features: int | None = None,
        aggregate: Aggregate = "auto",
        encoder_hidden: Sequence[PositiveInt] = (128, 128, 128),
        representation: PositiveInt = 128,
        decoder_hidden: Sequence[PositiveInt] = (128, 128),
    ) -> None:
        super().__init__()
        if aggregate not in ("auto", "class", "set"):
            raise ValueError(f"CNP: aggregate must be 'auto', 'class' or 'set', got {aggregate!r}")
        self.kind: Kind = "classification" if out_features is None else "regression"
        if self.kind == "regression":
            if aggregate == "class":
                raise ValueError(
                    "CNP: aggregate='class' needs classes, but this is a regression problem "
                    f"(out_features={out_features}); use aggregate='set' or 'auto'"
                )
            if isinstance(out_features, bool) or not isinstance(out_features, int):
                raise ValueError(f"CNP: out_features must be an int, got {out_features!r}")
            if out_features < 1:
                raise ValueError(f"CNP: out_features must be >= 1, got {out_features}")
        mode = aggregate if aggregate != "auto" else (
            "class" if self.kind == "classification" else "set"
        )  # fmt: skip
        if mode == "set" and self.kind == "classification" and (ways is None or ways < 2):
            raise ValueError(
                f"CNP: aggregate='set' classifies with one output per class and needs ways >= 2 "
                f"at construction, got ways={ways!r} (a run supplies train.episode.ways)"
            )
        if isinstance(representation, bool) or not isinstance(representation, int):
            raise ValueError(f"CNP: representation must be an int, got {representation!r}")
        if representation < 1:
            raise ValueError(f"CNP: representation must be >= 1, got {representation}")
        self.in_shape = tuple(int(s) for s in in_shape)
        self.ways = ways
        self.out_features = out_features
        self.aggregate: Aggregate = aggregate
        self.mode: Literal["class", "set"] = mode
        self.encoder_hidden = _widths("encoder_hidden", encoder_hidden)
        self.representation = representation
        self.decoder_hidden = _widths("decoder_hidden", decoder_hidden)

        self.encoder = encoder
        width = output_features(encoder, self.in_shape)
        self.features = width
        if self.kind == "regression":
            assert out_features is not None
            pair, out = width + out_features, 2 * out_features
        elif mode == "set":
            assert ways is not None
            pair, out = width + ways, ways
        else:
            pair, out = width, 1
        self.h = _mlp((pair, *self.encoder_hidden, representation))
        self.g = _mlp((width + representation, *self.decoder_hidden, out))

    def extra_repr(self) -> str:
        return (
            f"aggregate={self.aggregate!r} ({self.mode}), ways={self.ways}, "
            f"out_features={self.out_features}, encoder_hidden={self.encoder_hidden}, "
            f"representation={self.representation}, decoder_hidden={self.decoder_hidden}"
        )

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        kind = check_task_batch(support_x, support_y, query_x, ways)
        if kind != self.kind:
            raise ValueError(
                f"this CNP was built for {self.kind} but got a {kind} batch (support_y "
                f"{tuple(support_y.shape)}, dtype {support_y.dtype}); build it for this problem"
            )
        t, ns = support_x.shape[:2]
        nq = query_x.shape[1]
        # One encoder pass over the support and query inputs of every task.
        flat = torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)])
        z = self.encoder(flat)
        fs = z[: t * ns].view(t, ns, -1)
        fq = z[t * ns :].view(t, nq, -1)

        if self.kind == "regression":
            if support_y.shape[-1] != self.out_features:
                raise ValueError(
                    f"support_y has {support_y.shape[-1]} target values per point, this CNP "
                    f"was built for out_features={self.out_features}"
                )
            r = set_mean(self.h(torch.cat([fs, support_y.to(fs.dtype)], dim=-1)))
            return self._decode(fq, r)

        n = self.ways_of(support_y, ways)
        if self.mode == "set":
            if n != self.ways:
                raise ValueError(
                    f"this CNP (aggregate='set') has {self.ways} outputs, one per class; it "
                    f"cannot classify {n}-way tasks. Build it with ways={n}, or use "
                    "aggregate='class', which scores any number of classes"
                )
            onehot = F.one_hot(support_y, n).to(fs.dtype)
            r = set_mean(self.h(torch.cat([fs, onehot], dim=-1)))
            return self._decode(fq, r)
        # Class mode: r_c for every class, then g(f(x_q), r_c) for every (query, class) pair.
        rc = class_means(self.h(fs), support_y, n)  # [T, N, R]
        return self._decode_pairs(fq, rc)

    def _decode(self, fq: Tensor, r: Tensor) -> Tensor:
        """``g([f(x_q), r])`` for every query: ``[T, M, D], [T, R] -> [T, M, out]``."""
        rq = r.unsqueeze(1).expand(-1, fq.shape[1], -1)
        out: Tensor = self.g(torch.cat([fq, rq], dim=-1))
        return out

    def _decode_pairs(self, fq: Tensor, rc: Tensor) -> Tensor:
        """``g([f(x_q), r_c])`` for every query and class: ``[T, M, D], [T, N, R] -> [T, M, N]``.

        The first layer of ``g`` on a concatenation is the sum of its two halves,
        ``W [a; b] = W_a a + W_b b``: each half is computed once (``T*M`` and ``T*N`` rows) and
        broadcast to the ``T*M*N`` pairs, instead of concatenating ``M*N`` copies.
        """
        first = self.g[0]
        assert isinstance(first, nn.Linear)
        d = fq.shape[-1]
        a = F.linear(fq, first.weight[:, :d], first.bias)  # [T, M, H]
        b = F.linear(rc, first.weight[:, d:])  # [T, N, H]
        hidden = a.unsqueeze(2) + b.unsqueeze(1)  # [T, M, N, H]
        out: Tensor = self.g[1:](hidden)
        return out.squeeze(-1)
