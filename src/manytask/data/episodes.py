"""N-way K-shot episodes drawn from an in-memory :class:`~manytask.data.store.ImageStore`.

A meta-batch of ``T`` tasks is built with a handful of tensor operations, with no Python loop
over tasks and nothing decoded per episode:

1. draw the classes of every task, ``[T, N]`` (distinct within a task), and for each class
   ``K + Q`` distinct instances, ``[T, N, K+Q]``; the order in which classes are drawn is
   random, and a class's position is its label, so the class -> label map is random per task;
2. shuffle positions within the support set and within the query set of every task
   (sequence models such as black-box meta-learners see the examples in that order);
3. gather all ``T * N * (K+Q)`` images with ONE ``index_select`` from the ``uint8`` store
   ``[classes, instances, H, W]``, rotate them with at most one ``torch.rot90`` per rotation
   angle, and convert to ``float32`` in ``[0, 1]`` once per batch (ink = 1.0).

All randomness comes from a CPU ``torch.Generator`` owned by the sampler (never from the
global RNG), so an episode stream is the same on every device and can be resumed exactly from
:meth:`EpisodeSampler.state_dict`.

Rotations as new classes (Santoro et al., 2016; Vinyals et al., 2016): with
``rotations=(0, 90, 180, 270)`` every pair (store class ``c``, rotation index ``r``) is a
class of its own, identified by ``c * R + r`` where ``R = len(rotations)``; this is the id that
:attr:`Episode.classes` holds (with ``rotations=(0,)`` it is simply the store class id).
Angles are counter-clockwise, applied with ``torch.rot90(image, angle // 90, dims=(-2, -1))``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from manytask.data.store import ImageStore

__all__ = ["Episode", "EpisodeSampler", "FixedEpisodes", "RegressionEpisode", "fixed_episodes"]

GroupBy = Literal["none", "alphabet"]
_GROUP_BY: tuple[str, ...] = get_args(GroupBy)
_INV_255 = 1.0 / 255.0


@dataclass(frozen=True)
class Episode:
    """A meta-batch of ``T`` N-way classification tasks (support and query sets).

    Attributes:
        support_x: ``float32`` ``[T, N*K, C, H, W]`` in ``[0, 1]`` (ink = 1.0).
        support_y: ``int64`` ``[T, N*K]``, labels ``0..N-1``, each ``K`` times per task.
        query_x: ``float32`` ``[T, N*Q, C, H, W]``.
        query_y: ``int64`` ``[T, N*Q]``, labels ``0..N-1``, each ``Q`` times per task.
        classes: ``int64`` ``[T, N]``; ``classes[t, label]`` is the class that ``label``
            stands for in task ``t``: ``store_class * R + rotation_index`` with
            ``R = len(rotations)`` (the store class id when there are no rotations).

    Example:
        >>> import torch
        >>> ep = Episode(
        ...     support_x=torch.zeros(2, 3, 1, 8, 8), support_y=torch.tensor([[0, 1, 2]] * 2),
        ...     query_x=torch.zeros(2, 6, 1, 8, 8), query_y=torch.tensor([[0, 1, 2] * 2] * 2),
        ...     classes=torch.tensor([[4, 0, 7], [1, 2, 3]]),
        ... )
        >>> ep.tasks, ep.ways, ep.shots, ep.queries
        (2, 3, 1, 2)
        >>> ep.to("cpu").support_x.shape
        torch.Size([2, 3, 1, 8, 8])
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: Tensor

    @property
    def tasks(self) -> int:
        """Number of tasks ``T`` in the meta-batch."""
        return int(self.classes.shape[0])

    @property
    def ways(self) -> int:
        """Number of classes ``N`` per task."""
        return int(self.classes.shape[1])

    @property
    def shots(self) -> int:
        """Support examples per class ``K``."""
        return int(self.support_y.shape[1]) // self.ways

    @property
    def queries(self) -> int:
        """Query examples per class ``Q``."""
        return int(self.query_y.shape[1]) // self.ways

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """The same episode with every tensor on ``device``."""
        return Episode(
            support_x=self.support_x.to(device, non_blocking=non_blocking),
            support_y=self.support_y.to(device, non_blocking=non_blocking),
            query_x=self.query_x.to(device, non_blocking=non_blocking),
            query_y=self.query_y.to(device, non_blocking=non_blocking),
            classes=self.classes.to(device, non_blocking=non_blocking),
        )

    def __repr__(self) -> str:
        return (
            f"Episode(tasks={self.tasks}, ways={self.ways}, shots={self.shots}, "
            f"queries={self.queries}, image={tuple(self.support_x.shape[2:])}, "
            f"device={self.support_x.device})"
        )


@dataclass(frozen=True)
class RegressionEpisode:
    """A meta-batch of ``T`` few-shot regression tasks (support and query points).

    Attributes:
        support_x: ``float32`` ``[T, K, *x]`` inputs of the support points.
        support_y: ``float32`` ``[T, K, out]`` their targets.
        query_x: ``float32`` ``[T, Q, *x]``.
        query_y: ``float32`` ``[T, Q, out]``.
        params: ``float32`` ``[T, P]``, the parameters that define each task (e.g. a
            sinusoid's amplitude and phase), so every target can be traced to its task.

    Example:
        >>> import torch
        >>> ep = RegressionEpisode(
        ...     support_x=torch.zeros(4, 5, 1), support_y=torch.zeros(4, 5, 1),
        ...     query_x=torch.zeros(4, 10, 1), query_y=torch.zeros(4, 10, 1),
        ...     params=torch.zeros(4, 2),
        ... )
        >>> ep.tasks, ep.shots, ep.queries, ep.ways
        (4, 5, 10, None)
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    params: Tensor

    @property
    def tasks(self) -> int:
        """Number of tasks ``T`` in the meta-batch."""
        return int(self.support_x.shape[0])

    @property
    def ways(self) -> None:
        """Regression tasks have no classes."""
        return None

    @property
    def shots(self) -> int:
        """Support points per task ``K``."""
        return int(self.support_x.shape[1])

    @property
    def queries(self) -> int:
        """Query points per task ``Q``."""
        return int(self.query_x.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> RegressionEpisode:
        """The same tasks with every tensor on ``device``."""
        return RegressionEpisode(
            *(
                getattr(self, f).to(device, non_blocking=non_blocking)
                for f in ("support_x", "support_y", "query_x", "query_y", "params")
            )
        )

    def __repr__(self) -> str:
        return (
            f"RegressionEpisode(tasks={self.tasks}, shots={self.shots}, queries={self.queries}, "
            f"x={tuple(self.support_x.shape[2:])}, y={tuple(self.support_y.shape[2:])}, "
            f"device={self.support_x.device})"
        )


@dataclass(frozen=True)
class _Draw:
    """Indices of a batch of episodes, all on the CPU (internal).

    Row ``t`` is task ``t``. ``flat`` indexes the store viewed as ``[classes*instances, H*W]``;
    its first ``N*K`` columns are the support set (already shuffled), the rest the query set;
    ``rot`` is the rotation index of every position.
    """

    flat: Tensor  # int64 [T, N*(K+Q)]
    rot: Tensor  # int64 [T, N*(K+Q)]
    support_y: Tensor  # int64 [T, N*K]
    query_y: Tensor  # int64 [T, N*Q]
    classes: Tensor  # int64 [T, N]

    def rows(self, start: int, stop: int) -> _Draw:
        return _Draw(
            self.flat[start:stop],
            self.rot[start:stop],
            self.support_y[start:stop],
            self.query_y[start:stop],
            self.classes[start:stop],
        )


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}. Pass {name}>=1.")
    return value


def _distinct_rows(g: torch.Generator, rows: int, pool: int, n: int) -> Tensor:
    """``[rows, n]`` int64: per row, ``n`` distinct uniform draws from ``range(pool)``.

    When collisions are rare (``n*n <= pool``) rows are drawn with replacement and the few
    rows with a repeat are redrawn (rejection sampling: exact, and far cheaper than sorting
    ``pool`` random keys per row); otherwise the ``n`` smallest of ``pool`` uniform keys.
    Every sort in this module is stable, so ties between random keys (rare) are broken the
    same way on every machine and the episode stream is portable.
    """
    if n * n > pool or n > 64:
        return torch.rand(rows, pool, generator=g).argsort(dim=1, stable=True)[:, :n]
    out = torch.randint(pool, (rows, n), generator=g)
    while n > 1:
        # A row has a repeat iff some off-diagonal pair is equal ([rows, n, n] compares).
        same = (out.unsqueeze(2) == out.unsqueeze(1)).sum(dim=(1, 2))
        bad = (same > n).nonzero().squeeze(1)
        if bad.numel() == 0:
            break
        out[bad] = torch.randint(pool, (bad.numel(), n), generator=g)
    return out


class EpisodeSampler:
    """Draws meta-batches of N-way K-shot episodes from an :class:`ImageStore`.

    Args:
        store: the images, ``uint8`` ``[classes, instances, H, W]`` with ink = 255.
        ways: classes per task ``N``.
        shots: support examples per class ``K``.
        queries: query examples per class ``Q``.
        tasks: tasks per meta-batch ``T``.
        rotations: angles in degrees (multiples of 90, distinct); each (class, angle) pair is a
            class of its own, with id ``class * len(rotations) + rotation_index``.
        group_by: ``"none"``: the ``N`` classes of a task are drawn uniformly from all classes;
            ``"alphabet"``: a task first draws one alphabet uniformly among those with at least
            ``N`` classes (counting rotations), then its ``N`` classes within that alphabet.
            Alphabets with fewer classes are excluded (see :attr:`excluded_alphabets`).
        device: where the episodes are delivered; the store's images are copied there once,
            so the gather and the float conversion run on that device. Default: the device the
            store's images are on.
        generator: a CPU ``torch.Generator``, used (and advanced) by this sampler only.
        seed: alternative to ``generator``: a fresh CPU generator seeded with ``seed``.
            With neither, a fresh generator seeded from OS entropy (``Generator.seed()``);
            :attr:`initial_seed` tells which seed was used, to reproduce the run.

    Raises:
        ValueError: on a non-positive ``ways``/``shots``/``queries``/``tasks``, more ways than
            classes available, more ``shots + queries`` than instances per class, bad
            rotations, an unknown ``group_by``, or both ``generator`` and ``seed``.

    Every index is drawn on the CPU, so the stream of episodes depends only on the seed and
    the hyperparameters, not on ``device``.

    Example:
        >>> import torch
        >>> from manytask.data import ImageStore, EpisodeSampler
        >>> store = ImageStore(
        ...     images=torch.randint(0, 256, (10, 6, 8, 8), dtype=torch.uint8),
        ...     class_names=tuple(f"A/c{i}" for i in range(10)), alphabets=("A",),
        ...     alphabet_of=torch.zeros(10, dtype=torch.long),
        ...     drawers=torch.zeros(10, 6, dtype=torch.long), source="random",
        ... )
        >>> sampler = EpisodeSampler(store, ways=5, shots=1, queries=3, tasks=4, seed=0)
        >>> ep = sampler.sample()
        >>> tuple(ep.support_x.shape), tuple(ep.query_y.shape)
        ((4, 5, 1, 8, 8), (4, 15))
        >>> state = sampler.state_dict()
        >>> a = sampler.sample()
        >>> sampler.load_state_dict(state)
        >>> torch.equal(sampler.sample().query_x, a.query_x)
        True
    """

    def __init__(
        self,
        store: ImageStore,
        ways: int,
        shots: int,
        queries: int,
        tasks: int = 1,
        *,
        rotations: Sequence[int] = (0,),
        group_by: GroupBy = "none",
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        self.ways = _check_positive("ways", ways)
        self.shots = _check_positive("shots", shots)
        self.queries = _check_positive("queries", queries)
        self.tasks = _check_positive("tasks", tasks)
        self.rotations = _check_rotations(rotations, store)
        if group_by not in _GROUP_BY:
            raise ValueError(f"group_by must be one of {_GROUP_BY}; got {group_by!r}.")
        self.group_by: GroupBy = group_by
        self.device = torch.device(device) if device is not None else store.images.device
        self.generator = _make_generator(generator, seed)
        self.store = store

        instances = store.num_instances
        if shots + queries > instances:
            raise ValueError(
                f"shots + queries = {shots} + {queries} = {shots + queries} but the store has "
                f"only {instances} instances per class (support and query images are distinct); "
                f"use shots + queries <= {instances}."
            )
        r = len(self.rotations)
        self._pools: Tensor | None = None  # [A, max_pool] effective class ids (alphabet mode)
        self._pool_sizes: Tensor | None = None  # [A]
        self.excluded_alphabets: tuple[str, ...] = ()
        if group_by == "none":
            available = store.num_classes * r
            if ways > available:
                raise ValueError(
                    f"ways={ways} but only {available} classes are available "
                    f"({store.num_classes} store classes x {r} rotation(s)); use ways <= "
                    f"{available}, or add rotations to make more classes."
                )
        else:
            self._pools, self._pool_sizes, self.excluded_alphabets = _alphabet_pools(store, r, ways)
        self._num_classes = store.num_classes * r
        # Unshuffled layout of one task's N*(K+Q) positions: support (label-major, K each),
        # then query (Q each). _layout_slot indexes the [N, K+Q] instance draw, flattened.
        n, k, q = ways, shots, queries
        lab_s, lab_q = torch.arange(n).repeat_interleave(k), torch.arange(n).repeat_interleave(q)
        slot_s = lab_s * (k + q) + torch.arange(n * k) % k
        slot_q = lab_q * (k + q) + k + torch.arange(n * q) % q
        self._layout_label = torch.cat([lab_s, lab_q])
        self._layout_slot = torch.cat([slot_s, slot_q])
        self._key_offset = torch.cat([torch.zeros(n * k), torch.ones(n * q)])
        # One contiguous [classes*instances, H*W] view, on the delivery device, copied once.
        # Rows are gathered as the widest integer type that divides a row's bytes (784 bytes
        # = 98 int64 for 28x28): the same bytes, 8x fewer elements for index_select to move.
        rows = store.images.to(self.device).contiguous().view(store.num_classes * instances, -1)
        for wide in (torch.int64, torch.int32, torch.int16):
            if rows.shape[1] % wide.itemsize == 0:
                rows = rows.view(wide)
                break
        self._flat_images = rows

    @property
    def initial_seed(self) -> int:
        """The seed the generator started from (``generator.initial_seed()``)."""
        return int(self.generator.initial_seed())

    def __repr__(self) -> str:
        extra = ""
        if self.group_by != "none":
            extra = f", excluded_alphabets={len(self.excluded_alphabets)}"
        return (
            f"EpisodeSampler(ways={self.ways}, shots={self.shots}, queries={self.queries}, "
            f"tasks={self.tasks}, rotations={self.rotations}, group_by={self.group_by!r}, "
            f"device={self.device}, store={self.store!r}{extra})"
        )

    def sample(self) -> Episode:
        """One meta-batch of :attr:`tasks` episodes (see :class:`Episode` for the shapes)."""
        return _gather(self._flat_images, self._draw(self.tasks, self.generator), self)

    def __iter__(self) -> Iterator[Episode]:
        """An endless stream of meta-batches; use ``itertools.islice`` to take a few."""
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """The generator state and the hyperparameters, for checkpoints.

        Loading it with :meth:`load_state_dict` reproduces the exact episode stream that
        followed the call. Holds only tensors, ints, strings and tuples
        (``torch.load(..., weights_only=True)`` reads it back).
        """
        return {
            "generator_state": self.generator.get_state(),
            "hyperparameters": self._hyperparameters(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`.

        Raises:
            ValueError: if the state was saved by a sampler with other hyperparameters (the
                stream would silently differ).
        """
        mine = self._hyperparameters()
        theirs = state.get("hyperparameters")
        if theirs is not None and dict(theirs) != mine:
            raise ValueError(
                f"this state_dict was saved by an EpisodeSampler with {dict(theirs)}, but this "
                f"one has {mine}; build the sampler with the saved hyperparameters."
            )
        self.generator.set_state(state["generator_state"])

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "tasks": self.tasks,
            "rotations": self.rotations,
            "group_by": self.group_by,
            "classes": self.store.num_classes,
            "instances": self.store.num_instances,
        }

    def _draw(self, tasks: int, g: torch.Generator) -> _Draw:
        """Draw the indices of ``tasks`` episodes on the CPU (no images touched)."""
        n, k, q = self.ways, self.shots, self.queries
        r = len(self.rotations)
        instances = self.store.num_instances
        # 1. Classes [T, N], distinct per task, in random order: position = label.
        if self._pools is None:
            classes = _distinct_rows(g, tasks, self._num_classes, n)
        else:
            assert self._pool_sizes is not None
            sizes = self._pool_sizes
            alpha = torch.randint(sizes.numel(), (tasks,), generator=g)  # [T]
            keys = torch.rand(tasks, self._pools.shape[1], generator=g)
            width = torch.arange(self._pools.shape[1])
            keys.masked_fill_(width >= sizes[alpha].unsqueeze(1), 2.0)  # padding never drawn
            pos = keys.argsort(dim=1, stable=True)[:, :n]  # [T, N]
            classes = self._pools[alpha.unsqueeze(1), pos]
        # 2. K+Q distinct instances per (task, class), flattened: [T, N*(K+Q)].
        keys = torch.rand(tasks, n, instances, generator=g)
        inst = keys.argsort(dim=2, stable=True)[:, :, : k + q].reshape(tasks, n * (k + q))
        # 3. Shuffle positions within support and within query, per task, with ONE argsort:
        #    support keys lie in [0, 1) and query keys in [1, 2), so the first N*K sorted
        #    positions are the support positions in random order, then the query positions.
        keys = torch.rand(tasks, n * (k + q), generator=g).add_(self._key_offset)
        perm = keys.argsort(dim=1, stable=True)  # [T, N*(K+Q)] into the unshuffled layout
        labels = self._layout_label[perm]  # [T, N*(K+Q)]
        cls = classes.gather(1, labels)  # effective class of every position
        flat = (cls // r) * instances + inst.gather(1, self._layout_slot[perm])
        return _Draw(flat, cls % r, labels[:, : n * k], labels[:, n * k :], classes)


def _gather(flat_images: Tensor, draw: _Draw, sampler: EpisodeSampler) -> Episode:
    """Turn a draw into an :class:`Episode`: one ``index_select``, <= 3 rotations, float cast."""
    device = flat_images.device
    tasks, nk = draw.support_y.shape
    nq = draw.query_y.shape[1]
    h, w = sampler.store.images.shape[-2:]
    # Images in the order [support of all tasks | query of all tasks], so that after one
    # gather and one float conversion both sets are contiguous views of one buffer.
    index = torch.cat([draw.flat[:, :nk].reshape(-1), draw.flat[:, nk:].reshape(-1)])
    x = flat_images.index_select(0, index.to(device)).view(torch.uint8).view(-1, h, w)
    if len(sampler.rotations) > 1:
        rot = torch.cat([draw.rot[:, :nk].reshape(-1), draw.rot[:, nk:].reshape(-1)])
        for r, angle in enumerate(sampler.rotations):
            if angle == 0:
                continue
            where = (rot == r).nonzero().squeeze(1)
            if where.numel() == 0:
                continue
            where = where.to(device)
            turned = torch.rot90(x.index_select(0, where), angle // 90, dims=(1, 2))
            x.index_copy_(0, where, turned)
    # uint8 -> float32 once per batch; x * (1/255) is within 1 ulp of x / 255 and maps 255 to 1.0.
    xf = x.to(torch.float32).mul_(_INV_255)
    return Episode(
        support_x=xf[: tasks * nk].view(tasks, nk, 1, h, w),
        support_y=draw.support_y.to(device),
        query_x=xf[tasks * nk :].view(tasks, nq, 1, h, w),
        query_y=draw.query_y.to(device),
        classes=draw.classes.to(device),
    )


def _check_rotations(rotations: Sequence[int], store: ImageStore) -> tuple[int, ...]:
    rots = tuple(rotations)
    if not rots:
        raise ValueError("rotations must hold at least one angle; got (). Use rotations=(0,).")
    for angle in rots:
        if isinstance(angle, bool) or not isinstance(angle, int) or angle % 90 != 0:
            raise ValueError(
                f"rotations must be multiples of 90 degrees (ints); got {rotations!r}. "
                "Use e.g. rotations=(0, 90, 180, 270)."
            )
    if len({a % 360 for a in rots}) != len(rots):
        raise ValueError(
            f"rotations must be distinct angles (mod 360); got {rotations!r}. "
            "Use e.g. rotations=(0, 90, 180, 270)."
        )
    h, w = store.images.shape[-2:]
    if h != w and any(a % 180 != 0 for a in rots):
        raise ValueError(
            f"rotations by 90 or 270 degrees need square images; the store's are {h}x{w}. "
            "Use rotations that are multiples of 180."
        )
    return tuple(a % 360 for a in rots)


def _alphabet_pools(store: ImageStore, r: int, ways: int) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """Effective class ids per eligible alphabet, padded ``[A, width]``; sizes ``[A]``; excluded."""
    pools: list[Tensor] = []
    excluded: list[str] = []
    largest = 0
    for a, name in enumerate(store.alphabets):
        members = (store.alphabet_of == a).nonzero().squeeze(1)
        eff = (members.unsqueeze(1) * r + torch.arange(r)).reshape(-1)
        largest = max(largest, eff.numel())
        if eff.numel() >= ways:
            pools.append(eff)
        elif eff.numel() > 0:
            excluded.append(name)
    if not pools:
        raise ValueError(
            f"ways={ways} with group_by='alphabet' needs an alphabet with at least {ways} classes "
            f"(x {r} rotation(s)), but the largest has {largest}; use ways <= {largest}, add "
            "rotations, or use group_by='none'."
        )
    width = max(p.numel() for p in pools)
    padded = torch.zeros(len(pools), width, dtype=torch.long)
    for i, p in enumerate(pools):
        padded[i, : p.numel()] = p
    sizes = torch.tensor([p.numel() for p in pools], dtype=torch.long)
    return padded, sizes, tuple(excluded)


def _make_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both.")
    if generator is not None:
        if generator.device.type != "cpu":
            raise ValueError(
                f"generator must be a CPU torch.Generator (indices are drawn on the CPU so the "
                f"stream is the same on every device); got one on {generator.device}. "
                "Use torch.Generator() and pass device= for where episodes go."
            )
        return generator
    g = torch.Generator()
    if seed is not None:
        g.manual_seed(seed)
    else:
        g.seed()  # OS entropy; the seed stays readable via g.initial_seed()
    return g


class FixedEpisodes:
    """A fixed, seeded set of evaluation episodes, identical across runs, machines and batch sizes.

    All indices of all ``num_episodes`` episodes are drawn up front on the CPU from a generator
    seeded with ``seed`` (one task per episode); iterating gathers them ``batch_size`` at a
    time. Episode ``i`` is therefore the same whatever ``batch_size`` or ``device`` it is
    delivered with. (It does depend on ``num_episodes``: 600 episodes are not a prefix of 1000.)

    Args:
        store: the images.
        ways: classes per episode ``N``.
        shots: support examples per class ``K``.
        queries: query examples per class ``Q``.
        num_episodes: how many episodes.
        seed: seed of the CPU generator that draws them.
        rotations: as in :class:`EpisodeSampler`.
        batch_size: episodes per yielded :class:`Episode` (the last one may be smaller).
        group_by: as in :class:`EpisodeSampler`.
        device: where episodes are delivered (default: the store's device).

    Example:
        >>> import torch
        >>> from manytask.data import ImageStore, fixed_episodes
        >>> store = ImageStore(
        ...     images=torch.randint(0, 256, (10, 6, 8, 8), dtype=torch.uint8),
        ...     class_names=tuple(f"A/c{i}" for i in range(10)), alphabets=("A",),
        ...     alphabet_of=torch.zeros(10, dtype=torch.long),
        ...     drawers=torch.zeros(10, 6, dtype=torch.long), source="random",
        ... )
        >>> test = fixed_episodes(store, 5, 1, 3, num_episodes=10, batch_size=4)
        >>> len(test), [ep.tasks for ep in test]
        (3, [4, 4, 2])
    """

    def __init__(
        self,
        store: ImageStore,
        ways: int,
        shots: int,
        queries: int,
        num_episodes: int = 600,
        *,
        seed: int = 0,
        rotations: Sequence[int] = (0,),
        batch_size: int = 32,
        group_by: GroupBy = "none",
        device: torch.device | str | None = None,
    ) -> None:
        self.num_episodes = _check_positive("num_episodes", num_episodes)
        self.batch_size = _check_positive("batch_size", batch_size)
        self.seed = seed
        self._sampler = EpisodeSampler(
            store, ways, shots, queries, 1, rotations=rotations, group_by=group_by,
            device=device, seed=seed,
        )  # fmt: skip
        self._draw = self._sampler._draw(self.num_episodes, self._sampler.generator)

    def __len__(self) -> int:
        """Number of batches."""
        return -(-self.num_episodes // self.batch_size)

    def __iter__(self) -> Iterator[Episode]:
        s = self._sampler
        for start in range(0, self.num_episodes, self.batch_size):
            stop = min(start + self.batch_size, self.num_episodes)
            yield _gather(s._flat_images, self._draw.rows(start, stop), s)

    def __repr__(self) -> str:
        s = self._sampler
        return (
            f"FixedEpisodes(ways={s.ways}, shots={s.shots}, queries={s.queries}, "
            f"num_episodes={self.num_episodes}, seed={self.seed}, rotations={s.rotations}, "
            f"batch_size={self.batch_size}, group_by={s.group_by!r}, device={s.device})"
        )


fixed_episodes = FixedEpisodes
"""Functional spelling of :class:`FixedEpisodes` (same arguments, returns one)."""
