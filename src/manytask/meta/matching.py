"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016).

A query ``x^`` is labelled by attention over the support set ``S = {(x_i, y_i)}``, ``y_i``
one-hot (eq. 1)::

    P(y^ | x^, S) = sum_i a(x^, x_i) y_i

with the attention kernel the softmax over the support set of cosine similarities (eq. 2)::

    a(x^, x_i) = exp(c(f(x^), g(x_i))) / sum_j exp(c(f(x^), g(x_j))),   c = cosine.

The learner returns ``log P(y^ = k | x^, S)`` as its logits ``[T, N*Q, N]``: they are already
normalised log-probabilities, so the cross-entropy of the ``classification`` objective is the
paper's training loss ``-log P(y | x^, S)`` (section 2.2). Without full-context embeddings,
``f = g`` is the encoder (the paper's Omniglot setting, Table 1).

Full-context embeddings (FCE, section 2.1.2 and appendix A), with ``f'``, ``g'`` the encoder:

- ``g(x_i, S)`` (A.2): a bidirectional LSTM reads the support embeddings ``g'(x_i)`` as a
  sequence, with a skip connection: ``g(x_i, S) = h->_i + h<-_i + g'(x_i)``.
- ``f(x^, S) = attLSTM(f'(x^), g(S), K)`` (A.1): ``K`` steps of, for ``k = 1..K``::

      r_{k-1}       = sum_i softmax_i(h_{k-1}^T g(x_i)) g(x_i)        (a content-based read)
      h^_k, c_k     = LSTM(f'(x^), [h_{k-1}, r_{k-1}], c_{k-1})
      h_k           = h^_k + f'(x^)

  and ``f(x^, S) = h_K``. An LSTM whose hidden state is the concatenation ``[h, r]`` computes
  its gates from ``W [x; h; r]``, which is an LSTM cell with input ``[f'(x^); r]`` and hidden
  state ``h``: :class:`AttentionLSTM` is written that way. The paper does not give the initial
  state; here ``h_0 = f'(x^)`` (``h^_0 = 0`` through the skip connection) and ``c_0 = 0``, so
  the first read is already guided by the query. Nor does it give ``K`` for its image
  experiments; ``fce_steps`` sets it (default 5).

The bidirectional LSTM makes the predictions depend on the **order of the support set**: a
learner with ``fce=True`` declares ``order_invariant = False`` (its instance attribute
overrides the class's ``True``). The episode samplers shuffle the support set of every task,
so training and testing see random orders, as the paper's sampled sets do. Without FCE the
learner is a function of the support *set* and declares ``order_invariant = True``.

**The kernel is flat.** Cosines lie in ``[-1, 1]``, and without FCE in ``[0, 1]`` for an
encoder that ends in ReLU and max-pooling, like Conv4, whose embeddings are non-negative. The
attention can then never be sharp: in a 5-way 1-shot task with Conv4 the right class gets at
most ``e / (e + 4) = 0.40``, so the training loss cannot fall below 0.91 even when every query
is classified right, and its gradients stay small. That is the paper's model (``scale=1``).
``scale`` multiplies the cosines before the softmax, ``a = softmax(scale * c)``, the "metric
scaling" that Oreshkin et al. (TADAM, NeurIPS 2018) show matters for cosine similarity in
few-shot learners; ``docs/RESULTS.md`` measures both.

One encoder pass embeds the support and query images of every task together (batch norm sees
them together, as for ProtoNet). The attention, the LSTMs and the cosines run in fp32 under
autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.meta.base import MetaLearner, check_task_batch
from manytask.nn.mlp import output_shape

__all__ = [
    "AttentionLSTM",
    "MatchingNet",
    "SupportContext",
    "attention_log_probs",
    "cosine_similarities",
]


def cosine_similarities(queries: Tensor, support: Tensor, eps: float = 1e-8) -> Tensor:
    """``c(q, s) = q.s / (|q| |s|)`` for every pair: ``[T, M, D], [T, S, D] -> [T, M, S]``.

    Norms below ``eps`` count as ``eps`` (a zero embedding has similarity 0 to everything).
    """
    q = queries / queries.norm(dim=-1, keepdim=True).clamp_min(eps)
    s = support / support.norm(dim=-1, keepdim=True).clamp_min(eps)
    return q @ s.transpose(1, 2)


def attention_log_probs(log_attention: Tensor, labels: Tensor, ways: int) -> Tensor:
    """``log sum_i a_i y_i`` (eq. 1): the log of the attention-weighted label distribution.

    Computed in log space, ``log P(k) = logsumexp_{i: y_i = k} log a_i``, so no class
    probability underflows to zero however sharp the attention is.

    Args:
        log_attention: ``[T, M, S]`` log attention weights of every query over the support set
            (``log_softmax`` of the attention logits).
        labels: ``[T, S]`` support labels in ``0..ways-1``.
        ways: the number of classes ``N``.

    Returns:
        ``[T, M, N]`` log-probabilities of the classes.

    Raises:
        ValueError: a class has no support example in some task (its probability would be 0).
    """
    member = F.one_hot(labels, ways).bool()  # [T, S, N]
    if bool((~member.any(1)).any()):
        raise ValueError(
            f"every class 0..{ways - 1} needs at least one support example in every task"
        )
    per_class = log_attention.unsqueeze(2).masked_fill(
        ~member.transpose(1, 2).unsqueeze(1), float("-inf")
    )  # [T, M, N, S]: a query's log weights on the members of each class
    return per_class.logsumexp(-1)


class SupportContext(nn.Module):
    """``g(x_i, S) = h->_i + h<-_i + g'(x_i)``: a bidirectional LSTM over the support set (A.2).

    Args:
        features: the embedding width ``D`` (the LSTM's input and hidden size).

    Example:
        >>> g = SupportContext(16)
        >>> g(torch.randn(3, 10, 16)).shape
        torch.Size([3, 10, 16])
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.lstm = nn.LSTM(features, features, batch_first=True, bidirectional=True)

    def forward(self, support: Tensor) -> Tensor:
        """``[T, S, D] -> [T, S, D]``; the support set is read in the order given."""
        both, _ = self.lstm(support)  # [T, S, 2D]: forward then backward hidden states
        forward, backward = both.split(self.features, dim=-1)
        return forward + backward + support

    def extra_repr(self) -> str:
        return f"features={self.features}"


class AttentionLSTM(nn.Module):
    """``f(x^, S) = attLSTM(f'(x^), g(S), K)``: ``K`` reads of the support set (A.1).

    Args:
        features: the embedding width ``D``.
        steps: the number of processing steps ``K`` (>= 1).

    Example:
        >>> f = AttentionLSTM(16, steps=3)
        >>> f(torch.randn(2, 7, 16), torch.randn(2, 5, 16)).shape
        torch.Size([2, 7, 16])
    """

    def __init__(self, features: int, steps: int) -> None:
        super().__init__()
        self.features = features
        self.steps = steps
        self.cell = nn.LSTMCell(2 * features, features)  # input [f'(x^); r], hidden h

    def read(self, h: Tensor, support: Tensor) -> Tensor:
        """``r = sum_i softmax_i(h^T g(x_i)) g(x_i)``: ``[T, M, D], [T, S, D] -> [T, M, D]``."""
        weights = torch.softmax(h @ support.transpose(1, 2), dim=-1)
        return weights @ support

    def forward(self, queries: Tensor, support: Tensor) -> Tensor:
        """``[T, M, D]`` query embeddings ``f'(x^)``, ``[T, S, D]`` ``g(S)`` -> ``[T, M, D]``."""
        t, m, d = queries.shape
        h = queries
        c = torch.zeros_like(queries)
        for _ in range(self.steps):
            r = self.read(h, support)
            x = torch.cat([queries, r], dim=-1).reshape(t * m, 2 * d)
            h_hat, c_flat = self.cell(x, (h.reshape(t * m, d), c.reshape(t * m, d)))
            h = h_hat.view(t, m, d) + queries
            c = c_flat.view(t, m, d)
        return h

    def extra_repr(self) -> str:
        return f"features={self.features}, steps={self.steps}"


class MatchingNet(MetaLearner):
    """Matching Network over any encoder ``[B, *in_shape] -> [B, D]``.

    Args:
        encoder: the embedding network ``f' = g'`` (e.g. :class:`manytask.nn.Conv4`).
        in_shape: the per-example input shape (injected by the run), to size the LSTMs.
        fce: full-context embeddings (the bidirectional support LSTM ``g`` and the attention
            LSTM ``f``); False is the paper's Omniglot model, True its miniImageNet "FCE".
        fce_steps: the attention LSTM's processing steps ``K`` (used only with ``fce=True``).
        scale: a fixed factor on the cosines before the softmax, ``a = softmax(scale * c)``.
            1 is the paper's kernel; see the module docstring for why a larger one trains
            faster.

    Attributes:
        order_invariant: ``not fce``: FCE reads the support set as a sequence.

    Example:
        >>> from manytask.nn import Conv4
        >>> learner = MatchingNet(Conv4(hidden=16), in_shape=(1, 28, 28), fce=True)
        >>> learner.order_invariant
        False
        >>> sx, qx = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
        >>> sy = torch.arange(5).repeat(2, 1)
        >>> logits = learner(sx, sy, qx, ways=5)
        >>> logits.shape, bool(torch.allclose(logits.exp().sum(-1), torch.ones(2, 10)))
        (torch.Size([2, 10, 5]), True)
    """

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        fce: bool = False,
        fce_steps: int = 5,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(fce, bool):
            raise ValueError(f"MatchingNet: fce must be true or false, got {fce!r}")
        if isinstance(fce_steps, bool) or not isinstance(fce_steps, int) or fce_steps < 1:
            raise ValueError(
                f"MatchingNet: fce_steps must be an integer >= 1 (the attention LSTM's "
                f"processing steps K), got {fce_steps!r}"
            )
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"MatchingNet: scale must be a number > 0, got {scale!r}")
        self.encoder = encoder
        self.in_shape = tuple(int(s) for s in in_shape)
        self.fce = fce
        self.scale = float(scale)
        self.fce_steps = fce_steps
        # FCE's bidirectional LSTM reads the support set in order (see the module docstring).
        self.order_invariant = not fce  # type: ignore[misc]
        shape = output_shape(encoder, self.in_shape)
        if len(shape) != 1:
            raise ValueError(
                f"MatchingNet needs an encoder that returns embeddings [B, D]; this one returns "
                f"[B, {', '.join(map(str, shape))}] for inputs {self.in_shape}. Use an encoder "
                "that flattens (conv4 with flatten: true, the default)."
            )
        self.features = shape[0]
        self.support_context = SupportContext(self.features) if fce else None
        self.query_attention = AttentionLSTM(self.features, fce_steps) if fce else None

    def embed(self, support_x: Tensor, query_x: Tensor) -> tuple[Tensor, Tensor]:
        """``g(x_i, S)`` ``[T, S, D]`` and ``f(x^, S)`` ``[T, M, D]`` (fp32)."""
        t, ns = support_x.shape[:2]
        nq = query_x.shape[1]
        z = self.encoder(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
        if z.dtype in (torch.float16, torch.bfloat16):  # autocast: compare in fp32
            z = z.float()
        g = z[: t * ns].reshape(t, ns, -1)
        f = z[t * ns :].reshape(t, nq, -1)
        with torch.autocast(z.device.type, enabled=False):
            if self.support_context is not None and self.query_attention is not None:
                g = self.support_context(g)
                f = self.query_attention(f, g)
        return g, f

    def attention_logits(self, support_x: Tensor, query_x: Tensor) -> Tensor:
        """``scale * c(f(x^, S), g(x_i, S))``: ``[T, M, S]`` (fp32 under autocast)."""
        g, f = self.embed(support_x, query_x)
        with torch.autocast(g.device.type, enabled=False):
            return self.scale * cosine_similarities(f, g)

    def attention(self, support_x: Tensor, query_x: Tensor) -> Tensor:
        """``a(x^, x_i)`` (eq. 2): ``[T, M, S]``, each query's weights over the support set."""
        return torch.softmax(self.attention_logits(support_x, query_x), dim=-1)

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        if check_task_batch(support_x, support_y, query_x, ways) != "classification":
            raise ValueError("MatchingNet classifies: support_y must hold integer labels [T, N*K]")
        if self.fce and tuple(support_x.shape[2:]) != self.in_shape:
            raise ValueError(
                f"MatchingNet with fce=True was built for examples of shape {self.in_shape} "
                f"(its LSTMs have the width of their embedding), got support_x "
                f"{tuple(support_x.shape)}"
            )
        ways = self.ways_of(support_y, ways)
        logits = self.attention_logits(support_x, query_x)
        with torch.autocast(logits.device.type, enabled=False):
            return attention_log_probs(logits.log_softmax(-1), support_y, ways)

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, fce={self.fce}, fce_steps={self.fce_steps}, "
            f"scale={self.scale:g}"
        )
