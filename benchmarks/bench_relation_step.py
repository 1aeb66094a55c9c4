"""Time one Relation Network meta-training step, side by side in one process.

Compares, on the same Omniglot episodes and the same weights (the paper's Omniglot networks:
Conv4 maps 64x5x5, relation module of two conv blocks and FC 8 -> 1):

- ``plain``: a hand-written PyTorch step that builds every (query, class) pair by
  concatenating the two feature maps, ``[Q*N, 2C, H, W]``, and runs the whole relation module
  on it (the way the paper's equation, and its authors' code, read);
- ``manytask-fp32``: ``manytask.meta.RelationNet``, which convolves the class and query maps
  once each and adds them per pair (the first convolution is linear in its input);
- ``manytask-bf16``: the same under ``torch.autocast(dtype=bfloat16)``, as
  ``train.precision: bf16`` runs it.

Before timing, the script checks that ``plain`` and ``manytask-fp32`` give the same scores on
the first episode. Methods are timed round-robin (``--repeats`` rounds of ``--steps`` steps)
and the table reports the median seconds per step and the speed relative to ``plain``.

    python benchmarks/bench_relation_step.py --ways 5 --shots 1 --queries 19 --out rel.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from manytask.data import EpisodeSampler, load_omniglot, omniglot_split
from manytask.meta import RelationNet
from manytask.nn import Conv4, init_parameters


def plain_scores(learner: RelationNet, ep) -> torch.Tensor:
    """Scores ``[N*Q, N]`` of one task, every pair concatenated (the baseline)."""
    n, k = ep.ways, ep.shots
    sx, sy, qx = ep.support_x[0], ep.support_y[0], ep.query_x[0]
    maps = learner.encoder(torch.cat([sx, qx]))
    order = sy.argsort(stable=True)
    classes = maps[: n * k][order].view(n, k, *maps.shape[1:]).sum(1)  # [N, C, H, W]
    queries = maps[n * k :]  # [M, C, H, W]
    m = queries.shape[0]
    pairs = torch.cat(
        [classes[None].expand(m, -1, -1, -1, -1), queries[:, None].expand(-1, n, -1, -1, -1)],
        dim=2,
    ).flatten(0, 1)  # [M*N, 2C, H, W]
    g = learner.relation
    z = F.conv2d(pairs, g.conv.weight, g.conv.bias, padding=1)
    z = g.block2(g.rest_of_block1(z))
    return torch.sigmoid(g.fc(z)).view(m, n)


def step(learner: RelationNet, opt: torch.optim.Optimizer, ep, kind: str) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "manytask-bf16"):
        if kind == "plain":
            scores = plain_scores(learner, ep)[None]
        else:
            scores = learner(ep.support_x, ep.support_y, ep.query_x, ways=ep.ways)
    loss = F.mse_loss(scores.float(), F.one_hot(ep.query_y, ep.ways).float())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=19)
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
    encoder = Conv4(pool=(True, True, False, False), padding=(0, 0, 1, 1), flatten=False)
    base = init_parameters(RelationNet(encoder, (1, 28, 28)), 0)

    # Same scores from both computations before anything is timed.
    with torch.no_grad():
        ep = episodes[0]
        ours = base(ep.support_x, ep.support_y, ep.query_x, ways=ep.ways)[0]
        theirs = plain_scores(base, ep)
    max_diff = float((ours - theirs).abs().max())
    assert max_diff < 1e-5, f"plain and manytask scores differ by {max_diff}"

    def make(kind: str) -> Callable[[], None]:
        learner = copy.deepcopy(base)
        opt = torch.optim.Adam(learner.parameters(), 1e-3)

        def run() -> None:
            for ep in episodes:
                step(learner, opt, ep, kind)

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
        f"RelationNet training step, Omniglot 28x28, {shape} "
        f"({args.ways * args.queries * args.ways} pairs), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; max |plain - manytask| score {max_diff:.1e}"
    )
    print(f"{'method':16s} {'s/step':>8s} {'speed vs plain':>15s}")
    for k, v in med.items():
        print(f"{k:16s} {v:8.4f} {med['plain'] / v:14.2f}x")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "seconds_per_step": times,
                    "median": med,
                    "max_score_difference": max_diff,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
