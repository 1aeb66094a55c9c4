"""Time one MAML meta-gradient, manytask against learn2learn, higher, torchopt and plain torch.func.

Every implementation computes the same thing on the same batch from the same weights: the
meta-gradient of the mean query loss of ``--tasks`` tasks (Conv4 with batch norm in
batch-statistics mode and a linear head, 5-way, ``--queries`` queries per class, Omniglot
28x28 from the embedded copy), after ``steps`` inner SGD steps at ``--inner-lr``, second order
or first order. Before timing, each meta-gradient is compared with manytask's fp32 one
(``--reference``: the grouped call by default, ``manytask-pertask`` for the peers' rounding)
and the relative error ``||g - g_ref|| / ||g_ref||`` is printed (``wrong`` above ``--tolerance``,
1e-3 by default; fp32
implementations that sum in different orders differ by 1e-5 to 1e-4 here).

Omniglot's images are binary, so flat regions give exact ties inside max-pool windows, where
the gradient is not unique: the NCHW kernels the peers use send it to one maximum, the
channels-last kernels manytask uses to another. Both are valid subgradients, and they make
the meta-gradients differ by ~3e-3 (relative). The images get Gaussian noise of std 0.01 to
break the ties, so that the check compares like with like; the arithmetic timed is the same.

Implementations (a peer that is not installed is skipped):

- ``manytask``: :class:`manytask.meta.MAML`, grouped backend (every task in one call), fp32;
- ``manytask-bf16``: the same under ``torch.autocast(dtype=bfloat16)`` (``train.precision:
  bf16``); its error against fp32 is reported;
- ``manytask-loop``: ``backend="loop"`` (one ``functional_call`` per task; every task's
  graph still in one backward pass);
- ``manytask-pertask``: ``backend="per_task"`` (the same layers task by task in NCHW, ReLU
  after max-pool, max-pool maxima found in channels-last layout; rounds like the peers);
- ``manytask-pertask-workers``: the same with ``task_workers`` = the number of threads (the
  tasks split over worker threads of one intra-op thread each, forward and backward);
- ``manytask-workers`` / ``manytask-grouped-workers``: ``task_workers`` with the loop and the
  grouped backends; ``manytask-pertask-bf16`` / ``manytask-pertask-workers-bf16``: the
  per-task network under bf16 autocast;
- ``manytask-remat``: ``remat=True`` (inner steps recomputed in the backward pass; second
  order only; a memory option, timed for its cost);
- ``torchfunc-loop``: a plain loop over tasks with ``torch.func.functional_call`` and
  ``torch.func.grad`` (differentiated through for second order);
- ``higher``: ``higher.innerloop_ctx`` per task (first order: ``track_higher_grads=False``
  and the query gradient at the fast weights copied back);
- ``learn2learn``: ``l2l.algorithms.MAML(...).clone()`` and ``adapt`` per task;
- ``torchopt``: ``torchopt.MetaSGD`` per task with state extraction and recovery (second
  order only);
- ``vmap``: ``torch.func.vmap`` over tasks of the torch.func step, batch norm replaced by
  ``replace_all_batch_norm_modules_``; not in the default list (slow on CPU, and its
  second-order meta-gradient with batch norm is wrong on torch 2.13: the check shows it).

Timing is round-robin over the implementations, ``--repeats`` rounds after a warm-up, median
seconds per meta-gradient; ``speed`` is the fastest peer's median over manytask's.
``--memory`` also measures each implementation's peak resident memory for its first
meta-gradient, in a fresh subprocess per implementation (the kernel's high-water mark, reset
through ``/proc/self/clear_refs``, minus the resident memory before the step).

    .venv/bin/python benchmarks/bench_maml.py \\
        --peers-site ../peers-venv/lib/python3.11/site-packages --repeats 3 --out maml.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.data.omniglot_tasks import OmniglotTasks
from manytask.meta import MAML
from manytask.nn import Conv4, init_parameters

PEERS = ("torchfunc-loop", "higher", "learn2learn", "torchopt", "vmap")
DEFAULT = ("manytask", "manytask-bf16", "manytask-remat", "torchfunc-loop", "higher",
           "learn2learn", "torchopt")  # fmt: skip


@dataclass(frozen=True)
class Setting:
    order: int  # 2: second order, 1: first order
    steps: int
    shots: int
    ways: int = 5
    queries: int = 15
    tasks: int = 32
    inner_lr: float = 0.4

    def label(self) -> str:
        o = "2nd" if self.order == 2 else "1st"
        shape = f"{self.ways}w{self.shots}s{self.queries}q x{self.tasks}"
        return f"{o} order, {self.steps} step(s), {shape}"


def load_peers(site: str | None, tvshim: str) -> dict[str, object]:
    """Import the peers that are installed; ``site`` is appended to ``sys.path`` (after ours)."""
    if site:
        sys.path.append(site)
    if tvshim and Path(tvshim).exists():
        sys.path.insert(0, str(Path(tvshim).parent))
        __import__(Path(tvshim).stem)
    found: dict[str, object] = {}
    for name in ("higher", "learn2learn", "torchopt"):
        try:
            found[name] = __import__(name)
        except Exception as exc:  # a broken peer is skipped, never fatal
            print(f"note: {name} not available ({type(exc).__name__}: {exc}); skipped")
    return found


def make_batch(s: Setting, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Omniglot episodes plus noise of std 0.01 (see the module docstring: ties in max-pool)."""
    src = OmniglotTasks(source="embedded", progress=False)
    ep = src.sampler("train", s.ways, s.shots, s.queries, s.tasks, seed=seed).sample()
    g = torch.Generator().manual_seed(seed)
    sx = ep.support_x + 0.01 * torch.randn(ep.support_x.shape, generator=g)
    qx = ep.query_x + 0.01 * torch.randn(ep.query_x.shape, generator=g)
    return sx, ep.support_y, qx, ep.query_y


def conv4_with_head(ways: int) -> nn.Sequential:
    return init_parameters(nn.Sequential(Conv4(hidden=64), nn.Linear(64, ways)), 0)


# -- implementations: each returns a function computing the meta-gradient into .grad -------------


def manytask_impl(
    s: Setting,
    batch,
    *,
    bf16: bool = False,
    remat: bool = False,
    backend: str = "grouped",
    workers: int = 1,
):
    learner = MAML(Conv4(hidden=64), in_shape=(1, 28, 28), ways=s.ways, inner_lr=s.inner_lr,
                   steps=s.steps, first_order=s.order == 1, remat=remat,
                   backend=backend, task_workers=workers)  # fmt: skip
    ref = conv4_with_head(s.ways)
    learner.encoder.load_state_dict(ref[0].state_dict())
    learner.head.load_state_dict(ref[1].state_dict())
    sx, sy, qx, qy = batch

    def run() -> None:
        learner.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = learner(sx, sy, qx, ways=s.ways)
        F.cross_entropy(logits.float().flatten(0, 1), qy.flatten()).backward()

    return run, lambda: [learner.encoder, learner.head]


def torchfunc_impl(s: Setting, batch):
    model = conv4_with_head(s.ways)
    fmodel = copy.deepcopy(model)  # batch norm without running statistics: nothing mutated
    torch.func.replace_all_batch_norm_modules_(fmodel)
    sx, sy, qx, qy = batch
    params = dict(model.named_parameters())

    def loss_fn(p, x, y):
        return F.cross_entropy(torch.func.functional_call(fmodel, p, (x,)), y)

    grad_fn = torch.func.grad(loss_fn)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        for t in range(s.tasks):
            p = params
            for _ in range(s.steps):
                g = grad_fn(p, sx[t], sy[t])
                if s.order == 1:
                    g = {k: v.detach() for k, v in g.items()}
                p = {k: p[k] - s.inner_lr * g[k] for k in p}
            (loss_fn(p, qx[t], qy[t]) / s.tasks).backward()

    return run, lambda: [model]


def vmap_impl(s: Setting, batch):
    model = conv4_with_head(s.ways)
    fmodel = copy.deepcopy(model)
    torch.func.replace_all_batch_norm_modules_(fmodel)
    sx, sy, qx, qy = batch
    params = dict(model.named_parameters())

    def loss_fn(p, x, y):
        return F.cross_entropy(torch.func.functional_call(fmodel, p, (x,)), y)

    def task(p, a, b, c, d):
        for _ in range(s.steps):
            g = torch.func.grad(loss_fn)(p, a, b)
            if s.order == 1:
                g = {k: v.detach() for k, v in g.items()}
            p = {k: p[k] - s.inner_lr * g[k] for k in p}
        return loss_fn(p, c, d)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        torch.func.vmap(task, in_dims=(None, 0, 0, 0, 0))(params, sx, sy, qx, qy).mean().backward()

    return run, lambda: [model]


def higher_impl(s: Setting, batch, higher):
    model = conv4_with_head(s.ways)
    inner = torch.optim.SGD(model.parameters(), lr=s.inner_lr)
    sx, sy, qx, qy = batch

    def run() -> None:
        model.zero_grad(set_to_none=True)
        for t in range(s.tasks):
            ctx = higher.innerloop_ctx(
                model, inner, copy_initial_weights=False, track_higher_grads=s.order == 2
            )
            with ctx as (fmodel, diffopt):
                for _ in range(s.steps):
                    diffopt.step(F.cross_entropy(fmodel(sx[t]), sy[t]))
                loss = F.cross_entropy(fmodel(qx[t]), qy[t]) / s.tasks
                if s.order == 2:
                    loss.backward()
                else:  # the fast weights are detached: copy their gradient back
                    grads = torch.autograd.grad(loss, list(fmodel.parameters()))
                    for p, g in zip(model.parameters(), grads, strict=True):
                        p.grad = g if p.grad is None else p.grad + g

    return run, lambda: [model]


def l2l_impl(s: Setting, batch, l2l):
    model = conv4_with_head(s.ways)
    maml = l2l.algorithms.MAML(model, lr=s.inner_lr, first_order=s.order == 1)
    sx, sy, qx, qy = batch

    def run() -> None:
        maml.zero_grad(set_to_none=True)
        for t in range(s.tasks):
            learner = maml.clone()
            for _ in range(s.steps):
                learner.adapt(F.cross_entropy(learner(sx[t]), sy[t]))
            (F.cross_entropy(learner(qx[t]), qy[t]) / s.tasks).backward()

    return run, lambda: [model]


def torchopt_impl(s: Setting, batch, torchopt):
    model = conv4_with_head(s.ways)
    inner = torchopt.MetaSGD(model, lr=s.inner_lr)
    sx, sy, qx, qy = batch

    def run() -> None:
        model.zero_grad(set_to_none=True)
        net_state = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
        opt_state = torchopt.extract_state_dict(inner)
        for t in range(s.tasks):
            for _ in range(s.steps):
                inner.step(F.cross_entropy(model(sx[t]), sy[t]))
            (F.cross_entropy(model(qx[t]), qy[t]) / s.tasks).backward()
            torchopt.recover_state_dict(model, net_state)
            torchopt.recover_state_dict(inner, opt_state)

    return run, lambda: [model]


def build(name: str, s: Setting, batch, peers: dict[str, object]):
    """``(run, modules)`` for implementation ``name``, or None when it does not apply."""
    if name == "manytask":
        return manytask_impl(s, batch)
    if name == "manytask-bf16":
        return manytask_impl(s, batch, bf16=True)
    if name == "manytask-remat":
        return manytask_impl(s, batch, remat=True) if s.order == 2 else None
    if name == "manytask-loop":
        return manytask_impl(s, batch, backend="loop")
    if name == "manytask-workers":  # the loop backend, tasks over one worker per thread
        return manytask_impl(s, batch, backend="loop", workers=torch.get_num_threads())
    if name == "manytask-grouped-workers":
        return manytask_impl(s, batch, workers=torch.get_num_threads())
    if name == "manytask-pertask":
        return manytask_impl(s, batch, backend="per_task")
    if name == "manytask-pertask-workers":
        return manytask_impl(s, batch, backend="per_task", workers=torch.get_num_threads())
    if name == "manytask-pertask-bf16":
        return manytask_impl(s, batch, backend="per_task", bf16=True)
    if name == "manytask-pertask-workers-bf16":
        workers = torch.get_num_threads()
        return manytask_impl(s, batch, backend="per_task", workers=workers, bf16=True)
    if name == "torchfunc-loop":
        return torchfunc_impl(s, batch)
    if name == "vmap":
        return vmap_impl(s, batch)
    if name == "higher" and "higher" in peers:
        return higher_impl(s, batch, peers["higher"])
    if name == "learn2learn" and "learn2learn" in peers:
        return l2l_impl(s, batch, peers["learn2learn"])
    if name == "torchopt" and "torchopt" in peers and s.order == 2:
        return torchopt_impl(s, batch, peers["torchopt"])
    return None


def gradient_of(modules: Callable[[], list[nn.Module]]) -> Tensor:
    return torch.cat([p.grad.flatten() for m in modules() for p in m.parameters()])


# -- memory: one implementation per fresh process ------------------------------------------------


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(name: str, s: Setting, peers: dict[str, object]) -> float | None:
    """Peak extra resident MiB of the first meta-gradient of ``name`` in this fresh process.

    The first one, not a second: glibc keeps freed heap blocks (under 32 MiB) resident, so
    the high-water mark of a second step would hide the peers' per-task activations while
    still showing manytask's larger, ``mmap``-ed ones.
    """
    built = build(name, s, make_batch(s), peers)
    if built is None:
        return None
    run, _ = built
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    before = _rss_kib("VmRSS")
    run()
    return (_rss_kib("VmHWM") - before) / 1024


def measure_memory(names, s: Setting, args) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--setting", json.dumps(asdict(s)),
               "--threads", str(args.threads), "--tvshim", args.tvshim]  # fmt: skip
        if args.peers_site:
            cmd += ["--peers-site", args.peers_site]
        # glibc's default allocator for every child (MALLOC_* tuning changes what is resident).
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("PEAK ")]
        out[name] = None if not lines or lines[-1] == "PEAK none" else float(lines[-1].split()[1])
        if res.returncode != 0:
            print(f"  memory of {name} failed: {res.stderr.strip().splitlines()[-1:]}")
    return out


# -- the comparison ------------------------------------------------------------------------------


def compare(
    s: Setting, names, peers, repeats: int, reference: str = "manytask", tolerance: float = 1e-3
) -> dict:
    batch = make_batch(s)
    impls = {}
    for name in names:
        built = build(name, s, batch, peers)
        if built is not None:
            impls[name] = built
    ref_run, ref_mods = impls[reference]
    ref_run()
    ref = gradient_of(ref_mods).clone()
    errors = {}
    times: dict[str, list[float]] = {n: [] for n in impls}
    for name, (run, mods) in impls.items():
        t0 = time.perf_counter()
        run()  # warm-up, and the gradient check
        times[name].append(time.perf_counter() - t0)  # kept apart, not in the median
        errors[name] = float((gradient_of(mods) - ref).norm() / ref.norm())
    times = {n: [] for n in impls}
    for _ in range(repeats):
        for name, (run, _mods) in impls.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    peer_names = [n for n in impls if n in PEERS and n != "vmap"]
    correct_peers = [n for n in peer_names if errors[n] < tolerance]
    fastest = min(correct_peers, key=med.__getitem__) if correct_peers else None
    result = {"setting": asdict(s), "label": s.label(), "median_s": med, "times_s": times,
              "reference": reference, "tolerance": tolerance,
              "rel_error_vs_manytask_fp32": errors,
              "fastest_peer": fastest}  # fmt: skip
    if fastest is not None:
        result["speedup_vs_fastest_peer"] = {
            n: med[fastest] / med[n] for n in impls if n.startswith("manytask")
        }
    return result


def print_result(r: dict) -> None:
    print(f"\n{r['label']}")
    fastest = r["fastest_peer"]
    print(
        f"  {'implementation':16s} {'median s':>9s} {'vs fastest peer':>16s} {'grad rel. err':>14s}"
    )
    for n, m in sorted(r["median_s"].items(), key=lambda kv: kv[1]):
        ratio = f"{r['median_s'][fastest] / m:15.2f}x" if fastest else f"{'-':>16s}"
        err = r["rel_error_vs_manytask_fp32"][n]
        flag = "  wrong" if err > r.get("tolerance", 1e-3) and not n.endswith("bf16") else ""
        mem = r.get("peak_mib", {}).get(n)
        mem_s = f"  {mem:7.0f} MiB" if mem is not None else ""
        print(f"  {n:16s} {m:9.3f} {ratio} {err:14.1e}{flag}{mem_s}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, nargs="+", default=[2, 1])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    p.add_argument("--tasks", type=int, default=32)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--only", nargs="+", default=list(DEFAULT), help="implementations to run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory")
    p.add_argument("--memory-only", action="store_true", help="measure peak memory, no timing")
    p.add_argument("--peers-site", default=None, help="site-packages of the peers' venv")
    p.add_argument("--tvshim", default="../shared/peers/_tvshim.py")
    p.add_argument("--out", help="write every measurement as JSON here")
    p.add_argument(
        "--reference",
        default="manytask",
        help="the manytask fp32 implementation whose meta-gradient the others are checked "
        "against (manytask-pertask is the closest to float64 in docs/RESULTS.md)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="relative error above which an fp32 meta-gradient is flagged wrong and a peer is "
        "not timed against (with 5 inner steps of 5 shots over 32 tasks, max-pool near-ties "
        "put fp32 implementations up to 2e-2 from float64: maml_precision.py, "
        "maml_conditioning.py)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--setting", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peers = load_peers(args.peers_site, args.tvshim)
    if args.child:
        peak = child_memory(args.child, Setting(**json.loads(args.setting)), peers)
        print("PEAK none" if peak is None else f"PEAK {peak:.1f}")
        return
    if args.reference not in args.only:
        args.only.insert(0, args.reference)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; peers: {sorted(peers)}")
    results: list[dict] = []

    def save() -> None:  # after every setting, so a long run leaves partial results
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            record = {"command": sys.argv, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "results": results}  # fmt: skip
            Path(args.out).write_text(json.dumps(record, indent=2))

    for order in args.orders:
        for steps in args.steps:
            for shots in args.shots:
                s = Setting(order, steps, shots, queries=args.queries, tasks=args.tasks)
                if args.memory_only:
                    peak = measure_memory(args.only, s, args)
                    print(f"\n{s.label()}: peak extra resident memory of one meta-gradient")
                    for name, mib in peak.items():
                        print(f"  {name:16s} " + ("-" if mib is None else f"{mib:8.0f} MiB"))
                    results.append({"setting": asdict(s), "label": s.label(), "peak_mib": peak})
                else:
                    r = compare(s, args.only, peers, args.repeats, args.reference, args.tolerance)
                    if args.memory:
                        r["peak_mib"] = measure_memory(list(r["median_s"]), s, args)
                    print_result(r)
                    results.append(r)
                save()


if __name__ == "__main__":
    main()
