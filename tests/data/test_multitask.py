"""TaskSpec / TaskData / MultiTaskData: defaults, validation and clear errors."""

from __future__ import annotations

import pytest
import torch

from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec, stack_labels, to_float


def _data(**overrides: object) -> MultiTaskData:
    x = torch.randn(4, 3)
    args: dict[str, object] = {
        "name": "toy",
        "tasks": (
            TaskSpec("a", "binary", 1, metadata=(0.5, 1.0)),
            TaskSpec("b", "multiclass", 3, metadata=(0.0, 2.0)),
            TaskSpec("c", "regression", 2, weight=0.5, metadata=(1.0, 0.0)),
        ),
        "train": (
            TaskData(x, torch.tensor([0.0, 1, 1, 0])),
            TaskData(x, torch.tensor([0, 2, 1, 0])),
            TaskData(x, torch.randn(4, 2)),
        ),
        "val": (
            TaskData(x[:0], torch.zeros(0)),
            TaskData(x[:0], torch.zeros(0, dtype=torch.long)),
            TaskData(x[:0], torch.zeros(0, 2)),
        ),
        "test": (
            TaskData(x, torch.tensor([1.0, 1, 0, 0])),
            TaskData(x, torch.tensor([1, 1, 1, 0])),
            TaskData(x, torch.randn(4, 2)),
        ),
        "input_shape": (3,),
        "shared_inputs": False,
    }
    args.update(overrides)
    return MultiTaskData(**args)  # type: ignore[arg-type]


def test_defaults_from_kind() -> None:
    assert TaskSpec("m", "multiclass", 10).loss == "cross_entropy"
    assert TaskSpec("m", "multiclass", 10).metrics == ("accuracy",)
    b = TaskSpec("b", "binary", 1)
    assert (b.loss, b.metrics, b.headline) == ("bce", ("auc", "accuracy"), "auc")
    r = TaskSpec("r", "regression", 1, metrics=("mae", "mse"))
    assert (r.loss, r.headline) == ("mse", "mae")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": "", "kind": "binary", "num_outputs": 1}, "non-empty"),
        ({"name": "t", "kind": "ranking", "num_outputs": 1}, "kind must be one of"),
        ({"name": "t", "kind": "binary", "num_outputs": 2}, "kind='multiclass'"),
        ({"name": "t", "kind": "multiclass", "num_outputs": 1}, ">= 2 classes"),
        ({"name": "t", "kind": "binary", "num_outputs": 1, "loss": "mse"}, "use 'bce'"),
        ({"name": "t", "kind": "binary", "num_outputs": 1, "loss": "hinge"}, "loss must be"),
        ({"name": "t", "kind": "regression", "num_outputs": 1, "metrics": ("auc",)}, "'mse'"),
        ({"name": "t", "kind": "binary", "num_outputs": 1, "metrics": ("micro_f1",)}, "label"),
        ({"name": "t", "kind": "binary", "num_outputs": 1, "metrics": ("acc",)}, "accuracy"),
        ({"name": "t", "kind": "binary", "num_outputs": 1, "weight": 0.0}, "weight"),
        ({"name": "t", "kind": "binary", "num_outputs": 1, "metadata": (1.0, "x")}, "numbers"),
        ({"name": "t", "kind": "binary", "num_outputs": 1, "metadata": (float("nan"),)}, "finite"),
    ],
)
def test_task_spec_errors(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        TaskSpec(**kwargs)


def test_multitask_data_accessors() -> None:
    data = _data()
    assert data.num_tasks == 3 and data.task_names == ("a", "b", "c")
    assert data.sizes("train") == (4, 4, 4) and data.sizes("val") == (0, 0, 0)
    assert data.metadata().tolist() == [[0.5, 1.0], [0.0, 2.0], [1.0, 0.0]]
    assert "tasks=3" in repr(data) and "train=12" in repr(data)
    with pytest.raises(ValueError, match="split must be"):
        data.split("dev")  # type: ignore[arg-type]


def test_multitask_data_errors() -> None:
    good = _data()
    x = good.train[0].x
    with pytest.raises(ValueError, match="one per task"):
        _data(val=good.val[:2])
    with pytest.raises(ValueError, match=r"example shape \(3,\), expected input_shape \(4,\)"):
        _data(input_shape=(4,))
    bad_class = (good.train[0], TaskData(x, torch.tensor([0, 3, 1, 0])), good.train[2])
    with pytest.raises(ValueError, match=r"task 'b'.*0\.\.2"):
        _data(train=bad_class)
    bad_binary = (TaskData(x, torch.tensor([0.0, 2, 1, 0])), *good.train[1:])
    with pytest.raises(ValueError, match="0 or 1"):
        _data(train=bad_binary)
    bad_reg = (*good.train[:2], TaskData(x, torch.randn(4)))
    with pytest.raises(ValueError, match=r"float \[n, 2\]"):
        _data(train=bad_reg)
    with pytest.raises(ValueError, match="same length"):
        _data(tasks=(*good.tasks[:2], TaskSpec("c", "regression", 2)))
    with pytest.raises(ValueError, match="unique"):
        _data(tasks=(good.tasks[0], TaskSpec("a", "multiclass", 3, metadata=(0, 0)), good.tasks[2]))
    with pytest.raises(ValueError, match="same x tensor object"):
        _data(shared_inputs=True, train=(TaskData(x.clone(), good.train[0].y), *good.train[1:]))
    with pytest.raises(ValueError, match="rows"):
        TaskData(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="label_set_metrics need"):
        _data(label_set_metrics=("micro_f1",))
    with pytest.raises(ValueError, match="per-task metric"):
        _data(label_set_metrics=("auc",))


def test_shared_inputs_and_helpers() -> None:
    x = torch.randint(0, 256, (3, 1, 2, 2), dtype=torch.uint8)
    y1, y2 = torch.tensor([0.0, 1, 1]), torch.tensor([1.0, 1, 0])
    split = (TaskData(x, y1), TaskData(x, y2))
    data = MultiTaskData(
        "ml",
        (TaskSpec("p", "binary", 1), TaskSpec("q", "binary", 1)),
        split,
        split,
        split,
        (1, 2, 2),
        True,
        label_set_metrics=("hamming_loss",),
    )
    assert data.train[0].x is data.train[1].x
    assert stack_labels(data.test).tolist() == [[0, 1], [1, 1], [1, 0]]
    f = to_float(x)
    assert f.dtype == torch.float32 and torch.allclose(f, x.float() / 255)
    assert to_float(f) is f
