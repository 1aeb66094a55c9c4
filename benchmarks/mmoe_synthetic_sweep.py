"""The MMoE paper's synthetic experiment: test loss against task correlation p (Ma et al. 2018).

Trains the recipes ``mtl/mmoe-synthetic-shared_bottom`` and ``mtl/mmoe-synthetic-mmoe`` for
every ``p`` and seed (fresh data per seed: ``data.seed = seed``), then plots the mean test MSE
over the two tasks with a 95% CI over seeds (Student's t). Runs already finished in ``--root``
are read, not retrained, so ``--plot-only`` redraws from the runs of an earlier sweep.

    python benchmarks/mmoe_synthetic_sweep.py --root runs/syn --steps 1500 --seeds 0 1 2 \\
        --p 0.0 0.5 0.9 1.0 --out docs/mmoe_synthetic.png

The paper (section 3.3, figure 4) finds the shared-bottom model degrading as the correlation
falls and MMoE much less.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from manytask.config import load_config
from manytask.recipes import recipe_path
from manytask.train import train
from manytask.train.compare import seed_ci95
from manytask.train.report import _figure, figure_png

MODELS = {"shared_bottom": "Shared-Bottom", "mmoe": "MMoE"}


def run_dir(root: Path, model: str, p: float, seed: int) -> Path:
    return root / f"syn-{model}-p{p}-s{seed}"


def mean_test_mse(run: Path) -> float:
    results = json.loads((run / "results.json").read_text())
    return float(results["test"]["summary"]["mse"]["mean"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("runs/syn"))
    ap.add_argument("--p", type=float, nargs="+", default=[0.0, 0.5, 0.9, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=Path("mmoe_synthetic.png"))
    ap.add_argument("--plot-only", action="store_true", help="read finished runs, train none")
    args = ap.parse_args()
    table: dict[str, list[tuple[float, float, float, int]]] = {m: [] for m in MODELS}
    per_seed: dict[tuple[str, float], dict[int, float]] = {}
    for model in MODELS:
        for p in args.p:
            values = per_seed.setdefault((model, p), {})
            for seed in args.seeds:
                out = run_dir(args.root, model, p, seed)
                if not (out / "results.json").exists():
                    if args.plot_only:
                        continue
                    cfg = load_config(
                        recipe_path(f"mtl/mmoe-synthetic-{model}"),
                        [f"data.p={p}", f"seed={seed}", f"data.seed={seed}",
                         f"train.steps={args.steps}", "train.val_every=0", "quiet=true"],
                    )  # fmt: skip
                    train(cfg, out)
                values[seed] = mean_test_mse(out)
            if values:
                mean, ci = seed_ci95(list(values.values()))
                table[model].append((p, mean, ci, len(values)))
    # Each seed draws its own data (data.seed = seed), whose difficulty varies a lot, so the
    # models are compared pairwise on the same data: the ratio MMoE / Shared-Bottom per seed.
    ratios: list[tuple[float, float, float, int]] = []
    print("| p | Shared-Bottom test MSE | MMoE test MSE | MMoE / Shared-Bottom, paired |")
    print("| ---: | ---: | ---: | ---: |")
    for p in args.p:
        sb, mm = per_seed.get(("shared_bottom", p), {}), per_seed.get(("mmoe", p), {})
        cells = []
        for m in MODELS:
            row = [r for r in table[m] if r[0] == p]
            cells.append(f"{row[0][1]:.4f} ± {row[0][2]:.4f} ({row[0][3]})" if row else "-")
        paired = [mm[s] / sb[s] for s in sorted(set(sb) & set(mm))]
        if paired:
            mean, ci = seed_ci95(paired)
            ratios.append((p, mean, ci, len(paired)))
            cells.append(f"{mean:.3f} ± {ci:.3f} ({len(paired)})")
        else:
            cells.append("-")
        print(f"| {p} | " + " | ".join(cells) + " |")
    fig = _figure(10, 3.8)
    ax, ax_ratio = fig.subplots(1, 2)
    for m, rows in table.items():
        if rows:
            ps, means, cis, _ = zip(*rows, strict=True)
            ax.errorbar(ps, means, yerr=cis, marker="o", capsize=3, label=MODELS[m])
    ax.set_xlabel("task correlation p")
    ax.set_ylabel("test MSE, mean of the two tasks")
    ax.set_title("95% CI over seeds (each seed its own data)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    if ratios:
        ps, means, cis, _ = zip(*ratios, strict=True)
        ax_ratio.errorbar(ps, means, yerr=cis, marker="o", capsize=3, color="tab:purple")
        ax_ratio.axhline(1.0, color="black", lw=1, ls="--")
    ax_ratio.set_xlabel("task correlation p")
    ax_ratio.set_ylabel("MMoE MSE / Shared-Bottom MSE")
    ax_ratio.set_title("paired on the same data (< 1: MMoE better)", fontsize=9)
    ax_ratio.grid(alpha=0.3)
    fig.tight_layout()
    args.out.write_bytes(figure_png(fig))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
