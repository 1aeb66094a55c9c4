"""Time and peak memory of one multi-task training step: manytask vs LibMTL vs torchjd.

One step = forward pass of every task's mini-batch, per-task gradients, aggregation, ``.grad``,
optimiser step. Side by side in one process, round-robin, on the same data and the same
initial weights:

- ``ew``: equal weighting, ``sum_i L_i`` and one backward (the baseline of every ratio);
- ``manytask:<method>``: the registered method (:mod:`manytask.mtl.gradient_methods`), forward
  pass inside ``method.forward_context`` (the one-backward Jacobian when it applies);
- ``libmtl:<Weighting>``: LibMTL's weighting class mixed with its HPS architecture the way its
  ``Trainer._prepare_model`` does, on the CPU, each task's batch through the encoder
  separately (``multi_input``, as its trainer runs it) or one shared batch;
- ``torchjd:<Aggregator>``: ``torchjd.autojac.mtl_backward`` on the trunk's features, then
  ``jac_to_grad`` with the aggregator.

Regimes: ``separate`` (each task its own 64 examples; multi-task classification) and ``shared``
(one batch of 64 examples, K binary losses; multi-label). Trunks: ``mlp`` (784-256-256 ReLU),
``conv4`` (manytask's Conv4, 64 filters, batch norm: its batch norm couples the
concatenated batch, so manytask takes the exact general path there) and ``conv4-group`` (the
same with group norm, ``Conv4(norm="group")``: per-example, so the one-backward path).

Before timing, the update directions are compared on the same Jacobian: our aggregator vs
torchjd's on the ``J`` we compute (max relative difference), and the ``.grad`` of one
LibMTL step vs ours from the same weights and batch (cosine similarity; LibMTL's solvers are
approximate and some of its methods differ by definition, e.g. its IMTL also learns loss scales).

Peak memory: each (implementation, method) runs in a fresh subprocess; the figure is the rise
of the peak resident set size (VmHWM, reset after set-up and one warm-up step) over the
resident size before two measured steps.

    PYTHONPATH=src:/work/peers-src/LibMTL /work/peers-venv/bin/python \\
        benchmarks/bench_mtl_step.py --tasks 2 10 40 --out results/bench_mtl_step.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from manytask.mtl import StepInfo
from manytask.nn.backbones import MLP
from manytask.nn.conditioning import MultiHead
from manytask.nn.conv4 import Conv4
from manytask.registry import MTL_METHODS

GRADIENT_METHODS = [
    "mean", "mgda", "mgda_ub", "pcgrad", "graddrop", "cagrad", "gradvac", "imtl_g",
    "nash_mtl", "aligned_mtl", "upgrad",
]  # fmt: skip
WEIGHTINGS = ["uncertainty", "dwa", "rlw", "famo", "gradnorm"]
# ours -> (LibMTL weighting, its weight_args), torchjd aggregator factory (K -> aggregator)
LIBMTL = {
    "mean": ("EW", {}),
    "mgda": ("MGDA", {"mgda_gn": "none"}),
    "pcgrad": ("PCGrad", {}),
    "cagrad": ("CAGrad", {"calpha": 0.4, "rescale": 1}),
    "gradvac": ("GradVac", {"GradVac_beta": 0.5, "GradVac_group_type": 0}),
    "imtl_g": ("IMTL", {}),
    "nash_mtl": ("Nash_MTL", {"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0}),
    "aligned_mtl": ("Aligned_MTL", {}),
    "upgrad": ("UPGrad", {"UPGrad_norm_eps": 1e-4, "UPGrad_reg_eps": 1e-4}),
}
TORCHJD: dict[str, Callable[[Any, int], Any]] = {
    "mean": lambda a, k: a.Mean(),
    "mgda": lambda a, k: a.MGDA(),
    "pcgrad": lambda a, k: a.PCGrad(),
    "graddrop": lambda a, k: a.GradDrop(),
    "cagrad": lambda a, k: a.CAGrad(c=0.4),
    "gradvac": lambda a, k: a.GradVac(beta=0.5),
    "imtl_g": lambda a, k: a.IMTLG(),
    "nash_mtl": lambda a, k: a.NashMTL(
        n_tasks=k, max_norm=1.0, update_weights_every=1, optim_niter=20
    ),
    "aligned_mtl": lambda a, k: a.AlignedMTL(),
    "upgrad": lambda a, k: a.UPGrad(),
}


# -- problem ------------------------------------------------------------------------------


def trunk_factory(trunk: str) -> Callable[[], nn.Module]:
    if trunk == "mlp":
        return partial(MLP, 784, hidden=(256, 256))
    if trunk == "conv4-group":
        return partial(Conv4, 1, 64, norm="group")
    return partial(Conv4, 1, 64)


def make_problem(trunk: str, k: int, regime: str, n: int, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    outs = 10 if regime == "separate" else 1
    torch.manual_seed(seed)
    model = MultiHead(trunk_factory(trunk), (1, 28, 28), (outs,) * k)
    if regime == "separate":
        xs = [torch.rand(n, 1, 28, 28, generator=g) for _ in range(k)]
        ys = [torch.randint(0, 10, (n,), generator=g) for _ in range(k)]
    else:
        x = torch.rand(n, 1, 28, 28, generator=g)
        xs = [x] * k
        ys = [torch.randint(0, 2, (n,), generator=g).float() for _ in range(k)]
    return {"model": model, "xs": xs, "ys": ys, "regime": regime, "k": k}


def loss_list(outs: list[torch.Tensor], ys: list[torch.Tensor], regime: str) -> list[torch.Tensor]:
    if regime == "separate":
        return [F.cross_entropy(o, y) for o, y in zip(outs, ys, strict=True)]
    return [F.binary_cross_entropy_with_logits(o[:, 0], y) for o, y in zip(outs, ys, strict=True)]


def task_losses(outs: list[torch.Tensor], ys: list[torch.Tensor], regime: str) -> torch.Tensor:
    return torch.stack(loss_list(outs, ys, regime))


# -- implementations: each returns a step() closure ----------------------------------------


def ew_step(p: dict[str, Any]) -> Callable[[], None]:
    model = copy.deepcopy(p["model"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    tasks = list(range(p["k"]))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        losses = task_losses(model.forward_tasks(p["xs"], tasks), p["ys"], p["regime"])
        losses.sum().backward()
        opt.step()

    return step


def manytask_step(p: dict[str, Any], name: str) -> Callable[[], None]:
    model = copy.deepcopy(p["model"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    k = p["k"]
    tasks = list(range(k))
    method = MTL_METHODS.get(name)()
    state = {"s": method.init(k), "step": 0}
    segments = None if p["regime"] == "shared" else [x.shape[0] for x in p["xs"]]
    context = getattr(method, "forward_context", None)

    def step() -> None:
        info = StepInfo.all_tasks(k, state["step"])
        opt.zero_grad(set_to_none=True)
        if context is not None:
            with context(model, segments):
                losses = task_losses(model.forward_tasks(p["xs"], tasks), p["ys"], p["regime"])
        else:
            losses = task_losses(model.forward_tasks(p["xs"], tasks), p["ys"], p["regime"])
        _, state["s"] = method.backward(losses, model, state["s"], info)
        opt.step()
        if method.needs_losses_after_step:
            with torch.no_grad():
                after = task_losses(model.forward_tasks(p["xs"], tasks), p["ys"], p["regime"])
            state["s"] = method.after_step(after, state["s"], info)
        state["step"] += 1

    return step


def libmtl_model(p: dict[str, Any], weighting: str) -> Any:
    from LibMTL import architecture as arch_mod
    from LibMTL import weighting as weight_mod

    src = p["model"]
    k = p["k"]
    names = [f"t{i}" for i in range(k)]
    trunk = copy.deepcopy(src.trunk)
    decoders = nn.ModuleDict({names[i]: copy.deepcopy(src.heads.towers[i]) for i in range(k)})

    class MTLmodel(arch_mod.HPS, getattr(weight_mod, weighting)):  # as Trainer._prepare_model
        def __init__(self) -> None:
            super().__init__(
                names, lambda: trunk, decoders, False, p["regime"] == "separate",
                torch.device("cpu"),
            )  # fmt: skip
            self.init_param()

    model = MTLmodel()
    model.epoch, model.epochs = 0, 1
    return model, names


def libmtl_step(p: dict[str, Any], name: str) -> Callable[[], None]:
    weighting, wargs = LIBMTL[name]
    model, names = libmtl_model(p, weighting)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        if p["regime"] == "separate":  # Trainer: each task's batch through the model
            outs = [model(x, t)[t] for x, t in zip(p["xs"], names, strict=True)]
        else:
            preds = model(p["xs"][0])
            outs = [preds[t] for t in names]
        losses = task_losses(outs, p["ys"], p["regime"])
        opt.zero_grad(set_to_none=False)
        model.backward(losses, **wargs)
        opt.step()

    return step


def torchjd_step(p: dict[str, Any], name: str) -> Callable[[], None]:
    import torchjd.aggregation as agg_mod
    from torchjd.autojac import jac_to_grad, mtl_backward

    model = copy.deepcopy(p["model"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    k = p["k"]
    aggregator = TORCHJD[name](agg_mod, k)
    shared = list(model.shared_parameters())
    heads = [list(model.task_parameters(t)) for t in range(k)]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if p["regime"] == "separate":
            z = model.trunk(torch.cat(p["xs"]))
            n = p["xs"][0].shape[0]
            outs = [model.heads(z[i * n : (i + 1) * n], i) for i in range(k)]
        else:
            z = model.trunk(p["xs"][0])
            outs = [model.heads(z, i) for i in range(k)]
        losses = loss_list(outs, p["ys"], p["regime"])  # torchjd differentiates each scalar
        mtl_backward(losses, features=z, tasks_params=heads, shared_params=shared)
        jac_to_grad(shared, aggregator)
        opt.step()

    return step


def build(impl: str, p: dict[str, Any]) -> Callable[[], None]:
    kind, _, name = impl.partition(":")
    if kind == "ew":
        return ew_step(p)
    if kind == "manytask":
        return manytask_step(p, name)
    if kind == "libmtl":
        return libmtl_step(p, name)
    return torchjd_step(p, name)


# -- direction checks ------------------------------------------------------------------------


def check_directions(p: dict[str, Any], names: list[str], peers: set[str]) -> dict[str, Any]:
    from manytask.mtl.gradient_methods import GradientMethod
    from manytask.mtl.jacobian import TaskCapture

    out: dict[str, Any] = {}
    k = p["k"]
    tasks = list(range(k))
    model = copy.deepcopy(p["model"])
    shared = list(model.shared_parameters())
    capture = TaskCapture(model, shared)
    segments = None if p["regime"] == "shared" else [x.shape[0] for x in p["xs"]]
    with capture:
        losses = task_losses(model.forward_tasks(p["xs"], tasks), p["ys"], p["regime"])
    jac, _ = capture.jacobian(losses, segments)
    out["jacobian_path"] = capture.last_path
    for name in names:
        method = MTL_METHODS.get(name)()
        if not isinstance(method, GradientMethod) or name == "mgda_ub":
            continue
        gen = torch.Generator().manual_seed(0)
        ours = method.aggregator(jac, generator=gen)
        row: dict[str, Any] = {}
        if "torchjd" in peers and name in TORCHJD:
            import torchjd.aggregation as agg_mod

            torch.manual_seed(0)
            theirs = TORCHJD[name](agg_mod, k)(jac)
            if name == "aligned_mtl":
                theirs = theirs * k  # torchjd's preference vector is the mean, ours the sum
            if name == "cagrad":
                theirs = theirs / (1 + 0.4**2)  # torchjd does not rescale
            row["torchjd_rel_diff"] = float((ours - theirs).norm() / theirs.norm().clamp_min(1e-30))
        if "libmtl" in peers and name in LIBMTL:
            torch.manual_seed(0)
            try:
                lm = _libmtl_grad(p, name)
                row["libmtl_cosine"] = float(F.cosine_similarity(ours, lm, dim=0))
            except Exception as e:  # e.g. LibMTL's Aligned_MTL calls the removed torch.symeig
                row["libmtl_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        out[name] = row
    return out


def _libmtl_grad(p: dict[str, Any], name: str) -> torch.Tensor:
    weighting, wargs = LIBMTL[name]
    model, names = libmtl_model(p, weighting)
    if p["regime"] == "separate":
        outs = [model(x, t)[t] for x, t in zip(p["xs"], names, strict=True)]
    else:
        preds = model(p["xs"][0])
        outs = [preds[t] for t in names]
    losses = task_losses(outs, p["ys"], p["regime"])
    model.zero_grad(set_to_none=False)
    model.backward(losses, **wargs)
    return torch.cat([q.grad.flatten() for q in model.encoder.parameters()])


# -- memory (subprocess) ---------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(args: argparse.Namespace) -> None:
    """Peak RSS rise of two steps over the RSS after set-up and one warm-up step (so torch's
    lazy initialisation is not counted); the peak is reset through /proc/self/clear_refs."""
    import gc

    p = make_problem(args.trunk, args.tasks[0], args.regime, args.examples)
    step = build(args.memory_child, p)
    step()
    gc.collect()
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    for _ in range(2):
        step()
    peak = _status_kb("VmHWM")
    print(json.dumps({"peak_rise_mb": max(peak - base, 0) / 1024}))


def measure_memory(args: argparse.Namespace, impl: str, k: int) -> float | None:
    cmd = [
        sys.executable, __file__, "--memory-child", impl, "--tasks", str(k), "--trunk",
        args.trunk, "--regime", args.regime, "--examples", str(args.examples), "--threads",
        str(args.threads),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        print(f"  memory of {impl} failed: {res.stderr.strip().splitlines()[-1:]}")
        return None
    return float(json.loads(res.stdout.strip().splitlines()[-1])["peak_rise_mb"])


# -- main ----------------------------------------------------------------------------------


def available_peers(wanted: list[str]) -> set[str]:
    out = set()
    for peer, module in (("libmtl", "LibMTL"), ("torchjd", "torchjd.autojac")):
        if peer not in wanted:
            continue
        try:
            __import__(module)
            out.add(peer)
        except Exception as e:  # a peer that does not import is skipped, with the reason
            print(f"note: {peer} skipped ({type(e).__name__}: {e})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trunk", choices=["mlp", "conv4", "conv4-group"], default="mlp")
    ap.add_argument("--regime", choices=["separate", "shared"], default="separate")
    ap.add_argument("--tasks", type=int, nargs="+", default=[2, 10, 40])
    ap.add_argument("--examples", type=int, default=64, help="examples per task (or shared)")
    ap.add_argument("--methods", nargs="+", default=GRADIENT_METHODS + WEIGHTINGS)
    ap.add_argument("--peers", nargs="*", default=["libmtl", "torchjd"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--repeats", type=int, default=3, help="round-robin rounds (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", nargs="*", default=None, help="implementations to measure")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    peers = available_peers(args.peers)
    report: dict[str, Any] = {
        "command": " ".join(sys.argv), "torch": torch.__version__, "threads": args.threads,
        "trunk": args.trunk, "regime": args.regime, "examples": args.examples, "results": {},
    }  # fmt: skip
    for k in args.tasks:
        p = make_problem(args.trunk, k, args.regime, args.examples)
        impls = ["ew"] + [f"manytask:{m}" for m in args.methods]
        impls += [f"libmtl:{m}" for m in args.methods if "libmtl" in peers and m in LIBMTL]
        impls += [f"torchjd:{m}" for m in args.methods if "torchjd" in peers and m in TORCHJD]
        steps = {}
        for impl in impls:
            try:
                steps[impl] = build(impl, p)
                steps[impl]()  # warm-up (and a check that it runs)
            except Exception as e:
                print(f"  {impl} skipped: {type(e).__name__}: {e}")
                steps.pop(impl, None)
        times: dict[str, list[float]] = {impl: [] for impl in steps}
        for _ in range(args.repeats):
            for impl, step in steps.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[impl].append((time.perf_counter() - t) / args.steps)
        med = {impl: statistics.median(ts) for impl, ts in times.items()}
        base = med["ew"]
        checks = check_directions(p, args.methods, peers)
        rows = {}
        for impl, t in med.items():
            rows[impl] = {"ms": 1000 * t, "min_ms": 1000 * min(times[impl]),
                          "max_ms": 1000 * max(times[impl]), "x_ew": t / base}  # fmt: skip
        for m in args.methods:
            mine = med.get(f"manytask:{m}")
            for peer in ("libmtl", "torchjd"):
                theirs = med.get(f"{peer}:{m}")
                if mine and theirs:
                    rows[f"manytask:{m}"][f"speedup_vs_{peer}"] = theirs / mine
        if args.memory is not None:
            todo = args.memory or ["ew", "manytask:mgda", "torchjd:mgda", "libmtl:mgda"]
            for impl in todo:
                if impl in steps:
                    rows[impl]["peak_mb"] = measure_memory(args, impl, k)
        report["results"][str(k)] = {"rows": rows, "checks": checks}
        path = checks["jacobian_path"]
        print(f"\n{args.trunk} trunk, {args.regime} batches, K = {k} "
              f"(Jacobian path: {path}), median of {args.repeats} rounds")  # fmt: skip
        print(f"{'implementation':28s} {'ms/step':>9s} {'x EW':>6s} {'vs LibMTL':>9s} "
              f"{'vs torchjd':>10s} {'peak MB':>8s}")  # fmt: skip
        for impl, r in rows.items():
            vl = r.get("speedup_vs_libmtl")
            vt = r.get("speedup_vs_torchjd")
            mb = r.get("peak_mb")
            print(f"{impl:28s} {r['ms']:9.1f} {r['x_ew']:6.2f} "
                  f"{'' if vl is None else f'{vl:8.1f}x':>9s} "
                  f"{'' if vt is None else f'{vt:9.1f}x':>10s} "
                  f"{'' if mb is None else f'{mb:8.0f}':>8s}")  # fmt: skip
        for m, c in checks.items():
            if m != "jacobian_path" and c:
                print(f"  direction check {m}: {c}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=lambda v: None if v != v else v)


if __name__ == "__main__":
    main()
