"""Every aggregator's trajectories on the two-task toy problem of CAGrad / Nash-MTL (a PNG).

    python benchmarks/toy_trajectories.py --steps 3000 --lr 0.01 --out toy_trajectories.png

Adam on each aggregator's direction from the papers' five start points; the Pareto set (the
non-dominated points of a 300 x 300 grid) in black, the end points as red stars. Prints each
run's end point and its two losses.
"""

from __future__ import annotations

import argparse

from manytask.mtl.aggregators import (
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    GradDrop,
    GradVac,
    Mean,
    NashMTL,
    PCGrad,
    UPGrad,
)
from manytask.mtl.diagnostics import TOY_STARTS, png, toy_figure, toy_losses, trajectory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--out", default="toy_trajectories.png")
    args = ap.parse_args()
    methods = {
        "Mean": Mean(), "MGDA": MGDA(), "PCGrad": PCGrad(), "GradDrop": GradDrop(),
        "CAGrad (c=0.4)": CAGrad(0.4), "GradVac": GradVac(), "IMTL-G": IMTLG(),
        "Nash-MTL": NashMTL(max_norm=0.0), "Aligned-MTL": AlignedMTL(), "UPGrad": UPGrad(),
    }  # fmt: skip
    paths = {}
    for name, agg in methods.items():
        paths[name] = [trajectory(agg, s, steps=args.steps, lr=args.lr) for s in TOY_STARTS]
        ends = [
            f"({p[-1, 0]:+.2f}, {p[-1, 1]:+.2f}) L=({toy_losses(p[-1])[0]:.2f}, "
            f"{toy_losses(p[-1])[1]:.2f})"
            for p in paths[name]
        ]
        print(f"{name:15s} " + "  ".join(ends))
    with open(args.out, "wb") as f:
        f.write(png(toy_figure(paths), dpi=100))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
