"""Time one ProtoNet meta-training step, side by side in one process.

Compares, on the same episodes and the same Conv4:

- ``plain``: a hand-written PyTorch ProtoNet step (``torch.cdist`` distances), the baseline;
- ``manytask-fp32``: ``manytask.meta.ProtoNet`` in fp32;
- ``manytask-bf16``: the same under ``torch.autocast(dtype=bfloat16)``, as
  ``train.precision: bf16`` runs it (distances stay fp32).

Methods are timed round-robin (``--repeats`` rounds of ``--steps`` steps each) and the table
reports the median seconds per step and each method's speed relative to ``plain``.

    python benchmarks/bench_protonet_step.py --ways 60 --shots 1 --queries 5 --out step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from manytask.data import EpisodeSampler, load_omniglot, omniglot_split
from manytask.meta import ProtoNet
from manytask.nn import Conv4, init_parameters


def plain_step(encoder: torch.nn.Module, opt: torch.optim.Optimizer, ep) -> float:
    n, k = ep.ways, ep.shots
    sx = ep.support_x[0]
    order = ep.support_y[0].argsort(stable=True)
    z = encoder(torch.cat([sx[order], ep.query_x[0]]))
    protos = z[: n * k].view(n, k, -1).mean(1)
    logits = -(torch.cdist(z[n * k :], protos) ** 2)
    loss = F.cross_entropy(logits, ep.query_y[0])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def manytask_step(learner: ProtoNet, opt: torch.optim.Optimizer, ep, bf16: bool) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = learner(ep.support_x, ep.support_y, ep.query_x)
    loss = F.cross_entropy(logits.float().flatten(0, 1), ep.query_y.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ways", type=int, default=60)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", help="write the measurements as JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    store = omniglot_split(load_omniglot(progress=False), "vinyals", "train")
    sampler = EpisodeSampler(
        store, args.ways, args.shots, args.queries, rotations=(0, 90, 180, 270), seed=0
    )
    episodes = [sampler.sample() for _ in range(args.steps)]

    def make(kind: str) -> Callable[[], None]:
        learner = init_parameters(ProtoNet(Conv4()), 0)
        opt = torch.optim.Adam(learner.parameters(), 1e-3)

        def run() -> None:
            for ep in episodes:
                if kind == "plain":
                    plain_step(learner.encoder, opt, ep)
                else:
                    manytask_step(learner, opt, ep, bf16=kind == "manytask-bf16")

        return run

    methods = {k: make(k) for k in ("plain", "manytask-fp32", "manytask-bf16")}
    for run in methods.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.repeats):
        for name, run in methods.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    shape = f"{args.ways}-way {args.shots}-shot {args.queries}-query"
    print(
        f"ProtoNet training step, Conv4, Omniglot 28x28, {shape}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'method':16s} {'s/step':>8s} {'speed vs plain':>15s}")
    for k, v in med.items():
        print(f"{k:16s} {v:8.3f} {med['plain'] / v:14.2f}x")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "seconds_per_step": times,
                    "median": med,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
