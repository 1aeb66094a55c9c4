"""What every optimisation-based learner shares: the network, its head, the calls' checks.

An :class:`InnerLoopLearner` is an encoder followed by a linear head (``ways`` outputs for
classification, fixed at construction; ``out_features`` for regression), seen as a function
of a parameter dict (:mod:`manytask.meta.functional`). Subclasses (:class:`~manytask.meta.MAML`,
:class:`~manytask.meta.MetaSGD`, :class:`~manytask.meta.ANIL`, :class:`~manytask.meta.Reptile`)
differ only in which parameters adapt, with which learning rate, and in their outer update;
they all run the one inner loop :func:`~manytask.meta.functional.adapt`.

Training and evaluation differ in two explicit ways only: the number of inner steps
(``steps`` while training, ``test_steps`` in eval mode) and whether a graph is kept for the
meta-gradient (only while training with gradients enabled). Batch norm follows
``batch_norm`` in both (see :mod:`manytask.meta.functional`); eval mode never switches it to
running statistics.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from manytask.meta.base import Kind, MetaLearner, check_task_batch
from manytask.meta.functional import (
    BatchNormMode,
    GroupedNet,
    LearningRate,
    LoopNet,
    PerTaskNet,
    TaskNet,
    UnsupportedLayer,
    adapt,
    per_task,
)
from manytask.meta.parallel import Compute, over_tasks

__all__ = ["Backend", "InnerLoopLearner"]

Backend = Literal["auto", "grouped", "per_task", "loop"]


class _Prefixed:
    """A :class:`LoopNet` over a sub-module, addressed with the learner's parameter names."""

    def __init__(self, net: LoopNet, prefix: str) -> None:
        self.net, self.prefix = net, prefix
        self.names = tuple(prefix + n for n in net.names)

    def __call__(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        stats_rows: int | None = None,
        *,
        twice: bool = False,
    ) -> Tensor:
        own = {n[len(self.prefix) :]: p for n, p in params.items() if n.startswith(self.prefix)}
        return self.net(own, x, stats_rows)


def _features_net(
    encoder: nn.Module, backend: Backend, batch_norm: BatchNormMode
) -> tuple[TaskNet, str]:
    """The encoder as a function of ``encoder.*`` parameters; returns it and its kind."""
    if backend == "per_task":
        try:
            return PerTaskNet(encoder, prefix="encoder."), "per_task"
        except UnsupportedLayer as exc:
            raise ValueError(
                f"backend='per_task' needs an encoder made of supported layers, but {exc}. Use "
                "backend='loop' with batch_norm='transductive' for any encoder."
            ) from None
    if backend in ("auto", "grouped"):
        try:
            return GroupedNet(encoder, prefix="encoder."), "grouped"
        except UnsupportedLayer as exc:
            if backend == "grouped" or batch_norm == "support":
                need = "backend='grouped'" if backend == "grouped" else "batch_norm='support'"
                raise ValueError(
                    f"{need} needs an encoder that runs per task in one call, but {exc}. Use "
                    "backend='loop' with batch_norm='transductive' for any encoder."
                ) from None
    if batch_norm == "support":
        raise ValueError(
            "batch_norm='support' needs backend='grouped', 'per_task' or 'auto'; the "
            "functional_call loop only does transductive batch norm"
        )
    return _Prefixed(LoopNet(encoder), "encoder."), "loop"


class InnerLoopLearner(MetaLearner):
    """Base class: an encoder and a linear head, adapted per task by gradient steps.

    Args:
        encoder: the feature network ``[B, *in_shape] -> [B, D]`` (injected by the run).
        in_shape: the per-example input shape (injected).
        ways: classes of a classification problem: the head has ``ways`` outputs and every
            call must have that many ways (injected from the training episodes).
        out_features: the target width of a regression problem (injected).
        inner_lr: the inner learning rate ``alpha``.
        steps: inner steps while training.
        test_steps: inner steps in eval mode (``None``: ``steps``).
        batch_norm: ``"transductive"`` or ``"support"`` statistics (see
            :mod:`manytask.meta.functional`), the same in training and evaluation.
        backend: ``"grouped"`` runs every task in one call (exact; the encoder must be made of
            supported layers), ``"per_task"`` the same layers one task at a time (the fastest
            fp32 choice on a CPU, with ``task_workers``), ``"loop"`` one ``functional_call``
            per task (any encoder), ``"auto"`` grouped if the encoder fits, else loop.
        task_workers: split each meta-batch's tasks over this many worker threads, forward
            and backward (CPU only; :mod:`manytask.meta.parallel`). Each worker gets
            ``torch.get_num_threads() // task_workers`` intra-op threads; ``1`` runs every
            task in the calling thread.
    """

    problems: ClassVar[tuple[Kind, ...]] = ("classification", "regression")
    order_invariant: ClassVar[bool] = True

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        ways: int | None,
        out_features: int | None,
        inner_lr: float,
        steps: int,
        test_steps: int | None,
        batch_norm: BatchNormMode,
        backend: Backend,
        task_workers: int = 1,
    ) -> None:
        super().__init__()
        from manytask.nn.mlp import output_features

        name = type(self).__name__
        if (ways is None) == (out_features is None):
            raise ValueError(
                f"{name}: give exactly one of ways (classification: the head's outputs) and "
                f"out_features (regression), got ways={ways}, out_features={out_features}"
            )
        for key, value, low in (("ways", ways, 2), ("out_features", out_features, 1)):
            if value is not None and (isinstance(value, bool) or int(value) < low):
                raise ValueError(f"{name}: {key} must be an int >= {low}, got {value!r}")
        if not float(inner_lr) > 0:
            raise ValueError(f"{name}: inner_lr must be > 0, got {inner_lr!r}")
        if int(steps) < 1:
            raise ValueError(f"{name}: steps must be >= 1, got {steps!r}")
        if test_steps is not None and int(test_steps) < 0:
            raise ValueError(
                f"{name}: test_steps must be >= 0 (or None = steps), got {test_steps!r}"
            )
        if batch_norm not in ("transductive", "support"):
            raise ValueError(
                f"{name}: batch_norm must be 'transductive' or 'support', got {batch_norm!r}"
            )
        if backend not in ("auto", "grouped", "per_task", "loop"):
            raise ValueError(
                f"{name}: backend must be 'auto', 'grouped', 'per_task' or 'loop', got {backend!r}"
            )
        if isinstance(task_workers, bool) or int(task_workers) < 1:
            raise ValueError(f"{name}: task_workers must be an int >= 1, got {task_workers!r}")
        self.task_workers = int(task_workers)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.ways = None if ways is None else int(ways)
        self.out_features = None if out_features is None else int(out_features)
        self.inner_lr = float(inner_lr)
        self.steps = int(steps)
        self.test_steps = self.steps if test_steps is None else int(test_steps)
        self.batch_norm: BatchNormMode = batch_norm
        self.backend = backend
        self.encoder = encoder
        width = output_features(encoder, self.in_shape)
        outputs = self.ways if self.ways is not None else self.out_features
        assert outputs is not None
        self.head = nn.Linear(width, outputs)
        self._features, self.backend_used = _features_net(encoder, backend, batch_norm)

    # -- the network as a function of parameters ---------------------------------------------

    def named_theta(self) -> OrderedDict[str, Tensor]:
        """The network's parameters ``theta`` by name (encoder and head, not learned rates)."""
        return OrderedDict(
            (n, p) for n, p in self.named_parameters() if n.startswith(("encoder.", "head."))
        )

    def features(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        stats_rows: int | None = None,
        *,
        twice: bool = False,
    ) -> Tensor:
        """Encoder features ``[T, B, D]`` of ``x [T, B, *in]`` with per-task ``params``."""
        return self._features(params, x, stats_rows, twice=twice)

    @staticmethod
    def apply_head(params: Mapping[str, Tensor], features: Tensor) -> Tensor:
        """The per-task head: ``[T, B, D] -> [T, B, out]`` with ``head.*`` of shape ``[T, ...]``."""
        w, b = params["head.weight"], params["head.bias"]
        return torch.baddbmm(b.unsqueeze(1), features, w.transpose(1, 2))

    def net(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        stats_rows: int | None = None,
        *,
        twice: bool = False,
    ) -> Tensor:
        """Predictions ``[T, B, out]`` of ``x [T, B, *in]`` with per-task ``params``."""
        return self.apply_head(params, self.features(params, x, stats_rows, twice=twice))

    def predict(self, params: Mapping[str, Tensor], support_x: Tensor, query_x: Tensor) -> Tensor:
        """Query predictions with per-task ``params``, batch norm as ``self.batch_norm`` says."""
        if self.batch_norm == "transductive":
            return self.net(params, query_x)
        ns = support_x.shape[1]
        return self.net(params, torch.cat([support_x, query_x], 1), stats_rows=ns)[:, ns:]

    # -- helpers for subclasses ----------------------------------------------------------------

    def check_call(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None
    ) -> Kind:
        """Validate a call; classification calls must have the head's number of ways."""
        name = type(self).__name__
        if torch.is_inference_mode_enabled() and self.current_steps() > 0:
            raise RuntimeError(
                f"{name} adapts to each task by gradient steps, which torch.inference_mode() "
                "forbids; evaluate under torch.no_grad() instead (no graph is kept for a "
                "meta-gradient there either)"
            )
        kind = check_task_batch(support_x, support_y, query_x, ways)
        if kind == "classification":
            if self.ways is None:
                raise ValueError(
                    f"{name} was built for regression (out_features={self.out_features}): "
                    "support_y must hold real targets [T, K, out]"
                )
            if ways is not None and int(ways) != self.ways:
                raise ValueError(
                    f"{name} has a head of {self.ways} outputs (built for {self.ways}-way "
                    f"tasks) but was called with ways={ways}; test it at {self.ways} ways"
                )
        elif self.out_features is None:
            raise ValueError(
                f"{name} was built for {self.ways}-way classification: support_y must hold "
                "integer labels [T, N*K]"
            )
        elif support_y.shape[-1] != self.out_features:
            raise ValueError(
                f"{name} predicts {self.out_features} outputs but support_y has "
                f"{support_y.shape[-1]}"
            )
        if tuple(support_x.shape[2:]) != self.in_shape:
            raise ValueError(
                f"{name} was built for examples of shape {self.in_shape}, got support_x "
                f"{tuple(support_x.shape)}"
            )
        return kind

    def inner_mode(self, first_order: bool) -> Literal["second_order", "first_order", "none"]:
        """The kind of graph the inner loop keeps: none unless training with gradients on."""
        if not (self.training and torch.is_grad_enabled()):
            return "none"
        return "first_order" if first_order else "second_order"

    def precision_caution(self, precision: str) -> str | None:
        """bf16 through several differentiated inner steps: what was measured."""
        if precision != "bf16" or self.steps <= 1:
            return None
        return (
            f"{self.steps} differentiated inner steps: on Conv4 Omniglot the bf16 meta-gradient of "
            "MAML was measured 9% off the fp32 one with 1 inner step but 110% off with 5 "
            "(benchmarks/bench_maml.py, docs/RESULTS.md); compare with an fp32 run before "
            "relying on it, or use train.precision=fp32"
        )

    def resource_caution(self, device_type: str, threads: int) -> str | None:
        """``task_workers`` that cannot help: off the CPU, or more workers than threads."""
        if self.task_workers == 1:
            return None
        if device_type != "cpu":
            return (
                f"task_workers={self.task_workers} only splits CPU work; on {device_type} every "
                "task runs in the calling thread"
            )
        if self.task_workers > threads:
            return (
                f"task_workers={self.task_workers} is more than the {threads} intra-op threads "
                f"torch uses here: each worker gets one thread, so {self.task_workers} threads "
                f"share {threads} cores (task_workers={threads} is the most that can help)"
            )
        return None

    def current_steps(self) -> int:
        """``steps`` in training mode, ``test_steps`` in eval mode."""
        return self.steps if self.training else self.test_steps

    def adapt_tasks(
        self,
        params: Mapping[str, Tensor],
        names: Sequence[str],
        support_x: Tensor,
        support_y: Tensor,
        *,
        lr: LearningRate,
        first_order: bool,
        remat: bool = False,
        net: Callable[..., Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """:func:`~manytask.meta.functional.adapt` with this learner's steps and mode."""
        return adapt(
            net or self.net,
            params,
            names,
            support_x,
            support_y,
            lr=lr,
            steps=self.current_steps(),
            mode=self.inner_mode(first_order),
            remat=remat,
        )

    def over_tasks(
        self,
        compute: Compute,
        params: Mapping[str, Tensor],
        support_x: Tensor,
        support_y: Tensor,
        query_x: Tensor,
    ) -> Tensor:
        """``compute(params, support_x, support_y, query_x)`` over ``task_workers`` threads.

        ``compute`` gets the shared parameters ``{name: [*shape]}`` and a slice of the tasks
        (:func:`~manytask.meta.parallel.over_tasks`); with ``task_workers=1`` it is called once.
        """
        return over_tasks(compute, params, support_x, support_y, query_x, self.task_workers)

    def per_task_theta(self, tasks: int) -> dict[str, Tensor]:
        """``theta`` as per-task rows ``[T, *shape]`` (views: gradients flow back summed)."""
        return per_task(self.named_theta(), tasks)

    def _hyper_repr(self, workers: bool = True) -> str:
        target = (
            f"ways={self.ways}" if self.ways is not None else f"out_features={self.out_features}"
        )
        return (
            f"{target}, inner_lr={self.inner_lr:g}, steps={self.steps}, "
            f"test_steps={self.test_steps}, batch_norm={self.batch_norm!r}, "
            f"backend={self.backend!r} ({self.backend_used})"
            + (f", task_workers={self.task_workers}" if workers else "")
        )
