"""The ``manytask`` command.

::

    manytask run RECIPE [key=value ...] [--out DIR] [--quiet]
    manytask run --resume RUN_DIR
    manytask run RECIPE --single-task [key=value ...] [--out DIR]
    manytask compare RUN_DIR... [--baseline RUN_DIR...] [--delta-m libmtl|nash_mtl]
    manytask ls
    manytask validate [FILE ...]
    manytask data list|fetch|build|verify
    manytask eval RUN_DIR [key=value ...]
    manytask predict RUN_DIR --support DIR --query DIR
    manytask env
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


class _GracefulStop:
    """First Ctrl-C (or SIGTERM) asks the loop to checkpoint and stop; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _GracefulStop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nmanytask: stopping after this episode (again to abort at once)", file=sys.stderr)

    def __call__(self) -> bool:
        return self.requested


def _context(cfg: Any) -> Any:
    """The run context, built here at the command-line edge (the only place env is read)."""
    from manytask.train import RunContext

    return RunContext.from_environment(cfg.device, quiet=cfg.quiet)


def _cmd_run(args: argparse.Namespace) -> int:
    from manytask.config import load_config
    from manytask.recipes import resolve_recipe
    from manytask.train import RunDir, train

    stop = _GracefulStop()
    if args.resume:
        if args.recipe:
            raise UsageError("manytask run --resume RUN_DIR takes no recipe or overrides")
        if args.out:
            raise UsageError(
                "manytask run --resume RUN_DIR continues the run in RUN_DIR itself; --out "
                "cannot move it. To start a new run from its config, use "
                f"`manytask run {Path(args.resume) / 'config.yaml'} --out {args.out}`"
            )
        run = RunDir(args.resume)
        from manytask.train.single import is_single_task_set, train_single_tasks

        if is_single_task_set(run.path):
            with stop:
                result = train_single_tasks(None, run.path, resume=True, should_stop=stop)
        else:
            cfg = load_config(run.read_config(), ["quiet=true"] if args.quiet else None)
            with stop:
                result = train(cfg, run, _context(cfg), resume=True, should_stop=stop)
    else:
        if not args.recipe:
            raise UsageError("manytask run: give a RECIPE (see `manytask ls`) or --resume RUN_DIR")
        recipe, *overrides = args.recipe
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise UsageError(f"manytask run: {bad[0]!r} is not a key=value override")
        if args.quiet:
            overrides.append("quiet=true")
        cfg = load_config(resolve_recipe(recipe), overrides)
        out = (
            Path(args.out)
            if args.out
            else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        print(f"run folder: {out}", file=sys.stderr)
        run = RunDir(out)
        if args.single_task:
            if getattr(cfg, "family", "meta") != "mtl":
                raise UsageError(
                    "--single-task trains each task of a multi-task recipe alone "
                    f"(family: mtl); {recipe!r} is a {cfg.family!r} recipe"
                )
            from manytask.train.single import train_single_tasks

            with stop:
                result = train_single_tasks(cfg, out, _context(cfg), should_stop=stop)
        else:
            with stop:
                result = train(cfg, run, _context(cfg), should_stop=stop)
    if result is None:
        print(f"stopped at a checkpoint; continue with `manytask run --resume {run.path}`")
        return 130
    print(result.summary())
    print(f"report: {result.run.path / 'report.md'}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from manytask.train.compare import compare_runs, write_comparison

    comparison = compare_runs(args.runs, args.baseline or (), args.delta_m)
    print(comparison.markdown())
    out = Path(args.out) if args.out else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    paths = write_comparison(comparison, out)
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    import yaml

    from manytask.recipes import list_recipes, recipe_path

    for name in list_recipes():
        data = yaml.safe_load(recipe_path(name).read_text()) or {}
        desc = " ".join(str(data.get("description", "")).split())
        print(f"{name:32s} {desc[:90]}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from manytask.config import ConfigError, load_config
    from manytask.recipes import list_recipes, recipe_path, resolve_recipe

    targets = [resolve_recipe(f) for f in args.files] or [recipe_path(n) for n in list_recipes()]
    failed = 0
    for path in targets:
        try:
            load_config(path)
        except ConfigError as exc:
            failed += 1
            print(f"FAIL {path}: {exc}")
        else:
            print(f"ok   {path}")
    return 1 if failed else 0


def _cmd_data(args: argparse.Namespace) -> int:
    """`data list|fetch|verify [DATASET]` over the data-set registry; `build` is Omniglot's."""
    from manytask.data import omniglot, registry
    from manytask.data.paths import cache_dir, data_dir

    names = [registry.get_dataset(args.dataset).name] if args.dataset else registry.list_datasets()
    if args.action == "build":
        if names != ["omniglot"] and args.dataset:
            raise UsageError(f"`data build` makes Omniglot's embedded array; got {args.dataset!r}")
        if args.out and args.replace_embedded:
            raise UsageError("data build: give --out or --replace-embedded, not both")
        path = omniglot.build_embedded(
            args.out,
            data_dir=args.data_dir,
            replace_embedded=args.replace_embedded,
            progress=not args.quiet,
        )
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
        return 0
    if args.action == "fetch":
        if args.url and not args.dataset:
            raise UsageError("--url names the mirror of one data set: give DATASET too")
        for name in names:
            for p in registry.fetch_dataset(
                name, args.data_dir, base_url=args.url, progress=not args.quiet
            ):
                print(f"{name:18s} ok {p}")
        return 0
    if args.action == "list":
        print(f"data directory:  {data_dir(args.data_dir)}")
        print(f"cache directory: {cache_dir()}")
    bad = False
    for name in names:
        info = registry.get_dataset(name)
        report = registry.verify_dataset(name, args.data_dir)
        if args.action == "list":
            print(f"{name:18s} {info.summary}")
        if not report:
            print(f"{name:18s} {'-':28s} {'-':8s} no files needed (generated or shipped)")
        for file, entry in report.items():
            where = (
                (entry["path"] or entry["message"]) if args.action == "list" else entry["message"]
            )
            print(f"{name:18s} {file:28s} {entry['status']:8s} {where}")
            bad = bad or entry["status"] == "invalid"
    return 1 if bad and args.action == "verify" else 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from manytask.train import RunDir, evaluate_run, run_config

    overrides = list(args.overrides) + (["quiet=true"] if args.quiet else [])
    cfg = run_config(args.run_dir, overrides)
    score, summary, cfg = evaluate_run(args.run_dir, overrides, _context(cfg))
    if getattr(cfg, "family", "meta") == "mtl":
        from manytask.train.mtl import summary_line

        print(f"{cfg.name}: {summary_line({'test': summary})}")
        RunDir(args.run_dir).write_json(f"eval-test-seed{cfg.seed}.json", summary)
        return 0
    shape = f"{summary['ways']}-way " if summary.get("ways") else ""
    print(f"{cfg.name}: {shape}{summary['shots']}-shot test {score}")
    e = cfg.eval
    name = (
        f"eval-{summary.get('ways') or 0}w{summary['shots']}s-q{summary['queries']}"
        f"-n{e.episodes}-seed{e.seed}.json"
    )
    RunDir(args.run_dir).write_json(name, summary)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from manytask.train import load_run, resolve_device, run_config
    from manytask.train.predict import predict_folders

    cfg = run_config(args.run_dir)
    device = resolve_device(args.device)
    learner = load_run(args.run_dir, device)
    source = cfg.source()
    rows = predict_folders(
        learner, args.support, args.query, in_shape=source.in_shape, device=device
    )
    width = max(len(r.path) for r in rows)
    for r in rows:
        print(f"{r.path:{width}s}  {r.label}  {100 * r.probability:5.1f}%")
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    import numpy
    import PIL
    import torch

    import manytask
    from manytask.data.paths import cache_dir, data_dir

    info = {
        "manytask": manytask.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "data_dir": str(data_dir()),
        "cache_dir": str(cache_dir()),
    }
    for k, v in info.items():
        print(f"{k:15s} {json.dumps(v) if not isinstance(v, str) else v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    import manytask

    p = argparse.ArgumentParser(
        prog="manytask", description="Multi-task and meta-learning: run benchmarks end to end."
    )
    p.add_argument("--version", action="version", version=f"manytask {manytask.__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of every error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="train and test a recipe (or resume a run)")
    r.add_argument("recipe", nargs="*", metavar="RECIPE [key=value ...]")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its checkpoint")
    r.add_argument("--out", metavar="DIR", help="run folder (default runs/NAME-TIMESTAMP)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument(
        "--single-task", action="store_true",
        help="multi-task recipes: train the model on each task alone (OUT/NN-task/), the "
        "baseline of Delta_m",
    )  # fmt: skip
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser(
        "compare", help="multi-task runs side by side: per-task table, bar chart, Delta_m"
    )
    c.add_argument("runs", nargs="+", metavar="RUN_DIR", help="runs differing only in seed pool")
    c.add_argument(
        "--baseline", nargs="+", metavar="RUN_DIR",
        help="the reference of Delta_m: runs that together cover every task (e.g. a "
        "--single-task set)",
    )  # fmt: skip
    c.add_argument("--delta-m", choices=["libmtl", "nash_mtl"], default="libmtl",
                   help="libmtl: mean over tasks, higher is better (default); nash_mtl: mean "
                   "over all metrics, lower is better")  # fmt: skip
    c.add_argument("--out", metavar="DIR", help="where to write compare.md/.json/.png "
                   "(default runs/compare-TIMESTAMP)")  # fmt: skip
    c.set_defaults(func=_cmd_compare)

    ls = sub.add_parser("ls", help="list the shipped recipes")
    ls.set_defaults(func=_cmd_ls)

    v = sub.add_parser("validate", help="check recipes (all shipped ones by default)")
    v.add_argument("files", nargs="*", metavar="FILE")
    v.set_defaults(func=_cmd_validate)

    d = sub.add_parser("data", help="list, fetch, build or verify data sets")
    d.add_argument("action", choices=["list", "fetch", "build", "verify"])
    d.add_argument("dataset", nargs="?", default=None, metavar="DATASET", help="default: all")
    d.add_argument("--data-dir", help="data directory (default $MANYTASK_DATA, else user cache)")
    d.add_argument("--url", help="fetch: base URL of a mirror")
    d.add_argument("--out", help="build: output file (default: the cache directory)")
    d.add_argument(
        "--replace-embedded",
        action="store_true",
        help="build: overwrite the array shipped inside the package (maintainers only)",
    )
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_data)

    e = sub.add_parser("eval", help="evaluate a finished run on its fixed test episodes")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.episode.shots=5")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_cmd_eval)

    pr = sub.add_parser(
        "predict", help="classify your own images with a trained few-shot classifier"
    )
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument(
        "--support", required=True, metavar="DIR",
        help="one sub-folder per class holding its example images (any number of shots)",
    )  # fmt: skip
    pr.add_argument(
        "--query", required=True, metavar="DIR", help="images to classify (searched recursively)"
    )
    pr.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    pr.set_defaults(func=_cmd_predict)

    en = sub.add_parser("env", help="versions and paths, for bug reports")
    en.set_defaults(func=_cmd_env)
    return p


class UsageError(Exception):
    """The command line was used wrongly; the message says how to use it."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors in what the user asked for: shown as one line, without a traceback."""
    from manytask.data.archives import ArchiveError
    from manytask.typed import ManytaskError

    return (UsageError, ManytaskError, ArchiveError, FileNotFoundError, FileExistsError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``manytask`` command; returns the exit status.

    A user error (bad config or command line, bad or missing data, an impossible request,
    a diverged run) prints one line and exits 2; anything else is a bug and shows its
    traceback; ``--debug`` shows the traceback of every error.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `manytask run RECIPE --out DIR key=value`: argparse ends a positional list at the
        # first option, so overrides written after an option arrive here; they belong to the
        # command's list. Anything else is a real unknown argument.
        field = {"run": "recipe", "eval": "overrides"}.get(args.command)
        if field is None or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, field, [*getattr(args, field), *extra])
    try:
        return int(args.func(args))
    except _user_errors() as exc:
        if args.debug:
            raise
        print(f"manytask: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("manytask: interrupted; resume with `manytask run --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
