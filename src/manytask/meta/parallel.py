"""A meta-batch's tasks split over worker threads, forward and backward (CPU).

On a CPU the per-task work of an optimisation-based learner (a few small convolutions per
task, their gradients, the query pass) parallelises badly inside each operation: with two
cores, two intra-op threads per small op gain far less than 2x. The tasks of a meta-batch are
independent until their query losses are summed, so they can instead be split into
contiguous chunks, one per worker thread, each worker running its chunk with its share of the
intra-op threads. CPU autograd runs a backward pass in the thread that asks for it, so the
backward passes of the chunks run concurrently too.

:func:`over_tasks` does this behind an ``autograd.Function``: its forward pass runs every
chunk in a worker on detached copies of the parameters (building each chunk's graph there,
inner loop included) and returns the predictions; its backward pass back-propagates each
chunk's share of the incoming gradient through that chunk's graph, again in the workers, and
sums the chunks' parameter gradients in chunk order. The result does not depend on thread
timing: every chunk is computed the same way whichever worker runs it, and the sum has a fixed
order. It differs from the one-call computation by the order of that sum and by the
workers' intra-op thread count (kernels on one thread round differently from kernels on two):
2e-7 relative in fp32 at one inner step here, more after several inner steps, which amplify
rounding (docs/RESULTS.md). The tests pin it to the one-call result in float64 to 1e-12.

What the workers see of the caller's thread-local state: grad mode and CPU autocast are set
in each worker as they were in the caller. Only CPU tensors are split; elsewhere
:func:`over_tasks` calls ``compute`` once in the caller's thread.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from manytask.meta._autograd import vjp

__all__ = ["Compute", "chunk_bounds", "in_worker", "over_tasks"]

Compute = Callable[[dict[str, Tensor], Tensor, Tensor, Tensor], Tensor]
"""``compute(params, support_x, support_y, query_x) -> predictions [T, M, ...]`` of a slice of
tasks, ``params`` not per-task (``{name: [*shape]}``)."""

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_LOCAL = threading.local()


def in_worker() -> bool:
    """Whether this thread is running a chunk of tasks for :func:`over_tasks`."""
    return getattr(_LOCAL, "worker", False)


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="manytask-task")
        return _POOLS[workers]


def chunk_bounds(tasks: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` slices of ``tasks`` tasks, as even as possible.

    Example:
        >>> chunk_bounds(7, 3)
        [(0, 3), (3, 5), (5, 7)]
        >>> chunk_bounds(2, 4)
        [(0, 1), (1, 2)]
    """
    n = max(1, min(int(workers), int(tasks)))
    base, extra = divmod(int(tasks), n)
    bounds, start = [], 0
    for i in range(n):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class _State:
    """The caller's thread-local settings, to be put in place in a worker thread."""

    def __init__(self, intra_threads: int) -> None:
        self.grad = torch.is_grad_enabled()
        self.autocast = torch.is_autocast_enabled("cpu")
        self.dtype = torch.get_autocast_dtype("cpu")
        self.intra_threads = intra_threads

    def run(self, fn: Callable[[], Any]) -> Any:
        torch.set_num_threads(self.intra_threads)  # this worker thread's own OpenMP setting
        cast = torch.autocast("cpu", dtype=self.dtype) if self.autocast else nullcontext()
        _LOCAL.worker = True
        try:
            with torch.set_grad_enabled(self.grad), cast:
                return fn()
        finally:
            _LOCAL.worker = False


def _in_workers(jobs: Sequence[Callable[[], Any]], intra_threads: int) -> list[Any]:
    """Run ``jobs`` concurrently (one per worker) with the caller's settings; results in order."""
    state = _State(intra_threads)
    caller_threads = torch.get_num_threads()
    try:
        futures = [_pool(len(jobs)).submit(state.run, job) for job in jobs]
        return [f.result() for f in futures]
    finally:
        # torch.set_num_threads in a worker also changes the default that threads started
        # later begin with; put the caller's back.
        torch.set_num_threads(caller_threads)


class _Chunked(torch.autograd.Function):
    """Forward: each chunk's graph built in a worker. Backward: each chunk's share in a worker."""

    @staticmethod
    def forward(ctx, compute, bounds, names, n_params, intra, grad, *flat):
        params, data = flat[:n_params], flat[n_params:]

        def job(start: int, stop: int) -> tuple[list[Tensor], Tensor]:
            leaves = [p.detach().requires_grad_(p.requires_grad) for p in params]
            sx, sy, qx = (d[start:stop] for d in data)
            with torch.enable_grad() if grad else nullcontext():
                out = compute(dict(zip(names, leaves, strict=True)), sx, sy, qx)
            return leaves, out

        done = _in_workers([functools.partial(job, a, b) for a, b in bounds], intra)
        ctx.chunks = done
        ctx.bounds = bounds
        ctx.intra = intra
        ctx.n_params = n_params
        ctx.n_data = len(data)
        return torch.cat([out.detach() for _, out in done])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        chunks, ctx.chunks = ctx.chunks, None  # the graphs are freed as the workers finish

        jobs = [
            functools.partial(vjp, [out], [grad_out[a:b]], leaves)
            for (leaves, out), (a, b) in zip(chunks, ctx.bounds, strict=True)
        ]
        with torch.enable_grad():
            per_chunk = _in_workers(jobs, ctx.intra)
        total: list[Tensor | None] = []
        for i in range(ctx.n_params):
            parts = [g[i] for g in per_chunk if g[i] is not None]
            acc = None
            for part in parts:  # chunk order: the sum does not depend on thread timing
                acc = part if acc is None else acc + part
            total.append(acc)
        return (None, None, None, None, None, None, *total, *([None] * ctx.n_data))


def over_tasks(
    compute: Compute,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    workers: int,
) -> Tensor:
    """``compute`` over the tasks of a meta-batch, split into ``workers`` chunks run in threads.

    Args:
        compute: the predictions of a slice of tasks from the (shared, not per-task)
            parameters: ``compute(params, support_x[a:b], support_y[a:b], query_x[a:b])``.
            It must treat its tasks independently (per-task batch norm, per-task inner loop).
        params: the tensors ``compute`` differentiates, by name (gradients flow back to them).
        support_x, support_y, query_x: task-major batches ``[T, ...]``.
        workers: the number of chunks and threads; 1 (or a single task, or tensors not on the
            CPU) calls ``compute`` once in this thread. Each worker gets
            ``max(1, torch.get_num_threads() // workers)`` intra-op threads.

    Returns:
        ``compute``'s predictions for all ``T`` tasks, concatenated in task order; differentiable
        with respect to ``params`` (first order: the backward of this call is not itself
        differentiable, which no meta-gradient needs).

    Example:
        >>> w = torch.ones(3, requires_grad=True)
        >>> f = lambda p, sx, sy, qx: qx * p["w"]
        >>> x = torch.rand(4, 2, 3)
        >>> out = over_tasks(f, {"w": w}, x, x, x, workers=2)
        >>> out.sum().backward(); torch.allclose(w.grad, x.sum((0, 1)))
        True
    """
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    tasks = support_x.shape[0]
    on_cpu = all(t.device.type == "cpu" for t in (support_x, query_x, *params.values()))
    if workers == 1 or tasks < 2 or not on_cpu:
        return compute(dict(params), support_x, support_y, query_x)
    bounds = chunk_bounds(tasks, workers)
    intra = max(1, torch.get_num_threads() // len(bounds))
    names = list(params)
    return _Chunked.apply(
        compute, bounds, names, len(names), intra, torch.is_grad_enabled(),
        *params.values(), support_x, support_y, query_x,
    )  # fmt: skip
