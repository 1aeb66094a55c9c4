"""MANN (black-box adaptation with an LSTM), its LRUA memory, Omniglot sequences and
accuracy by instance number: each checked against a naive construction of what the papers say.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from manytask.cli import main
from manytask.config import load_config
from manytask.data import ImageStore
from manytask.data.omniglot_sequences import FixedSequences, OmniglotSequences, SequenceSampler
from manytask.meta import MANN
from manytask.meta.lrua import (
    LRUAController,
    cosine_similarity,
    least_used,
    lrua_step,
    write_weights,
)
from manytask.meta.mann import label_code, sequence_inputs
from manytask.nn import Flatten, init_parameters
from manytask.objectives import get_objective, instance_numbers
from manytask.recipes import recipe_path
from manytask.typed import ConfigError

SHAPE = (1, 4, 4)
PIX = 16


def _mann(ways=3, seed=0, **kw) -> MANN:
    kw.setdefault("hidden", 8)
    return init_parameters(MANN(Flatten(SHAPE), SHAPE, ways=ways, **kw), seed)


def _lrua_kw() -> dict:
    return {"memory": "lrua", "memory_slots": 6, "memory_width": 3, "read_heads": 2}


def _batch(t=3, n=3, k=2, q=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(t, n * k, *SHAPE, generator=g)
    sy = torch.stack([torch.randperm(n * k, generator=g) % n for _ in range(t)])
    qx = torch.rand(t, n * q, *SHAPE, generator=g)
    return sx, sy, qx


def _capture(module: nn.Module) -> list[torch.Tensor]:
    """The first positional input of every call of ``module``."""
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    return seen


# --- shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize("memory", ["none", "lrua"])
@pytest.mark.parametrize("queries", ["independent", "sequential"])
def test_classification_shapes_and_gradients(memory, queries):
    kw = _lrua_kw() if memory == "lrua" else {}
    kw["memory"] = memory
    net = _mann(queries=queries, **kw)
    sx, sy, qx = _batch(t=2, n=3, k=2, q=4)
    out = net(sx, sy, qx, ways=3)
    assert out.shape == (2, 12, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("memory", ["none", "lrua"])
def test_online_predicts_every_step(memory):
    kw = _lrua_kw() if memory == "lrua" else {}
    net = _mann(protocol="online", memory=memory, **{k: v for k, v in kw.items() if k != "memory"})
    sx, sy, _ = _batch(t=2, n=3, k=4)
    assert net(sx, sy, sx, ways=3).shape == (2, 12, 3)


@pytest.mark.parametrize("protocol", ["episodic", "online"])
def test_regression_shapes(protocol):
    net = init_parameters(MANN(Flatten((1,)), (1,), out_features=2, hidden=8, protocol=protocol), 0)
    sx, sy = torch.rand(4, 5, 1), torch.rand(4, 5, 2)
    qx = sx if protocol == "online" else torch.rand(4, 7, 1)
    assert net(sx, sy, qx).shape == (4, 5 if protocol == "online" else 7, 2)


def test_repr_shows_hyperparameters():
    text = repr(_mann(**_lrua_kw(), protocol="online"))
    for part in ("ways=3", "hidden=8", "memory='lrua'", "protocol='online'", "slots=6", "heads=2"):
        assert part in text


# --- the sequence layout, against a naive per-task construction -----------------------------


def _naive_step_inputs(sx, sy, ways):
    """Per task, per support example: flattened pixels then the one-hot label."""
    rows = []
    for t in range(sx.shape[0]):
        steps = []
        for j in range(sx.shape[1]):
            one_hot = [1.0 if c == int(sy[t, j]) else 0.0 for c in range(ways)]
            steps.append(torch.cat([sx[t, j].reshape(-1), torch.tensor(one_hot)]))
        rows.append(torch.stack(steps))
    return torch.stack(rows)


def test_episodic_layout_support_with_one_hot_labels_then_queries_with_zero_labels():
    net = _mann()
    seen = _capture(net.core)
    sx, sy, qx = _batch(t=2, n=3, k=2, q=2)
    net(sx, sy, qx, ways=3)
    support_steps, query_steps = seen
    torch.testing.assert_close(support_steps, _naive_step_inputs(sx, sy, 3))
    # Each query is one step [T*M, 1, D]: its pixels, then a zero label.
    expect = torch.cat([qx.reshape(12, 1, PIX), torch.zeros(12, 1, 3)], -1)
    torch.testing.assert_close(query_steps, expect)


def test_independent_queries_equal_a_naive_loop_over_tasks_and_queries():
    # phi_i = LSTM state after the support set; each query is one step from phi_i.
    net = _mann(layers=2)
    sx, sy, qx = _batch(t=3, n=3, k=2, q=2)
    out = net(sx, sy, qx, ways=3)
    steps = _naive_step_inputs(sx, sy, 3)
    for t in range(3):
        _, phi = net.core.lstm(steps[t : t + 1])
        for m in range(qx.shape[1]):
            x = torch.cat([qx[t, m].reshape(1, 1, -1), torch.zeros(1, 1, 3)], -1)
            h, _ = net.core.lstm(x, phi)
            torch.testing.assert_close(out[t, m], net.readout(h[0, 0]), rtol=1e-5, atol=1e-5)


def test_independent_queries_do_not_see_each_other_but_sequential_ones_do():
    sx, sy, qx = _batch(t=2, n=3, k=1, q=2)
    other = qx.clone()
    other[:, 0] = torch.rand_like(other[:, 0])
    for mode, same in (("independent", True), ("sequential", False)):
        net = _mann(queries=mode)
        a, b = net(sx, sy, qx, ways=3), net(sx, sy, other, ways=3)
        assert torch.equal(a[:, 1:], b[:, 1:]) == same, mode


def test_sequential_queries_equal_a_naive_sequence():
    net = _mann(queries="sequential")
    sx, sy, qx = _batch(t=2, n=3, k=2, q=1)
    out = net(sx, sy, qx, ways=3)
    for t in range(2):
        q = torch.cat([qx[t].reshape(3, -1), torch.zeros(3, 3)], -1)
        seq = torch.cat([_naive_step_inputs(sx[t : t + 1], sy[t : t + 1], 3)[0], q])
        h, _ = net.core.lstm(seq.unsqueeze(0))
        torch.testing.assert_close(out[t], net.readout(h[0, -3:]), rtol=1e-5, atol=1e-5)


def test_online_labels_arrive_one_step_late():
    net = _mann(protocol="online")
    seen = _capture(net.core)
    sx, sy, _ = _batch(t=2, n=3, k=3)
    net(sx, sy, sx, ways=3)
    steps = seen[0]
    naive = _naive_step_inputs(sx, sy, 3)
    torch.testing.assert_close(steps[..., :PIX], naive[..., :PIX])  # x_t at step t
    assert torch.equal(steps[:, 0, PIX:], torch.zeros(2, 3))  # no label before the first step
    torch.testing.assert_close(steps[:, 1:, PIX:], naive[:, :-1, PIX:])  # y_{t-1} at step t


@pytest.mark.parametrize("memory", ["none", "lrua"])
def test_online_prediction_at_step_t_uses_only_earlier_labels(memory):
    kw = _lrua_kw() if memory == "lrua" else {}
    kw["memory"] = memory
    net = _mann(protocol="online", **kw)
    sx, sy, _ = _batch(t=2, n=3, k=3)
    base = net(sx, sy, sx, ways=3)
    t = 4
    sy2, sx2 = sy.clone(), sx.clone()
    sy2[:, t] = (sy2[:, t] + 1) % 3
    sx2[:, t] = torch.rand_like(sx2[:, t])
    with_label = net(sx, sy2, sx, ways=3)
    with_image = net(sx2, sy, sx2, ways=3)
    assert torch.equal(with_label[:, : t + 1], base[:, : t + 1])  # y_t is not seen until t+1
    assert not torch.allclose(with_label[:, t + 1], base[:, t + 1])
    assert torch.equal(with_image[:, :t], base[:, :t])  # x_t is seen at step t
    assert not torch.allclose(with_image[:, t], base[:, t])


def test_label_code_and_delay():
    y = torch.tensor([[2, 0, 1]])
    code = label_code(y, 3)
    assert code.tolist() == [[[0, 0, 1], [1, 0, 0], [0, 1, 0]]]
    targets = torch.rand(1, 3, 2)
    assert label_code(targets, None) is targets
    steps = sequence_inputs(torch.zeros(1, 3, 1), code, delay=True)
    assert steps[0, :, 1:].tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0]]


def test_support_order_matters():
    net = _mann()
    sx, sy, qx = _batch(t=1, n=3, k=2)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    a = net(sx, sy, qx, ways=3)
    b = net(sx[:, perm], sy[:, perm], qx, ways=3)
    assert not torch.allclose(a, b)


# --- LRUA: the read/write rules of Santoro et al. (2016), element by element ------------------


def test_cosine_similarity_is_the_papers_K():
    g = torch.Generator().manual_seed(0)
    keys, mem = torch.randn(2, 3, 5, generator=g), torch.randn(2, 7, 5, generator=g)
    got = cosine_similarity(keys, mem)
    for b in range(2):
        for h in range(3):
            for i in range(7):
                k, m = keys[b, h], mem[b, i]
                want = float(k @ m) / (float(k.norm()) * float(m.norm()))
                assert math.isclose(float(got[b, h, i]), want, rel_tol=1e-5, abs_tol=1e-6)


def test_least_used_marks_the_n_smallest_usages():
    g = torch.Generator().manual_seed(1)
    usage = torch.rand(4, 9, generator=g)
    for n in (1, 2, 4):
        lu = least_used(usage, n)
        for b in range(4):
            nth = sorted(usage[b].tolist())[n - 1]  # m(w^u, n)
            want = [1.0 if u <= nth else 0.0 for u in usage[b].tolist()]
            assert lu[b].tolist() == want
    # Ties (all usages 0 at the start): exactly n slots, the lowest indices.
    assert least_used(torch.zeros(1, 5), 2).tolist() == [[1, 1, 0, 0, 0]]


def test_write_weights_interpolate_previous_reads_and_least_used():
    g = torch.Generator().manual_seed(2)
    prev_read = F.softmax(torch.randn(2, 3, 6, generator=g), -1)
    lu = least_used(torch.rand(2, 6, generator=g), 3)
    alpha = torch.randn(2, 3, generator=g)
    ww = write_weights(alpha, prev_read, lu)
    for b in range(2):
        for h in range(3):
            s = 1 / (1 + math.exp(-float(alpha[b, h])))
            torch.testing.assert_close(ww[b, h], s * prev_read[b, h] + (1 - s) * lu[b])


def _naive_lrua_step(memory, usage, prev_read, keys, gate, decay):
    """The paper's step for one batch element, written with Python loops."""
    slots, width = memory.shape
    heads = keys.shape[0]
    order = sorted(range(slots), key=lambda i: (float(usage[i]), i))
    lu = [1.0 if i in order[:heads] else 0.0 for i in range(slots)]
    mem = memory.clone()
    mem[order[0]] = 0.0  # the least used slot is cleared before writing
    ww = torch.zeros(heads, slots)
    for h in range(heads):
        s = 1 / (1 + math.exp(-float(gate[h])))
        for i in range(slots):
            ww[h, i] = s * prev_read[h, i] + (1 - s) * lu[i]
    for i in range(slots):
        for h in range(heads):
            mem[i] = mem[i] + ww[h, i] * keys[h]
    wr = torch.zeros(heads, slots)
    reads = torch.zeros(heads, width)
    for h in range(heads):
        sims = [float(keys[h] @ mem[i]) / (float(keys[h].norm()) * float(mem[i].norm()) + 1e-8)
                for i in range(slots)]  # fmt: skip
        z = sum(math.exp(v) for v in sims)
        for i in range(slots):
            wr[h, i] = math.exp(sims[i]) / z
            reads[h] += wr[h, i] * mem[i]
    new_usage = decay * usage + wr.sum(0) + ww.sum(0)
    return mem, new_usage, wr, reads


def test_lrua_step_matches_the_equations():
    g = torch.Generator().manual_seed(3)
    b, slots, width, heads = 2, 7, 4, 3
    memory = torch.randn(b, slots, width, generator=g)
    usage = torch.rand(b, slots, generator=g)
    prev_read = F.softmax(torch.randn(b, heads, slots, generator=g), -1)
    keys = torch.randn(b, heads, width, generator=g)
    gate = torch.randn(b, heads, generator=g)
    got = lrua_step(memory, usage, prev_read, keys, gate, 0.9)
    for i in range(b):
        want = _naive_lrua_step(memory[i], usage[i], prev_read[i], keys[i], gate[i], 0.9)
        for a, w in zip(got, want, strict=True):
            torch.testing.assert_close(a[i], w, rtol=1e-5, atol=1e-5)


def test_lrua_gate_chooses_between_last_read_and_least_used_slots():
    memory, usage = torch.randn(1, 5, 2), torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.7]])
    prev_read = F.softmax(torch.randn(1, 1, 5), -1)
    keys = torch.randn(1, 1, 2)
    # sigmoid(alpha) ~ 0: write to the least used slot (1), which was cleared first.
    mem, *_ = lrua_step(memory, usage, prev_read, keys, torch.tensor([[-50.0]]), 1.0)
    torch.testing.assert_close(mem[0, 1], keys[0, 0])
    torch.testing.assert_close(mem[0, [0, 2, 3, 4]], memory[0, [0, 2, 3, 4]])
    # sigmoid(alpha) ~ 1: write where the head last read.
    mem, *_ = lrua_step(memory, usage, prev_read, keys, torch.tensor([[50.0]]), 1.0)
    cleared = memory.clone()
    cleared[0, 1] = 0
    torch.testing.assert_close(mem[0], cleared[0] + prev_read[0, 0].unsqueeze(1) * keys[0, 0])


def test_lrua_controller_state_continues_a_sequence():
    core = init_parameters(LRUAController(5, hidden=6, slots=4, width=3, heads=2), 0)
    x = torch.randn(2, 6, 5)
    whole, _ = core(x)
    first, state = core(x[:, :4])
    rest, _ = core(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)


# --- errors --------------------------------------------------------------------------------


def test_errors_name_the_problem():
    net = _mann(ways=3)
    sx, sy, qx = _batch(t=2, n=3, k=1)
    with pytest.raises(ValueError, match=r"ways=5 but this MANN was built for 3-way"):
        net(sx, sy, qx, ways=5)
    with pytest.raises(ValueError, match=r"labels 0\.\.3 but this MANN is 3-way"):
        net(sx, torch.tensor([[0, 1, 3], [0, 1, 2]]), qx)
    with pytest.raises(ValueError, match="built for 3-way classification but got a regression"):
        net(sx, torch.rand(2, 3, 1), qx)
    with pytest.raises(ValueError, match="query_x examples have shape"):
        net(sx, sy, torch.rand(2, 3, 1, 5, 5), ways=3)
    with pytest.raises(ValueError, match="use protocol='online'"):
        net(sx, sy, sx, ways=3)
    with pytest.raises(ValueError, match="query_x must be that sequence"):
        _mann(protocol="online")(sx, sy, qx[:, :2], ways=3)
    with pytest.raises(ValueError, match="exactly one"):
        MANN(Flatten(SHAPE), SHAPE)
    with pytest.raises(ValueError, match="memory must be one of"):
        MANN(Flatten(SHAPE), SHAPE, ways=2, memory="ntm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heads <= slots"):
        LRUAController(4, slots=2, heads=3)


def test_config_refuses_a_set_learner_on_sequences_and_suggests_misspelt_arguments(tmp_path):
    with pytest.raises(ConfigError, match="protocol: online"):
        load_config(recipe_path("santoro/mann-lrua"), ["model.args.protocol=episodic"])
    # ProtoNet would find every query in the support set with its label.
    recipe = yaml.safe_load(recipe_path("santoro/lstm").read_text())
    recipe["model"] = {"learner": "protonet", "encoder": "conv4"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="protocol: online"):
        load_config(tmp_path / "r.yaml")
    with pytest.raises(ConfigError, match="Did you mean 'hidden'"):
        load_config(recipe_path("omniglot/mann-2w1s"), ["model.args.hiden=64"])
    cfg = load_config(recipe_path("omniglot/mann-2w1s"), ["train.optim.lr=1e-3"])
    assert cfg.train.optim.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match=r"eval\.episode\.ways=3 but train\.episode\.ways=2"):
        load_config(recipe_path("omniglot/mann-2w1s"), ["eval.episode.ways=3"])


# --- accuracy by instance number --------------------------------------------------------------


def test_instance_accuracy_matches_a_brute_force_count():
    g = torch.Generator().manual_seed(4)
    t, length, n = 6, 40, 4
    labels = torch.randint(n, (t, length), generator=g)
    pred = torch.randn(t, length, n, generator=g)
    pred[:, ::3] = F.one_hot(labels[:, ::3], n) * 5.0  # some steps right for sure
    obj = get_objective("instance_accuracy")
    got = obj.breakdown(pred, labels)
    for task in range(t):
        counts: dict[int, int] = {}
        right: dict[int, list[bool]] = {}
        for s in range(length):
            y = int(labels[task, s])
            counts[y] = counts.get(y, 0) + 1
            ok = int(pred[task, s].argmax()) == y
            right.setdefault(counts[y], []).append(ok)
        for k in range(1, 11):
            value = float(got[f"instance_{k}"][task])
            if k in right:
                assert value == pytest.approx(100 * sum(right[k]) / len(right[k]))
            else:
                assert math.isnan(value)
    assert obj.per_task(pred, labels).shape == (t,)
    assert instance_numbers(torch.tensor([[1, 1, 0, 1]])).tolist() == [[1, 2, 1, 3]]


# --- Omniglot sequences ------------------------------------------------------------------------


def _store(classes=12, instances=10, size=6) -> ImageStore:
    """Every image unique: pixel (0, 0) = class, pixel (0, 1) = instance."""
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (classes, instances, size, size), generator=g, dtype=torch.uint8)
    images[:, :, 0, 0] = torch.arange(classes, dtype=torch.uint8).unsqueeze(1)
    images[:, :, 0, 1] = torch.arange(instances, dtype=torch.uint8)
    return ImageStore(
        images=images, class_names=tuple(f"A/c{i}" for i in range(classes)), alphabets=("A",),
        alphabet_of=torch.zeros(classes, dtype=torch.long),
        drawers=torch.zeros(classes, instances, dtype=torch.long), source="test",
    )  # fmt: skip


def test_sequences_hold_k_distinct_instances_of_each_class_in_random_order():
    store = _store()
    ep = SequenceSampler(store, ways=4, shots=5, tasks=8, seed=0).sample()
    assert ep.query_x is ep.support_x and ep.query_y is ep.support_y
    assert ep.support_x.shape == (8, 20, 1, 6, 6)
    positions = []
    for t in range(8):
        assert torch.bincount(ep.support_y[t], minlength=4).tolist() == [5] * 4
        seen = set()
        for j in range(20):
            u8 = (ep.support_x[t, j, 0] * 255).round().to(torch.uint8)
            c, i = int(u8[0, 0]), int(u8[0, 1])
            assert torch.equal(u8, store.images[c, i])
            assert c == int(ep.classes[t, ep.support_y[t, j]])  # the label names its class
            seen.add((c, i))
        assert len(seen) == 20  # distinct instances
        positions.append(ep.support_y[t].tolist())
    assert len({tuple(p) for p in positions}) == 8  # orders differ between tasks


def test_sequence_stream_resumes_and_fixed_sequences_ignore_batch_size():
    store = _store()
    s = SequenceSampler(store, ways=3, shots=4, tasks=2, seed=1)
    state = s.state_dict()
    a = s.sample()
    s.load_state_dict(state)
    assert torch.equal(s.sample().support_x, a.support_x)
    one = torch.cat([e.support_x for e in FixedSequences(store, 3, 4, 7, seed=2, batch_size=3)])
    two = torch.cat([e.support_x for e in FixedSequences(store, 3, 4, 7, seed=2, batch_size=7)])
    assert torch.equal(one, two)


def test_sequence_source_checks_shots_and_queries():
    src = OmniglotSequences(source="embedded", rotations=(0,))
    with pytest.raises(ValueError, match="set queries=10"):
        src.sampler("train", 5, 10, 5, 2, seed=0)
    with pytest.raises(ValueError, match=">= 2"):
        src.fixed("test", 5, 1, 1, 10, seed=0, batch_size=5)


# --- end to end through `manytask run` -----------------------------------------------------------


def _tiny(recipe: str, tmp_path, *extra: str) -> dict:
    out = tmp_path / recipe.replace("/", "-")
    args = ["run", recipe, "quiet=true", "device=cpu", *extra, "--out", str(out)]
    assert main(args) == 0
    return json.loads((out / "results.json").read_text())


def test_santoro_recipe_runs_and_reports_accuracy_by_instance(tmp_path):
    results = _tiny(
        "santoro/mann-lrua", tmp_path, "data.source=embedded", "train.episodes=2",
        "train.episode.tasks=2", "train.episode.shots=3", "train.episode.queries=3",
        "model.args.hidden=8", "model.args.memory_slots=8",
        "model.args.memory_width=4", "model.args.read_heads=2", "eval.episodes=6",
        "train.log_every=1",
    )  # fmt: skip
    test = results["test"]
    assert results["objective"] == "instance_accuracy" and test["tasks"] == 6
    assert set(test["breakdown"]) == {f"instance_{k}" for k in range(1, 11)}
    assert all(v["tasks"] == 6 for v in test["breakdown"].values())
    report = (tmp_path / "santoro-mann-lrua" / "report.md").read_text()
    assert "| instance_2 |" in report and report.index("instance_2 |") < report.index(
        "instance_10 |"
    )


def test_homework_recipe_runs_and_loads_back(tmp_path):
    import manytask

    results = _tiny(
        "omniglot/mann-2w1s", tmp_path, "data.source=embedded", "train.episodes=3",
        "train.episode.tasks=4", "train.val_every=0", "train.keep=last", "eval.episodes=8",
        "train.log_every=1",
    )  # fmt: skip
    assert results["learner"] == "mann" and results["test"]["tasks"] == 8
    assert "breakdown" not in results["test"]
    learner = manytask.load_run(tmp_path / "omniglot-mann-2w1s")
    assert isinstance(learner, MANN) and learner.ways == 2


def test_sinusoid_recipe_runs_and_reports_mse(tmp_path):
    results = _tiny(
        "sinusoid/mann-k5", tmp_path, "train.episodes=3", "train.val_every=0",
        "eval.episodes=10", "train.log_every=1",
    )  # fmt: skip
    assert results["test"]["metric"] == "mse" and results["test"]["tasks"] == 10


def test_a_stopped_sequence_run_resumes_to_the_same_weights_and_breakdown(tmp_path):
    from manytask.train import RunDir, load_run, train

    cfg = load_config(
        recipe_path("santoro/lstm"),
        [
            "data.source=embedded", "train.episodes=4", "train.episode.tasks=2",
            "train.episode.shots=3", "train.episode.queries=3", "train.checkpoint_every=3",
            "train.log_every=1", "model.args.hidden=8", "eval.episodes=4", "quiet=true",
            "device=cpu",
        ],
    )  # fmt: skip
    full = train(cfg, tmp_path / "full")
    assert train(cfg, tmp_path / "split", stop_after=2) is None
    resumed = train(cfg, tmp_path / "split", resume=True)
    assert full is not None and resumed is not None
    a, b = load_run(tmp_path / "full").state_dict(), load_run(tmp_path / "split").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    test_a = RunDir(tmp_path / "full").read_json("results.json")["test"]
    assert test_a == RunDir(tmp_path / "split").read_json("results.json")["test"]
