import pytest

from manytask.config import ConfigError, RunConfig, apply_overrides, load_config
from manytask.recipes import list_recipes, recipe_path, resolve_recipe


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_validates(name):
    cfg = load_config(recipe_path(name))
    assert isinstance(cfg, RunConfig)
    e = cfg.eval.episode
    assert e.ways >= 2 and e.shots >= 1
    assert cfg.train.episodes > 0


def test_recipes_exist_for_the_paper_protocols():
    names = set(list_recipes())
    for want in ["protonet-5w1s", "protonet-5w5s", "protonet-20w1s", "protonet-20w5s"]:
        assert f"omniglot/{want}" in names


def test_unknown_key_names_it_and_the_closest_match():
    with pytest.raises(ConfigError) as err:
        load_config({"train": {"episdes": 3}})
    msg = str(err.value)
    assert "train.episdes" in msg and "train.episodes" in msg and "Did you mean" in msg


def test_bad_literal_lists_the_valid_values():
    with pytest.raises(ConfigError, match=r"'vinyals'.*'lake'"):
        load_config({"data": {"split": "vinyal"}})


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match=r"train\.episodes: expected an integer"):
        load_config({}, ["train.episodes=many"])
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config({}, ["quiet=3"])


def test_overrides_are_parsed_as_yaml_and_nested():
    cfg = load_config(
        recipe_path("omniglot/protonet-5w1s"),
        ["train.episodes=7", "train.optim.lr=0.01", "data.rotations=[0]"],
    )
    assert cfg.train.episodes == 7
    assert cfg.train.optim.lr == 0.01
    assert cfg.data.rotations == [0]
    assert cfg.train.episode.ways == 60  # untouched siblings survive


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.episodes"])


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(FileNotFoundError, match="Did you mean omniglot/protonet-5w1s"):
        resolve_recipe("omniglot/protonet-5w1")
