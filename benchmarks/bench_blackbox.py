"""Tasks per second of black-box learners: one batched call against a per-task loop.

A black-box learner reads each task's support set with a network, so a meta-batch of ``T``
tasks can go through it as one batch of tensor operations, or task by task. For every learner
named (any name in ``manytask.registry.LEARNERS``; default: the black-box ones, ``cnp``,
``snail``, ``mann``, those not registered are skipped with a note), the same model, with the
same weights, on the same Omniglot meta-batches (5-way 1-shot, 32 tasks, ``--queries`` per
class), is timed for one forward and backward pass:

- ``batched``: ``learner(support_x, support_y, query_x)`` on all ``T`` tasks at once;
- ``loop``: the learner called on one task at a time, the ``T`` predictions concatenated, one
  loss and one backward (the per-task loop a user would write);
- ``sequences`` (learners with ``steps``/``forward_sequence``, i.e. SNAIL): the paper's
  protocol, one ``N*K + 1``-step sequence per query (``T*N*Q`` sequences in one batch), the
  exact but costly alternative to batching the queries at the last step.

Before timing, the batched and looped predictions are compared in eval mode (they must agree:
tasks do not leak into each other). Methods are timed round-robin, ``--repeats`` rounds of
``--steps`` meta-batches, and the table reports the median tasks per second and the ratio
``batched / loop``.

    python benchmarks/bench_blackbox.py --repeats 5 --out results/bench_blackbox.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from manytask.data import EpisodeSampler, load_omniglot, omniglot_split
from manytask.registry import LEARNERS
from manytask.train.build import build_learner

BLACK_BOX = ("cnp", "snail", "mann")


def loss_of(pred: Tensor, query_y: Tensor) -> Tensor:
    return F.cross_entropy(pred.float().flatten(0, 1), query_y.flatten())


def batched(learner: Any, ep: Any) -> Tensor:
    out: Tensor = learner(ep.support_x, ep.support_y, ep.query_x, ways=ep.ways)
    return out


def looped(learner: Any, ep: Any) -> Tensor:
    preds = [
        learner(
            ep.support_x[t : t + 1], ep.support_y[t : t + 1], ep.query_x[t : t + 1], ways=ep.ways
        )
        for t in range(ep.tasks)
    ]
    return torch.cat(preds)


def sequences(learner: Any, ep: Any) -> Tensor:
    """One (support + one query) sequence per query, all in one batch, last step read."""
    support, queries = learner.steps(ep.support_x, ep.support_y, ep.query_x)
    t, m = queries.shape[:2]
    seq = torch.cat(
        [support.unsqueeze(1).expand(-1, m, -1, -1), queries.unsqueeze(2)], dim=2
    ).flatten(0, 1)  # [T*M, N*K + 1, C]
    out: Tensor = learner.forward_sequence(seq)[:, -1]
    return out.view(t, m, -1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--learners", nargs="+", default=list(BLACK_BOX))
    p.add_argument("--encoder", default="conv4", help="encoder of learners that take one")
    p.add_argument("--hidden", type=int, default=64, help="conv4's width")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=1, help="query examples per class")
    p.add_argument("--tasks", type=int, default=32, help="tasks per meta-batch")
    p.add_argument("--steps", type=int, default=3, help="meta-batches per timed round")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--out", help="write the measurements as JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    store = omniglot_split(load_omniglot(progress=False), "vinyals", "train")
    sampler = EpisodeSampler(
        store, args.ways, args.shots, args.queries, args.tasks, rotations=(0, 90, 180, 270), seed=0
    )
    episodes = [sampler.sample() for _ in range(args.steps)]
    in_shape = tuple(episodes[0].support_x.shape[2:])

    results: dict[str, Any] = {}
    for name in args.learners:
        if name not in LEARNERS:
            print(f"[skip] {name}: not registered (registered: {', '.join(LEARNERS.names())})")
            continue
        takes = LEARNERS.takes(name, "encoder")
        encoder_args = {"hidden": args.hidden} if args.encoder == "conv4" else {}
        learner = build_learner(
            name, {}, args.encoder if takes else None, encoder_args if takes else None,
            in_shape=in_shape, ways=args.ways, seed=0,
        )  # fmt: skip
        methods: dict[str, Callable[[Any, Any], Tensor]] = {"batched": batched, "loop": looped}
        if hasattr(learner, "forward_sequence") and hasattr(learner, "steps"):
            methods["sequences"] = sequences

        # The same predictions, whichever way they are computed (eval mode: no batch statistics).
        learner.eval()
        with torch.no_grad():
            ref = batched(learner, episodes[0])
            gaps = {
                m: float((f(learner, episodes[0]) - ref).abs().max()) for m, f in methods.items()
            }
        learner.train()
        assert all(g < 1e-3 for g in gaps.values()), f"{name}: predictions differ {gaps}"

        def timed(f: Callable[[Any, Any], Tensor], learner: Any = learner) -> float:
            t0 = time.perf_counter()
            for ep in episodes:
                learner.zero_grad(set_to_none=True)
                loss_of(f(learner, ep), ep.query_y).backward()
            return args.steps * args.tasks / (time.perf_counter() - t0)

        for f in methods.values():  # warm-up
            timed(f)
        rates: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for m, f in methods.items():
                rates[m].append(timed(f))
        med = {m: statistics.median(v) for m, v in rates.items()}
        results[name] = {
            "tasks_per_second": rates,
            "median": med,
            "batched_over_loop": med["batched"] / med["loop"],
            "max_abs_gap_eval": gaps,
            "parameters": sum(p.numel() for p in learner.parameters()),
        }
        if "sequences" in med:
            results[name]["batched_over_sequences"] = med["batched"] / med["sequences"]

    shape = f"{args.ways}-way {args.shots}-shot, {args.queries} query/class, {args.tasks} tasks"
    encoder = f"conv4({args.hidden})" if args.encoder == "conv4" else args.encoder
    print(
        f"Black-box learners, forward + backward, Omniglot 28x28 {shape}, encoder {encoder}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'learner':10s} {'method':10s} {'tasks/s':>9s} {'min':>9s} {'max':>9s} {'batched x':>10s}"
    )
    for name, r in results.items():
        for m, v in r["tasks_per_second"].items():
            ratio = r["median"]["batched"] / r["median"][m]
            print(
                f"{name:10s} {m:10s} {r['median'][m]:9.1f} {min(v):9.1f} {max(v):9.1f} "
                f"{ratio:9.2f}x"
            )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "results": results,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "command": " ".join(sys.argv),
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
