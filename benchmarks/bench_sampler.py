"""Episode sampler throughput: manytask vs learn2learn, torchmeta and plain baselines.

Measures episodes per second at 5-way 1-shot with 15 queries per class, 32 tasks per
meta-batch, on the real Omniglot 28x28 (all 1623 classes x 20 drawers), every method in ONE
process, round-robin, several repeats; reports medians and the ratio manytask / method.

Every method delivers the same thing per meta-batch: float32 support and query images
``[32, N*K, 1, 28, 28]`` / ``[32, N*Q, 1, 28, 28]`` in [0, 1] with ink = 1 and int64 labels.

Methods:
    manytask            ``EpisodeSampler(...).sample()``: one gather per meta-batch.
    manytask-indices    the index draw alone (no images touched), for the breakdown.
    l2l-memory          learn2learn ``TaskDataset`` over an in-memory ``TensorDataset``
                        (``MetaDataset`` + NWays/KShots/LoadData/RemapLabels), 32 tasks stacked.
    l2l-png             the same over an ImageFolder-like dataset decoding one PNG per sample.
    torchmeta           torchmeta ``BatchMetaDataLoader`` over an in-memory class dataset with
                        ``ClassSplitter`` (batch_size=32, num_workers=0).
    gather-per-episode  plain PyTorch: per episode, draw classes/instances and index the tensor.
    png-per-episode     plain Python: per episode, open and decode the 80 PNG files.

Peers (learn2learn, torchmeta) are optional: a method whose library is missing is skipped with a
note. See benchmarks/README.md for the peer venv. Usage:

    python benchmarks/bench_sampler.py --out results.json [--repeats 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from manytask.data import EpisodeSampler, ImageStore, data_dir

WAYS, SHOTS, QUERIES, TASKS = 5, 1, 15, 32
# The 28x28 MAML/CS330 zip in the data directory ($MANYTASK_DATA), and the peers' shim in the
# workplace's shared folder beside the repository.
DEFAULT_ZIP = data_dir() / "omniglot_resized" / "omniglot_resized.zip"
DEFAULT_TVSHIM = Path(__file__).resolve().parents[2] / "shared" / "peers" / "_tvshim.py"
Batch = Callable[[], object]


def decode_png(data: bytes | str | Path) -> np.ndarray:
    """A 28x28 mode-"1" Omniglot PNG as uint8 with ink (pixel False) = 255."""
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(src) as img:
        arr = np.asarray(img.convert("1"), dtype=bool)
    return np.where(arr, 0, 255).astype(np.uint8)


def load_store(zip_path: str, extract_to: Path) -> tuple[ImageStore, list[list[Path]]]:
    """Decode the archive into an ImageStore and extract the PNGs (for the on-disk methods)."""
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        zf.extractall(extract_to, members=names)
        by_class: dict[str, list[str]] = {}
        for n in names:
            parts = n.split("/")
            by_class.setdefault(f"{parts[-3]}/{parts[-2]}", []).append(n)
        class_names = sorted(by_class)
        instances = min(len(v) for v in by_class.values())
        images = np.zeros((len(class_names), instances, 28, 28), dtype=np.uint8)
        files: list[list[Path]] = []
        for c, name in enumerate(class_names):
            members = sorted(by_class[name])[:instances]
            files.append([extract_to / m for m in members])
            for i, m in enumerate(members):
                images[c, i] = decode_png(zf.read(m))
    alphabets = sorted({n.split("/")[0] for n in class_names})
    lookup = {a: i for i, a in enumerate(alphabets)}
    store = ImageStore(
        images=torch.from_numpy(images),
        class_names=tuple(class_names),
        alphabets=tuple(alphabets),
        alphabet_of=torch.tensor([lookup[n.split("/")[0]] for n in class_names]),
        drawers=torch.zeros(len(class_names), instances, dtype=torch.long),
        source=f"benchmark decode of {zip_path}",
    )
    return store, files


def split_episode(x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Class-major ``x [N, K+Q, 1, 28, 28]`` (labels ``y [N, K+Q]``, default the class index)
    -> support images, support labels, query images, query labels."""
    if y is None:
        y = torch.arange(WAYS).unsqueeze(1).expand(WAYS, SHOTS + QUERIES)
    return (
        x[:, :SHOTS].reshape(-1, 1, 28, 28),
        y[:, :SHOTS].reshape(-1),
        x[:, SHOTS:].reshape(-1, 1, 28, 28),
        y[:, SHOTS:].reshape(-1),
    )


def split_task(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One learn2learn task (classes contiguous or not) -> support/query of K and Q per class."""
    order = torch.argsort(y, stable=True)
    x, y = x[order].view(WAYS, SHOTS + QUERIES, 1, 28, 28), y[order].view(WAYS, SHOTS + QUERIES)
    return split_episode(x, y)


def stack_tasks(tasks: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.stack(parts) for parts in zip(*tasks, strict=True))


# ---------------------------------------------------------------- methods


def make_manytask(store: ImageStore) -> dict[str, Batch]:
    sampler = EpisodeSampler(store, WAYS, SHOTS, QUERIES, TASKS, seed=0)
    return {
        "manytask": sampler.sample,
        "manytask-indices": lambda: sampler._draw(TASKS, sampler.generator),
    }


def make_gather_per_episode(store: ImageStore) -> Batch:
    images = store.images
    g = torch.Generator().manual_seed(0)
    c, n = store.num_classes, store.num_instances

    def episode() -> tuple[torch.Tensor, ...]:
        classes = torch.randperm(c, generator=g)[:WAYS]
        inst = torch.stack([torch.randperm(n, generator=g)[: SHOTS + QUERIES] for _ in classes])
        x = images[classes.unsqueeze(1), inst].float().div_(255).unsqueeze(2)  # [N, K+Q, 1, H, W]
        return split_episode(x)

    return lambda: stack_tasks([episode() for _ in range(TASKS)])


def make_png_per_episode(files: list[list[Path]]) -> Batch:
    rng = random.Random(0)

    def episode() -> tuple[torch.Tensor, ...]:
        classes = rng.sample(range(len(files)), WAYS)
        arrays = [
            [decode_png(files[c][i]) for i in rng.sample(range(len(files[c])), SHOTS + QUERIES)]
            for c in classes
        ]
        x = torch.from_numpy(np.stack(arrays)).float().div_(255).unsqueeze(2)
        return split_episode(x)

    return lambda: stack_tasks([episode() for _ in range(TASKS)])


class PngFolder(torch.utils.data.Dataset):
    """ImageFolder-like: (path, label) pairs, one PNG decoded per __getitem__."""

    def __init__(self, files: list[list[Path]]) -> None:
        self.items = [(p, c) for c, paths in enumerate(files) for p in paths]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        x = torch.from_numpy(decode_png(path)).float().div_(255).unsqueeze(0)
        return x, label


def make_l2l(store: ImageStore, files: list[list[Path]]) -> dict[str, Batch]:
    import learn2learn as l2l

    def taskset(dataset: torch.utils.data.Dataset, labels: list[int]) -> Batch:
        labels_to_indices: dict[int, list[int]] = {}
        for i, lab in enumerate(labels):
            labels_to_indices.setdefault(lab, []).append(i)
        meta = l2l.data.MetaDataset(dataset, labels_to_indices=labels_to_indices)
        tasks = l2l.data.TaskDataset(
            meta,
            task_transforms=[
                l2l.data.transforms.NWays(meta, WAYS),
                l2l.data.transforms.KShots(meta, SHOTS + QUERIES),
                l2l.data.transforms.LoadData(meta),
                l2l.data.transforms.RemapLabels(meta),
            ],
            num_tasks=-1,
        )

        def batch() -> tuple[torch.Tensor, ...]:
            out = []
            for _ in range(TASKS):
                x, y = tasks.sample()
                out.append(split_task(x, torch.as_tensor(y)))
            return stack_tasks(out)

        return batch

    c, n = store.num_classes, store.num_instances
    x = store.images.reshape(c * n, 1, 28, 28).float().div_(255)
    y = torch.arange(c).repeat_interleave(n)
    labels = y.tolist()
    return {
        "l2l-memory": taskset(torch.utils.data.TensorDataset(x, y), labels),
        "l2l-png": taskset(PngFolder(files), labels),
    }


def make_torchmeta(store: ImageStore) -> Batch:
    import torchvision.datasets.utils as tv_utils

    # torchmeta 1.8 imports two download helpers that torchvision has since removed; they
    # are only used to download data sets, never here.
    for missing in ("_get_confirm_token", "_save_response_content"):
        if not hasattr(tv_utils, missing):
            setattr(tv_utils, missing, None)
    from torchmeta.transforms import Categorical, ClassSplitter
    from torchmeta.utils.data import (
        BatchMetaDataLoader,
        ClassDataset,
        CombinationMetaDataset,
        Dataset,
    )
    from torchmeta.utils.data.task import SubsetTask

    if "__getitems__" not in vars(SubsetTask):  # needed on torch 2.13 (peers/README.md)
        SubsetTask.__getitems__ = lambda self, idx: [self[i] for i in idx]

    images = store.images.float().div_(255).unsqueeze(2)  # [C, I, 1, H, W]

    class MemClass(Dataset):
        def __init__(self, index: int, target_transform=None) -> None:
            super().__init__(index, target_transform=target_transform)

        def __len__(self) -> int:
            return images.shape[1]

        def __getitem__(self, i: int):
            target = self.index
            if self.target_transform is not None:
                target = self.target_transform(target)
            return images[self.index, i], target

    class MemClasses(ClassDataset):
        def __init__(self) -> None:
            super().__init__(meta_train=True)

        @property
        def num_classes(self) -> int:
            return images.shape[0]

        def __getitem__(self, index: int):
            return MemClass(index, target_transform=self.get_target_transform(index))

    dataset = CombinationMetaDataset(
        MemClasses(),
        num_classes_per_task=WAYS,
        target_transform=Categorical(WAYS),
        dataset_transform=ClassSplitter(
            shuffle=True, num_train_per_class=SHOTS, num_test_per_class=QUERIES
        ),
    )
    loader = BatchMetaDataLoader(dataset, batch_size=TASKS, shuffle=True, num_workers=0)
    it = iter(loader)

    def batch():
        nonlocal it
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        return b["train"][0], b["train"][1], b["test"][0], b["test"][1]

    return batch


# ---------------------------------------------------------------- harness


def check_batch(name: str, out: object) -> None:
    """Every method must deliver [T, N*K, 1, 28, 28] / [T, N*Q, 1, 28, 28] float images."""
    if name == "manytask-indices":
        return
    if name == "manytask":
        sx, sy, qx, qy = out.support_x, out.support_y, out.query_x, out.query_y  # type: ignore[attr-defined]
    else:
        sx, sy, qx, qy = out  # type: ignore[misc]
    assert sx.shape == (TASKS, WAYS * SHOTS, 1, 28, 28), (name, sx.shape)
    assert qx.shape == (TASKS, WAYS * QUERIES, 1, 28, 28), (name, qx.shape)
    assert sx.dtype == qx.dtype == torch.float32, name
    assert float(sx.max()) <= 1.0 and float(qx.min()) >= 0.0, name
    assert sy.shape == (TASKS, WAYS * SHOTS) and qy.shape == (TASKS, WAYS * QUERIES), name
    # ink is ~10-20% of an Omniglot image; a background-as-1 mistake would give ~85%.
    assert 0.02 < float(qx.mean()) < 0.5, (name, float(qx.mean()))


def episodes_per_second(fn: Batch, seconds: float) -> float:
    fn()  # warm-up
    batches, start = 0, time.perf_counter()
    while True:
        fn()
        batches += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and batches >= 3:
            return batches * TASKS / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--zip", default=DEFAULT_ZIP, help="omniglot_resized.zip")
    parser.add_argument("--repeats", type=int, default=5, help="round-robin repeats (median)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument(
        "--tvshim",
        default=str(DEFAULT_TVSHIM),
        help="path of _tvshim.py, imported before learn2learn/torchmeta ('' to skip)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (0: torch default)"
    )
    parser.add_argument("--only", nargs="*", help="run only these methods")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tvshim and Path(args.tvshim).exists():
        sys.path.insert(0, str(Path(args.tvshim).parent))
        import _tvshim  # noqa: F401  (declares torchvision ops; must precede learn2learn)

    tmp = tempfile.TemporaryDirectory(prefix="manytask-bench-")
    t0 = time.perf_counter()
    store, files = load_store(args.zip, Path(tmp.name))
    print(f"decoded {store} in {time.perf_counter() - t0:.1f} s")

    methods: dict[str, Batch] = {}
    notes: dict[str, str] = {}
    methods.update(make_manytask(store))
    try:
        methods.update(make_l2l(store, files))
    except ImportError as e:
        notes["l2l-memory"] = notes["l2l-png"] = f"skipped: learn2learn not importable ({e})"
    try:
        methods["torchmeta"] = make_torchmeta(store)
    except ImportError as e:
        notes["torchmeta"] = f"skipped: torchmeta not importable ({e})"
    methods["gather-per-episode"] = make_gather_per_episode(store)
    methods["png-per-episode"] = make_png_per_episode(files)
    if args.only:
        methods = {k: v for k, v in methods.items() if k in args.only}
    for name, note in notes.items():
        print(f"note: {name} {note}")

    for name, fn in methods.items():
        check_batch(name, fn())

    runs: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.repeats):
        for name, fn in methods.items():
            runs[name].append(episodes_per_second(fn, args.seconds))
        print(
            f"repeat {r + 1}/{args.repeats}: "
            + ", ".join(f"{k} {v[-1]:.0f}" for k, v in runs.items())
        )

    median = {name: statistics.median(v) for name, v in runs.items()}
    head = median.get("manytask")
    print(
        f"\n{WAYS}-way {SHOTS}-shot, {QUERIES} queries/class, {TASKS} tasks/batch, "
        f"Omniglot 28x28 ({store.num_classes} classes); medians of {args.repeats}"
    )
    print(f"{'method':<20} {'episodes/s':>12} {'min':>10} {'max':>10} {'manytask / method':>18}")
    for name, v in runs.items():
        ratio = f"{head / median[name]:.1f}x" if head else "-"
        print(f"{name:<20} {median[name]:>12.0f} {min(v):>10.0f} {max(v):>10.0f} {ratio:>18}")

    result = {
        "benchmark": "episode sampler throughput",
        "setting": {
            "ways": WAYS,
            "shots": SHOTS,
            "queries": QUERIES,
            "tasks_per_batch": TASKS,
            "dataset": f"Omniglot 28x28, {store.num_classes} classes x {store.num_instances}",
        },
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "repeats": args.repeats,
        "seconds_per_measurement": args.seconds,
        "episodes_per_second": {"median": median, "runs": runs},
        "ratio_manytask_over": {k: head / v for k, v in median.items()} if head else {},
        "notes": notes,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
