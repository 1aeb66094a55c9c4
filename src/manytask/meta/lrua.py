"""Least-recently-used access (LRUA) memory (Santoro et al., ICML 2016, Sections 3.1-3.2).

"Meta-Learning with Memory-Augmented Neural Networks" adds to an LSTM controller an external
memory ``M_t`` of ``S`` slots (rows) of width ``W``, read by content and written by location.
At every step ``t`` the controller emits, for each of its ``R`` heads, a key ``k_t`` (the same
vector is used to read and is what gets written) and a scalar gate ``alpha_t``. With
``w^r`` the read weights, ``w^w`` the write weights, ``w^u`` the usage weights and ``w^lu`` the
least-used weights, one step is, in the paper's notation:

Reading (Section 3.1)::

    K(k_t, M_t(i)) = k_t . M_t(i) / (||k_t|| ||M_t(i)||)               cosine similarity
    w^r_t(i)       = exp K(k_t, M_t(i)) / sum_j exp K(k_t, M_t(j))      read weights
    r_t            = sum_i w^r_t(i) M_t(i)                              read vector

Writing with least-recently-used access (Section 3.2)::

    w^u_t    = gamma w^u_{t-1} + w^r_t + w^w_t                          usage (decay gamma)
    w^lu_t(i) = 0 if w^u_t(i) > m(w^u_t, n) else 1                      least used: the n
               (m(v, n) = the n-th smallest element of v,                smallest usages,
                n = the number of reads, i.e. of heads)                  n = R
    w^w_t    = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}   write weights
    M_t(i)   = M_{t-1}(i) + w^w_t(i) k_t                                after zeroing the
                                                                        least used slot

"Prior to writing to memory, the least used memory location is computed from ``w^u_{t-1}``
and is set to zero": the single slot ``argmin_i w^u_{t-1}(i)`` is cleared before the write.
The gate interpolates between writing where the controller last read (update a memory) and
writing to rarely used slots (store something new).

One step here, in order (``R`` heads, each writing and reading with its own key; the write of
every head is added to the memory, and the usage adds every head's weights):

1. ``w^lu_{t-1}`` from ``w^u_{t-1}``; 2. ``w^w_t`` (eq. above); 3. zero the least used slot and
write ``M_t = M_{t-1} + sum_heads w^w_t k_t^T``; 4. read ``w^r_t``, ``r_t`` from ``M_t``;
5. ``w^u_t = gamma w^u_{t-1} + sum_heads (w^r_t + w^w_t)``.

Choices the paper leaves open, and ours:

- ties in ``m(w^u, n)``: exactly ``n`` slots are marked, ties broken by the lower slot index
  (a stable sort), so at ``t = 0``, when every usage is 0, the first ``n`` slots are the least
  used; the paper's ``<=`` rule would mark every tied slot;
- ``alpha`` is computed by the controller at each step (a linear map of its state per head),
  and the keys are ``tanh`` of a linear map of its state;
- the controller reads the previous step's read vectors with its input (as in the Neural Turing
  Machine the paper builds on), and its output layer sees ``[h_t, r_t]``;
- the initial state: memory filled with ``1e-6`` (a zero row has no direction for the cosine
  similarity), usage, read weights and read vectors zero.

Every step is a handful of batched tensor operations over ``[B, R, S]`` weights: a meta-batch
of tasks runs as one batch, with a Python loop over the steps of the sequence only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LRUAController",
    "cosine_similarity",
    "least_used",
    "lrua_step",
    "write_weights",
]

_EPS = 1e-8
_INIT_MEMORY = 1e-6

State = tuple[Tensor, ...]
"""A batch-first recurrent state: every tensor has the batch as its leading dimension."""


def cosine_similarity(keys: Tensor, memory: Tensor) -> Tensor:
    """``K(k, M(i))`` for every head and slot: ``[B, R, W], [B, S, W] -> [B, R, S]``."""
    dots = keys @ memory.transpose(1, 2)
    norms = keys.norm(dim=-1, keepdim=True) * memory.norm(dim=-1).unsqueeze(1)
    return dots / (norms + _EPS)


def least_used(usage: Tensor, n: int) -> Tensor:
    """``w^lu``: 1 at the ``n`` least used slots, 0 elsewhere: ``[B, S] -> [B, S]``.

    Exactly ``n`` slots per row; among equal usages the lower slot index counts as less used.
    """
    order = usage.argsort(dim=-1, stable=True)[:, :n]
    return torch.zeros_like(usage).scatter_(1, order, 1.0)


def write_weights(gate: Tensor, prev_read: Tensor, prev_least_used: Tensor) -> Tensor:
    """``w^w_t = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}``.

    Args:
        gate: ``[B, R]`` the gate logits ``alpha`` of every head.
        prev_read: ``[B, R, S]`` the previous read weights ``w^r_{t-1}``.
        prev_least_used: ``[B, S]`` the previous least-used weights ``w^lu_{t-1}``.

    Returns:
        ``[B, R, S]`` write weights.
    """
    s = torch.sigmoid(gate).unsqueeze(-1)
    return s * prev_read + (1.0 - s) * prev_least_used.unsqueeze(1)


def lrua_step(
    memory: Tensor,
    usage: Tensor,
    prev_read: Tensor,
    keys: Tensor,
    gate: Tensor,
    decay: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One write-then-read step of the LRUA memory (see the module docstring).

    Args:
        memory: ``[B, S, W]`` ``M_{t-1}``.
        usage: ``[B, S]`` ``w^u_{t-1}``.
        prev_read: ``[B, R, S]`` ``w^r_{t-1}``.
        keys: ``[B, R, W]`` ``k_t`` of every head.
        gate: ``[B, R]`` ``alpha_t`` of every head.
        decay: the usage decay ``gamma``.

    Returns:
        ``(M_t [B, S, W], w^u_t [B, S], w^r_t [B, R, S], r_t [B, R, W])``.
    """
    heads = keys.shape[1]
    order = usage.argsort(dim=-1, stable=True)  # slots from least to most used (w^u_{t-1})
    lu = torch.zeros_like(usage).scatter_(1, order[:, :heads], 1.0)  # w^lu_{t-1}, n = R
    ww = write_weights(gate, prev_read, lu)  # [B, R, S]
    # Zero the single least used slot, then add every head's key where it writes.
    keep = torch.ones_like(usage).scatter_(1, order[:, :1], 0.0).unsqueeze(-1)
    memory = memory * keep + ww.transpose(1, 2) @ keys
    wr = F.softmax(cosine_similarity(keys, memory), dim=-1)
    reads = wr @ memory
    usage = decay * usage + wr.sum(1) + ww.sum(1)
    return memory, usage, wr, reads


class LRUAController(nn.Module):
    """An LSTM controller with an LRUA memory: a sequence core ``[B, L, D] -> [B, L, F]``.

    Args:
        in_features: ``D``, the width of each step's input.
        hidden: LSTM units per layer.
        layers: stacked LSTM cells.
        slots: memory slots ``S``.
        width: memory slot width ``W``.
        heads: read/write heads ``R`` (also the ``n`` of the least-used rule).
        decay: the usage decay ``gamma`` in ``(0, 1]``.

    The output of a step is ``[h_t, r_t]`` (the last layer's state and the ``R`` read vectors),
    ``F = hidden + heads * width``. The state (:data:`State`) is batch-first, so it can be
    repeated per query with ``repeat_interleave`` on dimension 0.

    Example:
        >>> core = LRUAController(10, hidden=16, slots=8, width=4, heads=2)
        >>> out, state = core(torch.randn(3, 5, 10))
        >>> out.shape, core.out_features
        (torch.Size([3, 5, 24]), 24)
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 200,
        layers: int = 1,
        slots: int = 128,
        width: int = 40,
        heads: int = 4,
        decay: float = 0.95,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("hidden", hidden),
            ("layers", layers),
            ("slots", slots),
            ("width", width),
            ("heads", heads),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LRUAController: {name} must be an int >= 1, got {value!r}")
        if heads > slots:
            raise ValueError(
                f"LRUAController: heads={heads} > slots={slots}; the least-used rule marks "
                "`heads` slots, so use heads <= slots"
            )
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"LRUAController: decay must be in (0, 1], got {decay!r}")
        self.in_features, self.hidden, self.layers = in_features, hidden, layers
        self.slots, self.width, self.heads, self.decay = slots, width, heads, float(decay)
        self.cells = nn.ModuleList(
            nn.LSTMCell(in_features + heads * width if i == 0 else hidden, hidden)
            for i in range(layers)
        )
        self.key = nn.Linear(hidden, heads * width)
        self.gate = nn.Linear(hidden, heads)
        self.out_features = hidden + heads * width

    def extra_repr(self) -> str:
        return (
            f"hidden={self.hidden}, layers={self.layers}, slots={self.slots}, "
            f"width={self.width}, heads={self.heads}, decay={self.decay}"
        )

    def initial_state(self, batch: int, like: Tensor) -> State:
        """``(h, c, M, w^u, w^r, r)``: zero states, memory filled with ``1e-6``."""
        z = like.new_zeros
        return (
            z(batch, self.layers, self.hidden),
            z(batch, self.layers, self.hidden),
            like.new_full((batch, self.slots, self.width), _INIT_MEMORY),
            z(batch, self.slots),
            z(batch, self.heads, self.slots),
            z(batch, self.heads * self.width),
        )

    def forward(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run the sequence ``inputs [B, L, D]``; returns outputs ``[B, L, F]`` and the state."""
        b, length, _ = inputs.shape
        h0, c0, memory, usage, read_w, reads = (
            self.initial_state(b, inputs) if state is None else state
        )
        hs = list(h0.unbind(1))
        cs = list(c0.unbind(1))
        outputs: list[Tensor] = []
        for t in range(length):
            x = torch.cat([inputs[:, t], reads], dim=-1)
            for i, cell in enumerate(self.cells):
                hs[i], cs[i] = cell(x, (hs[i], cs[i]))
                x = hs[i]
            keys = torch.tanh(self.key(x)).view(b, self.heads, self.width)
            memory, usage, read_w, r = lrua_step(
                memory, usage, read_w, keys, self.gate(x), self.decay
            )
            reads = r.flatten(1)
            outputs.append(torch.cat([x, reads], dim=-1))
        state = (torch.stack(hs, 1), torch.stack(cs, 1), memory, usage, read_w, reads)
        return torch.stack(outputs, 1), state


def repeat_state(state: Sequence[Tensor], repeats: int) -> State:
    """Each batch row of a batch-first state repeated ``repeats`` times (row-major)."""
    return tuple(s.repeat_interleave(repeats, dim=0) for s in state)
