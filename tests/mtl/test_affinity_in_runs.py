"""Task affinity (TAG) inside `manytask run`: the typed `diagnostics` keys, the probe's values
against the definition, a probe that changes nothing of training, bit-identical resume, and the
matrix and grouping in results.json and report.md."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from manytask.config import ConfigError, load_config
from manytask.data import registry as data_registry
from manytask.mtl.diagnostics import AffinityProbe, group_tasks, grouping_score
from manytask.mtl.jacobian import task_jacobian
from manytask.mtl.losses import task_loss
from manytask.nn.backbones import MLP
from manytask.nn.conditioning import MultiHead
from manytask.train import RunContext, RunDir, train

from .test_methods_in_runs import load_toy

CTX = RunContext(device=torch.device("cpu"), progress=False)


@pytest.fixture
def toy(monkeypatch):
    info = data_registry.DatasetInfo("toy3g", "three kinds of task (test)", load_toy)
    monkeypatch.setitem(data_registry.DATASETS, "toy3g", info)
    return info


def config(*overrides: str, method: str = "fixed", backbone_args=None):
    raw = {
        "family": "mtl",
        "name": "toy",
        "device": "cpu",
        "quiet": True,
        "data": {"dataset": "toy3g"},
        "model": {
            "conditioning": "multi_head",
            "backbone_args": backbone_args or {"hidden": [16]},
        },
        "method": {"name": method},
        "train": {
            "steps": 8,
            "batch_size": 8,
            "log_every": 2,
            "checkpoint_every": 3,
            "optim": {"lr": 0.01},
        },
        "diagnostics": {"affinity_every": 2},
    }
    return load_config(raw, list(overrides))


def test_diagnostics_keys_are_typed_and_checked(toy):
    cfg = config("diagnostics.affinity_lr=1e-1", "diagnostics.affinity_groups=2")
    assert cfg.diagnostics.affinity_every == 2
    assert cfg.diagnostics.affinity_lr == pytest.approx(0.1)
    assert cfg.diagnostics.affinity_groups == 2
    with pytest.raises(ConfigError, match="affinity_every"):
        config("diagnostics.afinity_every=3")  # misspelt: the closest key is named
    with pytest.raises(ConfigError, match="affinity_every"):
        config("diagnostics.affinity_every=-1")
    with pytest.raises(ConfigError, match="affinity_lr"):
        config("diagnostics.affinity_lr=0")
    with pytest.raises(ConfigError, match="affinity_every=N"):
        config("diagnostics.affinity_every=0", "diagnostics.affinity_lr=0.1")


def _model(norm: str = "none", dropout: float = 0.0) -> MultiHead:
    torch.manual_seed(0)
    return MultiHead(partial(MLP, 6, hidden=(12,), norm=norm, dropout=dropout), (6,), (3, 1, 2))


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_probe_measures_the_definition_and_leaves_the_model_alone(norm):
    """Z[i, j] = 1 - L_j(theta_sh - lr g_i) / L_j(theta_sh), g_i from K separate backward passes
    on a copy of the model; batch norm in training mode (general Jacobian path) included."""
    data = load_toy()
    model = _model(norm)
    model.train()
    tasks = [0, 1, 2]
    xs = [data.train[t].x[:7] for t in tasks]
    ys = [data.train[t].y[:7] for t in tasks]

    def losses_of(m):
        outs = m.forward_tasks(xs, tasks)
        return torch.stack(
            [task_loss(data.tasks[t], o, y) for t, o, y in zip(tasks, outs, ys, strict=True)]
        )

    reference = copy.deepcopy(model)
    probe = AffinityProbe(every=1, lr=0.05)
    probe.init(3)
    with probe.capture(model, step=0):
        losses = losses_of(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe.measure(losses, model, [7, 7, 7], torch.tensor(tasks), lambda: losses_of(model))
    assert probe.last_path == ("segments" if norm == "none" else "loop")
    for k, v in model.state_dict().items():  # parameters and running statistics unchanged
        assert torch.equal(v, before[k]), k
    losses.sum().backward()  # the graph was kept for the method's backward

    shared = list(reference.shared_parameters())
    start = copy.deepcopy(reference.state_dict())
    base = losses_of(reference)
    jac = task_jacobian(base, shared, method="loop")
    expected = torch.zeros(3, 3)
    for i in range(3):
        reference.load_state_dict(start)
        with torch.no_grad():
            offset = 0
            for p in shared:
                p -= 0.05 * jac[i, offset : offset + p.numel()].view_as(p)
                offset += p.numel()
            expected[i] = 1 - losses_of(reference) / base.detach()
    assert torch.allclose(probe.affinity(), expected, atol=1e-5, rtol=1e-4)


def test_probe_sees_the_same_dropout_masks_and_keeps_the_global_stream():
    data = load_toy()
    model = _model(dropout=0.5)
    model.train()
    xs, ys = [data.train[1].x[:9]], [data.train[1].y[:9]]

    def losses_of():
        (out,) = model.forward_tasks(xs, [1])
        return task_loss(data.tasks[1], out, ys[0]).reshape(1)

    probe = AffinityProbe(every=1, lr=1e-12)  # a vanishing step: Z ~ 0 only with equal masks
    probe.init(3)
    with probe.capture(model, step=0):
        losses = losses_of()
    state = torch.get_rng_state()
    probe.measure(losses, model, [9], torch.tensor([1]), losses_of)
    assert torch.equal(torch.get_rng_state(), state)
    assert abs(float(probe.affinity()[1, 1])) < 1e-5


def test_affinity_in_results_and_report(tmp_path, toy):
    result = train(config("diagnostics.affinity_groups=2"), tmp_path / "run", CTX)
    assert result is not None
    aff = result.results["task_affinity"]
    assert aff["tasks"] == ["digit", "odd", "pos"]
    assert aff["steps_measured"] == 4 and aff["every"] == 2 and aff["lr"] == 0.01
    z = torch.tensor(aff["mean_affinity"])
    assert z.shape == (3, 3) and bool(torch.isfinite(z).all())
    assert bool((z.diagonal() > 0).all())  # a small step on a task's own gradient helps it
    g = aff["grouping"]
    assert len(g["groups"]) <= 2 and sorted(t for grp in g["groups"] for t in grp) == aff["tasks"]
    best = group_tasks(z, 2)
    assert g["predicted_score"] == pytest.approx(best.score, abs=1e-5)
    assert g["all_together_score"] == pytest.approx(grouping_score(z, [[0, 1, 2]]), abs=1e-5)
    records = [r for r in RunDir(tmp_path / "run").metrics() if r.get("split") == "train"]
    assert all("task_affinity" in r for r in records)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Task affinity" in report and "Suggested grouping" in report
    assert (tmp_path / "run" / "task_affinity.png").stat().st_size > 1000


def test_sampled_tasks_leave_unmeasured_pairs_empty(tmp_path, toy):
    result = train(config("train.tasks_per_step=1"), tmp_path / "run", CTX)
    assert result is not None
    rows = result.results["task_affinity"]["mean_affinity"]
    assert all(rows[i][j] is None for i in range(3) for j in range(3) if i != j)
    assert "## Task affinity" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize(
    ("method", "backbone_args"),
    [
        ("upgrad", {"hidden": [16], "dropout": 0.3}),  # gradient method: two captures nest
        ("fixed", {"hidden": [16], "norm": "batch"}),  # batch norm: the general path
    ],
)
def test_the_probe_changes_nothing_of_training(tmp_path, toy, method, backbone_args):
    on = config(method=method, backbone_args=backbone_args)
    off = config("diagnostics.affinity_every=0", method=method, backbone_args=backbone_args)
    torch.manual_seed(123)  # dropout draws from the global stream: start both runs alike
    assert train(on, tmp_path / "on", CTX) is not None
    torch.manual_seed(123)
    assert train(off, tmp_path / "off", CTX) is not None
    a = torch.load(RunDir(tmp_path / "on").final_weights, weights_only=True)["model"]
    b = torch.load(RunDir(tmp_path / "off").final_weights, weights_only=True)["model"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_stop_and_resume_with_affinity_is_bit_identical(tmp_path, toy):
    cfg = config(method="gradvac")
    assert train(cfg, tmp_path / "full", CTX) is not None
    assert train(cfg, tmp_path / "split", CTX, stop_after=4) is None  # between checkpoints
    saved = torch.load(RunDir(tmp_path / "split").last_checkpoint, weights_only=True)
    assert int(saved["parts"]["affinity"]["state"]["measured"]) == 2
    assert train(cfg, tmp_path / "split", CTX, resume=True) is not None
    a = torch.load(RunDir(tmp_path / "full").final_weights, weights_only=True)["model"]
    b = torch.load(RunDir(tmp_path / "split").final_weights, weights_only=True)["model"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    ra = RunDir(tmp_path / "full").read_json("results.json")["task_affinity"]
    rb = RunDir(tmp_path / "split").read_json("results.json")["task_affinity"]
    assert ra == rb


def test_a_checkpoint_of_other_probe_settings_is_refused():
    probe = AffinityProbe(every=2, lr=0.1)
    probe.init(3)
    other = AffinityProbe(every=3, lr=0.1)
    other.init(3)
    with pytest.raises(ValueError, match="every=2"):
        other.load_state_dict(probe.state_dict())
    with pytest.raises(ValueError, match="every must be"):
        AffinityProbe(every=0, lr=0.1)
    with pytest.raises(ValueError, match="lr must be"):
        AffinityProbe(every=1, lr=-1.0)
    assert repr(probe) == "AffinityProbe(every=2, lr=0.1, max_groups=None, seed=0)"
