"""How far is an fp32 (or bf16) MAML meta-gradient from the exact one, as inner steps grow?

``bench_maml.py`` checks every implementation against manytask's fp32 meta-gradient. With
several inner steps the implementations disagree by more than rounding (e.g. 2e-2 at 5 steps
of 5-way 5-shot), while the peers agree with each other to the last bit. This script says
whose error that is: it computes the same meta-gradient in float64 (the reference) and
reports each implementation's relative L2 error against it:

- ``manytask fp32`` / ``manytask bf16``: :class:`manytask.meta.MAML` (grouped backend);
- ``per_task fp32`` / ``per_task workers``: ``backend="per_task"``, alone and with
  ``task_workers=2`` (each worker on one intra-op thread);
- ``torch.func loop fp32``: the plain per-task ``torch.func`` loop of ``bench_maml.py``
  (the arithmetic the peers share);
- ``manytask fp64`` against ``torch.func loop fp64``: the two exact computations, which
  must agree (the tests pin the same to ~1e-14 on a small network).

    MANYTASK_DATA=... python benchmarks/maml_precision.py --steps 1 5 --shots 1 5 --tasks 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from bench_maml import Setting, gradient_of, make_batch, manytask_impl, torchfunc_impl


def meta_gradient(name: str, s: Setting, batch, dtype: torch.dtype) -> Tensor:
    cast = tuple(b.to(dtype) if b.is_floating_point() else b for b in batch)
    bf16 = name == "manytask-bf16"
    if name.startswith("manytask-pertask"):
        workers = 2 if name.endswith("workers") else 1
        run, modules = manytask_impl(s, cast, backend="per_task", workers=workers)
    elif name.startswith("manytask"):
        run, modules = manytask_impl(s, cast if not bf16 else batch, bf16=bf16)
    else:
        run, modules = torchfunc_impl(s, cast)
    if dtype == torch.float64:
        for m in modules():
            m.double()
    run()
    return gradient_of(modules).double()


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", nargs="+", type=int, default=[2])
    p.add_argument("--steps", nargs="+", type=int, default=[1, 5])
    p.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the table as JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}; relative L2 error of the meta-gradient vs float64")
    print(f"{'setting':<34} {'manytask fp32':>14} {'per_task fp32':>14} {'per_task workers':>17}"
          f" {'torch.func fp32':>16} {'manytask bf16':>14} {'fp64 vs fp64':>13}")  # fmt: skip
    for order in args.orders:
        for steps in args.steps:
            for shots in args.shots:
                s = Setting(order=order, steps=steps, shots=shots, tasks=args.tasks)
                batch = make_batch(s)
                ref = meta_gradient("torchfunc-loop", s, batch, torch.float64)
                ours64 = meta_gradient("manytask", s, batch, torch.float64)
                row = {
                    "setting": s.label(),
                    "manytask_fp32": rel(meta_gradient("manytask", s, batch, torch.float32), ref),
                    "per_task_fp32": rel(
                        meta_gradient("manytask-pertask", s, batch, torch.float32), ref
                    ),
                    "per_task_workers_fp32": rel(
                        meta_gradient("manytask-pertask-workers", s, batch, torch.float32), ref
                    ),
                    "torchfunc_fp32": rel(
                        meta_gradient("torchfunc-loop", s, batch, torch.float32), ref
                    ),
                    "manytask_bf16": rel(
                        meta_gradient("manytask-bf16", s, batch, torch.float32), ref
                    ),
                    "fp64_vs_fp64": rel(ours64, ref),
                }
                rows.append(row)
                print(f"{row['setting']:<34} {row['manytask_fp32']:>14.2e} "
                      f"{row['per_task_fp32']:>14.2e} {row['per_task_workers_fp32']:>17.2e} "
                      f"{row['torchfunc_fp32']:>16.2e} {row['manytask_bf16']:>14.2e} "
                      f"{row['fp64_vs_fp64']:>13.2e}", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
