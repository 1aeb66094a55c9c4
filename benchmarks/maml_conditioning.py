"""Whose error is it? A first-order MAML meta-gradient's fp32 error split into its two sources.

``maml_precision.py`` compares whole meta-gradients with float64. With several inner steps the
fp32 implementations land 1e-6 to 1e-3 from float64 in no consistent order, because the
meta-gradient itself is not a smooth function of the adapted parameters at this scale: a
max-pool window whose two largest values are closer than fp32 rounding sends its gradient to
either, and flipping one such window moves the whole meta-gradient by ~1e-4 (relative). This
script measures that directly, for first-order MAML (whose meta-gradient is the query gradient
at the adapted parameters ``phi``, so the split is exact), per-task network, Conv4 with batch
norm, the ``bench_maml.py`` batch:

- ``total``: the fp32 meta-gradient against the float64 one;
- ``trajectory``: the exact (float64) query gradient at the fp32 ``phi`` against the exact one:
  what the inner loop's rounding costs;
- ``query pass``: the fp32 query gradient against the exact one at the same fp32 ``phi``: the
  rounding of the query pass alone;
- ``perturbed``: the exact query gradient at ``phi`` (float64) moved by Gaussian noise of
  ``--size`` times each tensor's mean magnitude, against the exact one: min / median / max
  over ``--perturbations`` draws - how far a meta-gradient moves when ``phi`` moves by about
  fp32 rounding.

Two implementations: ``layers`` (the first block as its layers one at a time: the peers'
arithmetic) and ``stem`` (the first block as one operation, meta/_stem.py; the default).

    MANYTASK_DATA=... python benchmarks/maml_conditioning.py --steps 5 --shots 1 --tasks 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import Tensor

import manytask.meta.functional as functional
from manytask.meta.functional import PerTaskNet, per_task, task_loss

sys.path.insert(0, str(Path(__file__).parent))
from bench_maml import Setting, conv4_with_head, make_batch

Params = dict[str, Tensor]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--perturbations", type=int, default=8)
    p.add_argument("--size", type=float, default=2e-6)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    s = Setting(order=1, steps=a.steps, shots=a.shots, tasks=a.tasks)
    sx, sy, qx, qy = make_batch(s)
    net = conv4_with_head(s.ways)
    stem_applies = functional._stem_applies

    def use(stem: bool) -> None:
        functional._stem_applies = stem_applies if stem else (lambda x, dims: False)

    def adapt(dtype: torch.dtype, stem: bool) -> Params:
        use(stem)
        f = PerTaskNet(net)
        fast = per_task({k: v.detach().to(dtype) for k, v in net.named_parameters()}, a.tasks)
        for _ in range(a.steps):
            fast = {k: v.detach().requires_grad_() for k, v in fast.items()}
            grads = torch.autograd.grad(task_loss(f(fast, sx.to(dtype)), sy), list(fast.values()))
            fast = {k: v - s.inner_lr * g for (k, v), g in zip(fast.items(), grads, strict=True)}
        return {k: v.detach() for k, v in fast.items()}

    def query_grad(phi: Params, dtype: torch.dtype, stem: bool) -> Tensor:
        use(stem)
        fast = {k: v.to(dtype).requires_grad_() for k, v in phi.items()}
        loss = task_loss(PerTaskNet(net)(fast, qx.to(dtype)), qy)
        grads = torch.autograd.grad(loss, list(fast.values()))
        return torch.cat([g.double().sum(0).flatten() for g in grads])

    def rel(x: Tensor, ref: Tensor) -> str:
        return f"{float((x - ref).norm() / ref.norm()):.2e}"

    phi64 = adapt(torch.float64, False)
    exact = query_grad(phi64, torch.float64, False)
    print(f"torch {torch.__version__}; first order, {a.steps} step(s), "
          f"{s.ways}w{s.shots}s{s.queries}q x{a.tasks}; relative L2 errors")  # fmt: skip
    print(f"{'implementation':<16}{'total':>10}{'trajectory':>12}{'query pass':>12}")
    for name, stem in (("layers", False), ("stem", True)):
        phi = adapt(torch.float32, stem)
        got = query_grad(phi, torch.float32, stem)
        at = query_grad(phi, torch.float64, False)
        print(f"{name:<16}{rel(got, exact):>10}{rel(at, exact):>12}{rel(got, at):>12}")
    gen = torch.Generator().manual_seed(1)
    moved = []
    for _ in range(a.perturbations):
        phi = {k: v + a.size * v.abs().mean() * torch.randn(v.shape, generator=gen, dtype=v.dtype)
               for k, v in phi64.items()}  # fmt: skip
        g = query_grad(phi, torch.float64, False)
        moved.append(float((g - exact).norm() / exact.norm()))
    print(f"perturbed phi (x{a.size:g}, {a.perturbations} draws): min {min(moved):.2e}, "
          f"median {statistics.median(moved):.2e}, max {max(moved):.2e}")  # fmt: skip
    use(True)


if __name__ == "__main__":
    main()
