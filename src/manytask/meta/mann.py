"""MANN: black-box adaptation with a recurrent network that reads the support set.

Black-box adaptation in its plainest form (CS330, "black-box meta-learning"): a network
``f_theta`` reads the training set ``D_i^tr`` of task ``i`` and produces a task state
``phi_i``; a function ``g_phi_i`` then predicts the labels of new inputs. Here ``f_theta`` is an
LSTM (optionally with an external memory) fed the support pairs ``(x, y)`` one step at a time;
``phi_i`` is its state after the last support step (LSTM hidden and cell states, plus the
memory when there is one); ``g_phi_i(x)`` is one more step of the same network with input
``(x, 0)`` followed by a linear read-out. Adapting to a task is a forward pass: no gradient
step is taken on the support set; meta-training fits ``theta`` (encoder, LSTM, read-out) to the
query loss over many tasks.

Papers:

- Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, "Meta-Learning with Memory-Augmented
  Neural Networks", ICML 2016: an LSTM controller with a least-recently-used-access memory
  (``memory="lrua"``, :mod:`manytask.meta.lrua`), trained online on sequences whose labels
  arrive one step late (``protocol="online"``).
- The CS330 homework formulation (Stanford CS330, homework 1, "MANN"): the same idea as an
  N-way K-shot episode (``protocol="episodic"``): the ``N*K`` support examples, each
  concatenated with its one-hot label, then the queries with a zero label; a two-layer LSTM of
  128 units predicts the label at every query step.

How the support set is presented (``protocol="episodic"``):

- step input: the example's features (``encoder="flatten"``: the raw pixels, 784 for 28x28
  Omniglot, as in the homework; ``encoder="conv4"``: the 64-d Conv4 embedding) concatenated
  with its label code: the one-hot label ``[N]`` for classification, the target ``[out]`` for
  regression; queries get an all-zero code (the "unknown label" input);
- order: the support examples in the order they are given, then the queries. The model is
  **not** invariant to that order (``order_invariant = False``): permuting the support set
  changes its state ``phi_i`` and therefore its predictions, a little once trained;
- :class:`~manytask.data.EpisodeSampler` shuffles the support positions of every task (and the
  class -> label map), so the label at a position carries no information and the model must
  read the labels. The homework's data generator instead lays the support set out in class
  order (shot 1 of labels 0..N-1, then shot 2, ...) and shuffles only the queries: there
  the label at each support position is always the same, so a model can key on positions and
  ignore the label inputs, and nothing makes it work on a support set in another order. We do
  not shuffle again inside the learner (a learner is a deterministic function of its inputs;
  the sampler owns the randomness);
- queries (``queries="independent"``, the default): each query is read as one step after the
  whole support set, from the same task state ``phi_i``, so its prediction does not depend on
  the other queries, and a task can be tested with any number of queries. With
  ``queries="sequential"`` (the homework) the queries follow each other in the sequence, so a
  query also sees the earlier queries' images (with 1 query per class, a model can then use
  "each label appears once among the queries"); predictions depend on the query order.

The original protocol of Santoro et al. (``protocol="online"``): the sequence is the support
set itself, each label shown one step late: the input at step ``t`` is ``x_t`` with the code of
``y_{t-1}`` (zero at ``t = 1``), and the label of every step is predicted. The query set must be
that same sequence (``query_x`` of the support's shape; it is checked by shape only and its
images are not read); the predictions are ``[T, L, N]`` for the ``L`` steps, the prediction of
step ``t`` depends only on ``x_1..x_t`` and ``y_1..y_{t-1}``. The task source
``omniglot_sequences`` (:class:`manytask.data.omniglot_sequences.OmniglotSequences`) delivers
such episodes, and the objective ``instance_accuracy`` reports accuracy by instance number.

The whole meta-batch runs as one batch: one encoder pass over every image, one LSTM call
(``memory="none"``) or one loop over the steps of the sequence with batched memory operations
(``memory="lrua"``); there is no Python loop over tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal, get_args

import torch
from torch import Tensor, nn

from manytask.meta.base import Kind, MetaLearner, check_task_batch
from manytask.meta.lrua import LRUAController, State, repeat_state
from manytask.nn.mlp import output_features
from manytask.typed import Range

__all__ = ["MANN", "LSTMCore", "label_code", "sequence_inputs"]

Protocol = Literal["episodic", "online"]
Memory = Literal["none", "lrua"]
QueryMode = Literal["independent", "sequential"]
_Pos = Annotated[int, Range(min=1)]


def label_code(labels: Tensor, ways: int | None) -> Tensor:
    """The label input of each step: one-hot ``[T, M, N]`` for integer labels ``[T, M]``,
    the targets themselves for real targets ``[T, M, out]`` (``ways`` is then ignored)."""
    if labels.is_floating_point():
        return labels
    assert ways is not None
    code = torch.zeros(*labels.shape, ways, device=labels.device)
    return code.scatter_(-1, labels.unsqueeze(-1), 1.0)


def sequence_inputs(features: Tensor, codes: Tensor, *, delay: bool = False) -> Tensor:
    """Step inputs ``[T, L, D + C]``: features ``[T, L, D]`` with label codes ``[T, L, C]``.

    With ``delay=True`` the code of step ``t`` is that of step ``t - 1`` and the first step has
    a zero code (Santoro et al.'s labels shown one step late).
    """
    if delay:
        codes = torch.cat([torch.zeros_like(codes[:, :1]), codes[:, :-1]], dim=1)
    return torch.cat([features, codes.to(features.dtype)], dim=-1)


class LSTMCore(nn.Module):
    """A stacked LSTM as a sequence core ``[B, L, D] -> [B, L, hidden]`` with a batch-first state.

    Example:
        >>> out, (h, c) = LSTMCore(6, hidden=8, layers=2)(torch.randn(3, 4, 6))
        >>> out.shape, h.shape
        (torch.Size([3, 4, 8]), torch.Size([3, 2, 8]))
    """

    def __init__(self, in_features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_features, hidden, num_layers=layers, batch_first=True)
        self.out_features = hidden

    def forward(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        hc = None if state is None else tuple(s.transpose(0, 1).contiguous() for s in state)
        out, (h, c) = self.lstm(inputs, hc)
        return out, (h.transpose(0, 1), c.transpose(0, 1))


class MANN(MetaLearner):
    """An LSTM (optionally with an LRUA memory) that reads the support set as a sequence.

    Args:
        encoder: the per-example features, ``[B, *in_shape] -> [B, D]`` (``Flatten`` for raw
            pixels, ``Conv4`` for an embedding, ``Flatten`` of a ``(1,)`` input for sinusoids).
        in_shape: the per-example input shape (injected by the run).
        ways: ``N`` for classification (injected: the training ways); the label input and
            the output layer have ``N`` units, so the learner only takes ``N``-way tasks.
        out_features: the target width for regression (injected); give ``ways`` or this.
        hidden: LSTM units per layer (the homework: 128; Santoro et al.'s controller: 200).
        layers: stacked LSTM layers (the homework: 2; Santoro et al.: 1).
        memory: ``"none"`` (a plain LSTM) or ``"lrua"`` (an LSTM controller with the
            least-recently-used-access memory of Santoro et al.).
        protocol: ``"episodic"`` (support then queries) or ``"online"`` (Santoro et al.'s
            sequence with labels one step late; the query set is the support sequence).
        queries: ``"independent"`` (each query one step after the support set) or
            ``"sequential"`` (queries follow one another, as in the homework). Episodic only.
        memory_slots: LRUA slots ``S`` (paper: 128).
        memory_width: LRUA slot width ``W`` (paper: 40).
        read_heads: LRUA heads ``R`` (paper: 4).
        usage_decay: LRUA usage decay ``gamma``.

    Returns (when called): logits ``[T, N*Q, N]`` (classification) or values ``[T, Q, out]``
    (regression); with ``protocol="online"``, one prediction per sequence step ``[T, L, N]``.

    Example:
        >>> from manytask.nn import Flatten
        >>> mann = MANN(Flatten((1, 28, 28)), (1, 28, 28), ways=3, hidden=32)
        >>> sx, qx = torch.rand(2, 3, 1, 28, 28), torch.rand(2, 6, 1, 28, 28)
        >>> sy = torch.tensor([[2, 0, 1], [1, 2, 0]])
        >>> mann(sx, sy, qx, ways=3).shape
        torch.Size([2, 6, 3])
    """

    problems: ClassVar[tuple[Kind, ...]] = ("classification", "regression")
    order_invariant: ClassVar[bool] = False

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        ways: int | None = None,
        out_features: int | None = None,
        hidden: _Pos = 128,
        layers: _Pos = 2,
        memory: Memory = "none",
        protocol: Protocol = "episodic",
        queries: QueryMode = "independent",
        memory_slots: _Pos = 128,
        memory_width: _Pos = 40,
        read_heads: _Pos = 4,
        usage_decay: Annotated[float, Range(min=0, max=1, open=True)] = 0.95,
    ) -> None:
        super().__init__()
        if (ways is None) == (out_features is None):
            raise ValueError(
                "MANN: give ways (classification: N-way labels) or out_features (regression: "
                f"target width), exactly one; got ways={ways!r}, out_features={out_features!r}"
            )
        width = ways if ways is not None else out_features
        assert width is not None
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            what = "ways" if ways is not None else "out_features"
            raise ValueError(f"MANN: {what} must be an int >= 1, got {width!r}")
        for name, value in (("hidden", hidden), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MANN: {name} must be an int >= 1, got {value!r}")
        options: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("memory", memory, get_args(Memory)),
            ("protocol", protocol, get_args(Protocol)),
            ("queries", queries, get_args(QueryMode)),
        )
        for option, choice, valid in options:
            if choice not in valid:
                raise ValueError(f"MANN: {option} must be one of {valid}, got {choice!r}")
        self.encoder = encoder
        self.in_shape = tuple(int(s) for s in in_shape)
        self.ways, self.out_features = ways, out_features
        self.kind: Kind = "classification" if ways is not None else "regression"
        self.hidden, self.layers = hidden, layers
        self.memory: Memory = memory
        self.protocol: Protocol = protocol
        self.queries: QueryMode = queries
        self.memory_slots, self.memory_width = memory_slots, memory_width
        self.read_heads, self.usage_decay = read_heads, usage_decay
        features = output_features(encoder, self.in_shape)
        step_in = features + width
        self.core: LSTMCore | LRUAController
        if memory == "lrua":
            self.core = LRUAController(
                step_in, hidden, layers, memory_slots, memory_width, read_heads, usage_decay
            )
        else:
            self.core = LSTMCore(step_in, hidden, layers)
        self.readout = nn.Linear(self.core.out_features, width)

    def extra_repr(self) -> str:
        target = f"ways={self.ways}" if self.ways is not None else f"out={self.out_features}"
        return (
            f"{target}, hidden={self.hidden}, layers={self.layers}, memory={self.memory!r}, "
            f"protocol={self.protocol!r}, queries={self.queries!r}, "
            f"memory_slots={self.memory_slots}, memory_width={self.memory_width}, "
            f"read_heads={self.read_heads}, usage_decay={self.usage_decay}"
        )

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        kind = check_task_batch(support_x, support_y, query_x, ways)
        self._check_call(kind, support_x, support_y, query_x, ways)
        t, ns = support_x.shape[:2]
        nq = query_x.shape[1]
        if self.protocol == "online":
            z = self.encoder(support_x.flatten(0, 1)).view(t, ns, -1)
            steps = sequence_inputs(z, label_code(support_y, self.ways), delay=True)
            out, _ = self.core(steps)
            return self.readout(out)
        # One encoder pass over the support and query examples of every task.
        z = self.encoder(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
        zs, zq = z[: t * ns].view(t, ns, -1), z[t * ns :].view(t, nq, -1)
        support_steps = sequence_inputs(zs, label_code(support_y, self.ways))
        width = support_steps.shape[-1] - zq.shape[-1]
        query_steps = torch.cat([zq, zq.new_zeros(t, nq, width)], dim=-1)
        if self.queries == "sequential":
            out, _ = self.core(torch.cat([support_steps, query_steps], dim=1))
            return self.readout(out[:, ns:])
        # phi_i = the state after the support set; each query is one step from phi_i.
        _, phi = self.core(support_steps)
        out, _ = self.core(query_steps.reshape(t * nq, 1, -1), repeat_state(phi, nq))
        return self.readout(out.view(t, nq, -1))

    def _check_call(
        self, kind: Kind, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None
    ) -> None:
        if kind != self.kind:
            built = f"{self.ways}-way classification" if self.kind == "classification" else (
                f"regression with {self.out_features} target(s)"
            )  # fmt: skip
            raise ValueError(
                f"MANN was built for {built} but got a {kind} batch (support_y dtype "
                f"{support_y.dtype}); build it for this problem"
            )
        if kind == "classification":
            if ways is not None and ways != self.ways:
                raise ValueError(
                    f"ways={ways} but this MANN was built for {self.ways}-way tasks (its label "
                    f"input and output layer have {self.ways} units); call it with "
                    f"{self.ways}-way tasks or build one with ways={ways}"
                )
            if support_y.device.type == "cpu" and support_y.numel():  # no device sync
                low, high = int(support_y.min()), int(support_y.max())
                if low < 0 or high >= int(self.ways or 0):
                    raise ValueError(
                        f"support_y holds labels {low}..{high} but this MANN is "
                        f"{self.ways}-way: labels must lie in 0..{int(self.ways or 0) - 1}"
                    )
        elif support_y.shape[-1] != self.out_features:
            raise ValueError(
                f"support_y has {support_y.shape[-1]} target(s) per point but this MANN was "
                f"built with out_features={self.out_features}"
            )
        if self.protocol == "online":
            if query_x.shape != support_x.shape:
                raise ValueError(
                    "protocol='online' predicts every step of the support sequence: query_x "
                    f"must be that sequence, of shape {tuple(support_x.shape)}, got "
                    f"{tuple(query_x.shape)} (use the task source omniglot_sequences, or "
                    "protocol='episodic' for support/query episodes)"
                )
        elif query_x is support_x:
            raise ValueError(
                "query_x is the support set itself (a sequence episode, as omniglot_sequences "
                "delivers): protocol='episodic' would see each query's label in the support "
                "set; use protocol='online'"
            )
