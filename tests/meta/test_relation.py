"""Relation Networks: eq. 1 and the K-shot sum against naive per-task, per-pair computations."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import manytask
from manytask.cli import main
from manytask.config import load_config
from manytask.meta import RelationNet
from manytask.meta.relation import RelationModule, class_feature_maps
from manytask.nn import Conv4, init_parameters
from manytask.objectives import get_objective
from manytask.recipes import list_recipes, recipe_path
from manytask.train.meta import build_run_learner


def _maps_encoder(hidden=4):
    return Conv4(
        hidden=hidden, pool=(True, True, False, False), padding=(0, 0, 1, 1), flatten=False
    )


def _net(hidden=4, **kwargs):
    net = RelationNet(_maps_encoder(hidden), (1, 28, 28), hidden=6, relation_dim=3, **kwargs)
    return init_parameters(net, 0).double()


def _episode(t=2, n=3, k=2, q=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(t, n * k, 1, 28, 28, generator=g, dtype=torch.float64)
    sy = torch.stack([torch.randperm(n * k, generator=g) % n for _ in range(t)])
    qx = torch.rand(t, n * q, 1, 28, 28, generator=g, dtype=torch.float64)
    return sx, sy, qx


def _naive_score(g: RelationModule, class_map, query_map):
    """g(C(f(x_i), f(x_j))) for one pair, on the concatenated maps, the module in eval mode."""
    z = F.conv2d(torch.cat([class_map, query_map])[None], g.conv.weight, g.conv.bias, padding=1)
    z = g.block2(g.rest_of_block1(z))
    return torch.sigmoid(g.fc(z))[0, 0]


# -- the paper's equations ---------------------------------------------------------------------


def test_class_maps_are_the_sum_of_their_shots():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 6, 3, 4, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([[2, 0, 1, 0, 2, 1], [1, 1, 0, 2, 0, 2]])
    summed = class_feature_maps(maps, labels, 3)
    mean = class_feature_maps(maps, labels, 3, "mean")
    assert summed.shape == (2, 3, 3, 4, 4)
    for t in range(2):
        for c in range(3):
            members = [maps[t, i] for i in range(6) if labels[t, i] == c]
            torch.testing.assert_close(summed[t, c], sum(members))
            torch.testing.assert_close(mean[t, c], sum(members) / len(members))


def test_scores_equal_the_relation_module_on_each_concatenated_pair():
    # Eq. 1 per task, per (query, class) pair: embed each image alone, sum each class's shots,
    # concatenate [class; query] channels, run the relation module (all in eval mode).
    sx, sy, qx = _episode()
    net = _net().eval()
    scores = net(sx, sy, qx, ways=3)
    assert scores.shape == (2, 6, 3)
    with torch.no_grad():
        for t in range(2):
            f_s = [net.encoder(x[None])[0] for x in sx[t]]
            f_q = [net.encoder(x[None])[0] for x in qx[t]]
            classes = [sum(f_s[i] for i in range(6) if sy[t, i] == c) for c in range(3)]
            for j in range(6):
                for c in range(3):
                    expect = _naive_score(net.relation, classes[c], f_q[j])
                    torch.testing.assert_close(scores[t, j, c], expect, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("side", "pools"), [(5, (True, True)), (3, (True, False)), (1, (False,) * 2)]
)
def test_split_first_convolution_is_exact_with_batch_statistics_too(side, pools):
    # In training mode batch norm normalises over all pairs: the split computation must give
    # the same pairs, hence the same statistics, as convolving every concatenated pair.
    g = torch.Generator().manual_seed(3)
    module = RelationModule(channels=5, size=(side, side), hidden=7, relation_dim=3)
    module = module.double().train()
    assert module.pools == pools  # a block pools while its maps are at least 2x2
    cm = torch.randn(2, 3, 5, side, side, generator=g, dtype=torch.float64)
    qm = torch.randn(2, 4, 5, side, side, generator=g, dtype=torch.float64)
    out = module(cm, qm)
    pairs = torch.cat(
        [cm[:, None].expand(-1, 4, -1, -1, -1, -1), qm[:, :, None].expand(-1, -1, 3, -1, -1, -1)],
        dim=3,
    ).flatten(0, 2)  # [T*M*N, 2C, H, W], query-major like the scores
    z = F.conv2d(pairs, module.conv.weight, module.conv.bias, padding=1)
    naive = torch.sigmoid(module.fc(module.block2(module.rest_of_block1(z)))).view(2, 4, 3)
    torch.testing.assert_close(out, naive)


def test_scores_lie_in_zero_one_and_train_towards_one_hot_targets():
    sx, sy, qx = (x.float() if x.is_floating_point() else x for x in _episode(t=2, n=3, k=1))
    qy = torch.arange(3).repeat_interleave(2).repeat(2, 1)
    torch.manual_seed(0)  # test-only: the module init uses the global RNG
    net = RelationNet(_maps_encoder(8), (1, 28, 28), hidden=8, relation_dim=4)
    objective = get_objective("one_hot_mse")
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(12):
        scores = net(sx, sy, qx, ways=3)
        assert bool(((scores >= 0) & (scores <= 1)).all())
        loss = objective.loss(scores, qy)
        expect = ((scores - F.one_hot(qy, 3).float()) ** 2).mean()  # eq. 3 (averaged)
        torch.testing.assert_close(loss, expect)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]  # 2/9 = predicting 1/3 everywhere; learned: lower
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_k_shots_are_summed_not_averaged():
    # K copies of one image: the class map is K times the image's map under "sum" (so the
    # scores change), and the image's map itself under "mean" (so they do not).
    sx, sy, qx = _episode(t=1, n=2, k=1, q=2)
    twice_x, twice_y = sx.repeat_interleave(2, dim=1), sy.repeat_interleave(2, dim=1)
    for reduce, same in (("sum", False), ("mean", True)):
        net = _net(class_maps=reduce).eval()
        with torch.no_grad():
            one, two = net(sx, sy, qx, ways=2), net(twice_x, twice_y, qx, ways=2)
            maps = net.encoder(sx[0])
            classes = class_feature_maps(maps[None].repeat_interleave(2, 1), twice_y, 2, reduce)
        assert torch.allclose(one, two) is same
        torch.testing.assert_close(classes[0], maps * (2.0 if reduce == "sum" else 1.0))


def test_support_order_does_not_matter_and_labels_permute_the_scores():
    sx, sy, qx = _episode(t=2, n=3, k=2)
    net = _net().eval()
    assert net.order_invariant
    perm = torch.tensor([3, 5, 0, 1, 4, 2])
    with torch.no_grad():
        base = net(sx, sy, qx, ways=3)
        torch.testing.assert_close(net(sx[:, perm], sy[:, perm], qx, ways=3), base)
        relabel = torch.tensor([2, 0, 1])
        torch.testing.assert_close(net(sx, relabel[sy], qx, ways=3)[..., relabel], base)


# -- errors and repr ----------------------------------------------------------------------------


def test_an_encoder_of_embeddings_gives_one_by_one_maps():
    net = RelationNet(Conv4(hidden=8), (1, 28, 28), hidden=6, relation_dim=3)
    assert net.map_shape == (8, 1, 1) and net.relation.pools == (False, False)
    sx, sy, qx = (x.float() if x.is_floating_point() else x for x in _episode(k=1))
    assert net(sx, sy, qx, ways=3).shape == (2, 6, 3)


def test_bad_encoders_and_arguments_are_clear_errors():

    with pytest.raises(ValueError, match=r"\[B, 2, 3, 4, 5\].*flatten: false"):
        RelationNet(nn.Identity(), (2, 3, 4, 5))
    for bad in ({"hidden": 0}, {"relation_dim": -1}, {"hidden": True}):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            RelationNet(_maps_encoder(), (1, 28, 28), **bad)
    with pytest.raises(ValueError, match="class_maps must be one of"):
        RelationNet(_maps_encoder(), (1, 28, 28), class_maps="max")  # type: ignore[arg-type]
    net = RelationNet(_maps_encoder(), (1, 28, 28))
    sx, qx = torch.rand(1, 4, 1, 28, 28), torch.rand(1, 2, 1, 28, 28)
    with pytest.raises(ValueError, match="at least one support example"):
        net(sx, torch.tensor([[0, 0, 2, 2]]), qx, ways=3)
    with pytest.raises(ValueError, match="RelationNet classifies"):
        net(sx, torch.rand(1, 4, 1), qx)
    with pytest.raises(ValueError, match=r"built for examples of shape \(1, 28, 28\)"):
        net(torch.rand(1, 2, 1, 32, 32), torch.tensor([[0, 1]]), torch.rand(1, 2, 1, 32, 32))


def test_repr_shows_the_hyper_parameters():
    text = repr(RelationNet(_maps_encoder(), (1, 28, 28), hidden=16, relation_dim=8))
    assert "map_shape=(4, 5, 5), class_maps='sum'" in text
    assert "channels=4, size=(5, 5), hidden=16, relation_dim=8" in text
    assert "pool=(True, True, False, False), padding=(0, 0, 1, 1), flatten=False" in text


# -- recipes and the command line ------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in list_recipes() if "/relation-" in n])
def test_relation_recipes_build_the_papers_network(name):
    cfg = load_config(recipe_path(name))
    learner = build_run_learner(cfg, cfg.source()).eval()
    e = cfg.eval.episode
    assert e.ways == cfg.train.episode.ways and e.shots == cfg.train.episode.shots
    assert cfg.objective == "one_hot_mse" and learner.class_maps == "sum"
    assert learner.map_shape == (64, 5, 5)  # Figure 2 with the authors' padding
    assert learner.relation.fc[1].in_features == 64  # the paper's H = 64 for Omniglot
    sx, qx = torch.rand(1, e.ways * e.shots, 1, 28, 28), torch.rand(1, e.ways, 1, 28, 28)
    sy = torch.arange(e.ways).repeat_interleave(e.shots)[None]
    with torch.no_grad():
        assert learner(sx, sy, qx, ways=e.ways).shape == (1, e.ways, e.ways)


def test_tiny_manytask_run_then_load_run_scores_the_same(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith(("train.val_", "model.encoder_"))]
    overrides += ["train.val_every=0", "model.encoder_args.hidden=8", "model.args.hidden=8"]
    assert main(["run", "omniglot/relation-5w1s", *overrides, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["learner"] == "relationnet" and results["objective"] == "one_hot_mse"
    learner = manytask.load_run(out)
    assert isinstance(learner, RelationNet) and learner.map_shape == (8, 5, 5)
    per_task = json.loads((out / "test_tasks.json").read_text())["per_task"]
    assert main(["eval", str(out), "--quiet"]) == 0
    again = json.loads(next(out.glob("eval-5w1s-*.json")).read_text())
    assert again["mean"] == pytest.approx(sum(per_task) / len(per_task))


def test_bad_constructor_arguments_are_one_line_errors_before_the_run_folder(tmp_path, capsys):
    # Found by use: a constructor's ValueError printed a traceback, as if it were a bug.
    out = tmp_path / "r"
    args = ["run", "omniglot/relation-5w1s", "data.source=embedded", "quiet=true"]
    assert main([*args, "model.args.relation_dim=0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model.args: learner 'relationnet': RelationNet: relation_dim must be" in err
    assert "Traceback" not in err
    assert main([*args, "model.encoder_args.pool=[true,false]", "--out", str(out)]) == 2
    assert "model.encoder_args: encoder 'conv4': Conv4: pool must list 4" in capsys.readouterr().err
    assert not out.exists()


def test_objective_auto_trains_relation_scores_on_one_hot_mse():
    # Found when merging: `objective: auto` picked cross-entropy for RelationNet, whose sigmoid
    # scores the paper trains with MSE against one-hot labels; the recipes had to name it.
    from manytask.config import load_config
    from manytask.recipes import recipe_path

    cfg = load_config(recipe_path("omniglot/relation-5w1s"), ["objective=auto"])
    assert cfg.objective == "one_hot_mse"
    assert load_config(recipe_path("omniglot/protonet-5w1s")).objective == "classification"
    explicit = load_config(recipe_path("omniglot/relation-5w1s"), ["objective=classification"])
    assert explicit.objective == "classification"
