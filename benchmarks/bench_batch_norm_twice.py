"""Batch norm differentiated twice: autograd's formula against ``meta/_batch_norm.py``'s.

Second-order MAML differentiates the gradient of every support pass, so each batch norm of
the encoder is differentiated twice. This times that, alone, at the shapes of Conv4 on
Omniglot: the training-mode forward, the gradient with ``create_graph=True``, and the
gradient of a scalar of that gradient with respect to the input, the weight and the
incoming gradient - once with ``F.batch_norm`` (autograd's ``NativeBatchNormBackwardBackward0``),
once with ``manytask.meta._batch_norm.batch_norm_twice`` - round-robin in one process, and
prints the median of each and their ratio, with the relative difference of the results.

    .venv/bin/python benchmarks/bench_batch_norm_twice.py --threads 1 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from manytask.meta._batch_norm import batch_norm_twice

SHAPES = ((25, 64, 28, 28), (25, 64, 14, 14), (5, 64, 28, 28), (75, 64, 7, 7))


def reference(x, w, b, eps):
    return F.batch_norm(x, None, None, w, b, training=True, eps=eps)


def second(fn, x, w, b, gy, cot):
    y = fn(x, w, b, 1e-5)
    first = torch.autograd.grad((y * gy).sum(), [x, w, b], create_graph=True)
    total = sum((f * c).sum() for f, c in zip(first, cot, strict=True))
    return torch.autograd.grad(total, [x, w, gy])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.dtype}")
    head = ("shape", "F.batch_norm ms", "batch_norm_twice ms", "speed")
    print(f"{head[0]:>20}  {head[1]:>15}  {head[2]:>19}  {head[3]:>6}  rel. diff")
    for shape in SHAPES:
        x = (torch.randn(shape, generator=g) * 2 + 1).to(dtype).requires_grad_()
        w = (torch.rand(shape[1], generator=g) + 0.5).requires_grad_()
        b = torch.randn(shape[1], generator=g).requires_grad_()
        gy = torch.randn(shape, generator=g).to(dtype).requires_grad_()
        cot = [torch.randn(shape, generator=g).to(dtype), torch.randn(shape[1], generator=g),
               torch.randn(shape[1], generator=g)]  # fmt: skip
        fns = {"ref": reference, "ours": batch_norm_twice}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():  # warm-up
            second(fn, x, w, b, gy, cot)
        for _ in range(args.repeats):
            for k, fn in fns.items():
                t = time.perf_counter()
                second(fn, x, w, b, gy, cot)
                times[k].append(time.perf_counter() - t)
        ref = second(reference, x, w, b, gy, cot)
        ours = second(batch_norm_twice, x, w, b, gy, cot)
        diff = max(((o.float() - r.float()).norm() / r.float().norm()).item()
                   for o, r in zip(ours, ref, strict=True))  # fmt: skip
        a, o = statistics.median(times["ref"]) * 1e3, statistics.median(times["ours"]) * 1e3
        print(f"{'x'.join(map(str, shape)):>20}  {a:15.2f}  {o:19.2f}  {a / o:5.2f}x  {diff:.1e}")


if __name__ == "__main__":
    main()
