"""What could make an fp32 MAML meta-gradient faster than the peers' per-task loops on a CPU?

The peers (learn2learn, higher, torchopt, a torch.func loop) all run the same NCHW kernels one
task at a time, and `bench_maml.py` finds manytask's fp32 paths no faster than they are
(docs/RESULTS.md). This script measures, side by side in one process and on the same batch,
the levers left once the layout is settled, each against the peers' arithmetic written out
as a plain per-task loop (``eager``: conv, batch norm in batch-statistics mode, ReLU, 2x2
max-pool, four times, then a linear head; ``torch.autograd.grad`` through the inner steps):

- ``pool-first``: max-pool before ReLU. The two commute exactly (ReLU is monotone and both
  are exact), so values and gradients are bit-for-bit those of ``eager``, and ReLU and its
  backward run on a quarter of the values.
- ``compiled``: the same loss function through ``torch.compile`` (Inductor's C++ kernels fuse
  batch norm, ReLU and pooling around the oneDNN convolutions). Compiled graphs cannot be
  differentiated twice, so with second order only the query pass is compiled and the inner
  steps stay eager. The one-off compile time is printed, not timed.
- ``task-workers`` (with ``--threads`` of 2 or more): the tasks split over that many Python
  threads, each with one intra-op thread, against ``eager`` using that many intra-op threads
  (the peers' way of using several cores). CPU autograd runs each backward in the thread that
  calls it, so the workers run concurrently; their gradients are summed in a fixed order.

Each implementation's meta-gradient is compared with ``eager``'s (relative L2 error) before
timing; round-robin over ``--repeats`` rounds after a warm-up, median seconds, and each one's
speed as ``eager``'s median over its own.

    python benchmarks/maml_levers.py --orders 2 1 --tasks 8 --threads 2   # embedded Omniglot
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_maml import Setting, conv4_with_head, make_batch

Params = dict[str, Tensor]


def forward(p: Params, x: Tensor, pool_first: bool) -> Tensor:
    """Conv4 (batch statistics) and the linear head, as functions of the parameter dict."""
    for i in range(4):
        pre = f"0.blocks.{i}."
        x = F.conv2d(x, p[pre + "0.weight"], p[pre + "0.bias"], padding=1)
        x = F.batch_norm(x, None, None, p[pre + "1.weight"], p[pre + "1.bias"], training=True)
        x = F.relu(F.max_pool2d(x, 2)) if pool_first else F.max_pool2d(F.relu(x), 2)
    return F.linear(x.flatten(1), p["1.weight"], p["1.bias"])


def task_gradient(
    s: Setting, theta: Params, batch, t: int, loss: Callable, query_loss: Callable
) -> tuple[Tensor, ...]:
    """One task's share of the meta-gradient: inner steps on its support set, query loss / T."""
    sx, sy, qx, qy = batch
    p = theta
    for _ in range(s.steps):
        g = torch.autograd.grad(loss(p, sx[t], sy[t]), list(p.values()),
                                create_graph=s.order == 2)  # fmt: skip
        p = {k: v - s.inner_lr * gk for (k, v), gk in zip(p.items(), g, strict=True)}
    return torch.autograd.grad(query_loss(p, qx[t], qy[t]) / s.tasks, list(theta.values()))


def summed(grads: list[tuple[Tensor, ...]]) -> Tensor:
    return torch.cat([sum(g[i] for g in grads).flatten() for i in range(len(grads[0]))])


def build(s: Setting, batch, threads: int) -> tuple[dict[str, Callable[[], Tensor]], dict]:
    theta = dict(conv4_with_head(s.ways).named_parameters())

    def loss_of(pool_first: bool) -> Callable:
        return lambda p, x, y: F.cross_entropy(forward(p, x, pool_first), y)

    plain, first = loss_of(False), loss_of(True)
    compiled = torch.compile(plain, dynamic=False)
    inner_compiled = compiled if s.order == 1 else plain

    def loop(loss: Callable, query: Callable) -> Callable[[], Tensor]:
        return lambda: summed([task_gradient(s, theta, batch, t, loss, query)
                               for t in range(s.tasks)])  # fmt: skip

    impls = {
        "eager": loop(plain, plain),
        "pool-first": loop(first, first),
        "compiled": loop(inner_compiled, compiled),
    }
    if threads > 1:
        pool = ThreadPoolExecutor(threads)

        def worker(tasks: range) -> list[tuple[Tensor, ...]]:
            torch.set_num_threads(1)  # this thread's own OpenMP setting
            return [task_gradient(s, theta, batch, t, plain, plain) for t in tasks]

        def workers() -> Tensor:
            futures = [pool.submit(worker, range(w, s.tasks, threads)) for w in range(threads)]
            return summed([g for f in futures for g in f.result()])

        impls["task-workers"] = workers
    t0 = time.perf_counter()
    impls["compiled"]()
    return impls, {"compile_s": time.perf_counter() - t0}


def compare(s: Setting, threads: int, repeats: int) -> dict:
    batch = make_batch(s)
    impls, info = build(s, batch, threads)
    ref = impls["eager"]()
    errors = {k: float((f() - ref).norm() / ref.norm()) for k, f in impls.items()}
    times: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(repeats):
        for k, f in impls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"setting": s.label(), "threads": threads, **info, "error": errors, "median_s": med,
            "speed": {k: med["eager"] / v for k, v in med.items()}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, nargs="+", default=[2, 1], choices=[1, 2])
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for order in args.orders:
        s = Setting(order=order, steps=args.steps, shots=args.shots, tasks=args.tasks)
        r = compare(s, args.threads, args.repeats)
        head = f"{r['setting']}, {args.threads} thread(s)"
        print(f"\n{head}; compile {r['compile_s']:.0f} s (not timed)")
        for k in r["median_s"]:
            print(f"  {k:13s} {r['median_s'][k]:7.3f} s  {r['speed'][k]:5.2f}x eager  "
                  f"error vs eager {r['error'][k]:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
