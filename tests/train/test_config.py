import pytest
import yaml
from torch import Tensor, nn

from manytask.config import ConfigError, apply_overrides, load_config, migrate, to_dict
from manytask.config.meta import MetaConfig
from manytask.meta import MetaLearner
from manytask.recipes import list_recipes, recipe_path, resolve_recipe
from manytask.registry import LEARNERS

BASE = {"family": "meta", "train": {"episode": {"ways": 5}}, "eval": {"episode": {"ways": 5}}}


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_validates(name):
    cfg = load_config(recipe_path(name))
    assert isinstance(cfg, MetaConfig) or type(cfg).__name__.endswith("Config")
    assert getattr(cfg.train, "steps", None) or cfg.train.episodes > 0
    # The resolved config is complete and loads again to the same thing.
    again = load_config(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert to_dict(again) == to_dict(cfg)


def test_recipes_exist_for_the_paper_protocols():
    names = set(list_recipes())
    for want in ["protonet-5w1s", "protonet-5w5s", "protonet-20w1s", "protonet-20w5s"]:
        assert f"omniglot/{want}" in names


def test_unknown_key_names_it_and_the_closest_match():
    with pytest.raises(ConfigError) as err:
        load_config({**BASE, "train": {"episdes": 3}})
    msg = str(err.value)
    assert "train.episdes" in msg and "train.episodes" in msg and "Did you mean" in msg


def test_bad_data_argument_lists_the_valid_values():
    with pytest.raises(ConfigError, match=r"data\.split.*'vinyals'.*'lake'"):
        load_config({**BASE, "data": {"dataset": "omniglot", "split": "vinyal"}})
    with pytest.raises(ConfigError, match=r"data\.image_sise.*Did you mean 'image_size'"):
        load_config({**BASE, "data": {"dataset": "omniglot", "image_sise": 28}})
    with pytest.raises(ConfigError, match=r"unknown task source 'omniglott'.*'omniglot'"):
        load_config({**BASE, "data": {"dataset": "omniglott"}})


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match=r"train\.episodes: expected an integer"):
        load_config(BASE, ["train.episodes=many"])
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(BASE, ["quiet=3"])


@pytest.mark.parametrize(
    ("text", "value"), [("1e-3", 1e-3), ("1E-3", 1e-3), (".001", 1e-3), ("2e-2", 0.02), ("3", 3.0)]
)
def test_numbers_in_every_usual_notation(text, value, tmp_path):
    # Bug 1: YAML 1.1 read 1e-3 as a string, and `train.optim.lr=1e-3` was rejected.
    cfg = load_config(recipe_path("omniglot/protonet-5w1s"), [f"train.optim.lr={text}"])
    assert cfg.train.optim.lr == pytest.approx(value)
    recipe = tmp_path / "r.yaml"
    text_cfg = recipe_path("omniglot/protonet-5w1s").read_text()
    assert "lr: 0.001" in text_cfg
    recipe.write_text(text_cfg.replace("lr: 0.001", f"lr: {text}"))
    assert load_config(recipe).train.optim.lr == pytest.approx(value)


def test_integers_written_as_exact_floats():
    cfg = load_config(BASE, ["train.episodes=2e4", "train.log_every=1E2"])
    assert cfg.train.episodes == 20000 and isinstance(cfg.train.episodes, int)
    assert cfg.train.log_every == 100
    with pytest.raises(ConfigError, match=r"train\.episodes: expected an integer, got 2.5"):
        load_config(BASE, ["train.episodes=2.5"])


@pytest.mark.parametrize(
    "override",
    [
        "train.log_every=0",
        "train.checkpoint_every=0",
        "train.episodes=0",
        "train.episode.ways=1",
        "train.episode.shots=0",
        "train.episode.queries=0",
        "train.episode.tasks=0",
        "train.optim.lr=0",
        "train.optim.lr=-1e-3",
        "train.optim.gamma=0",
        "train.val_episodes=0",
        "eval.episodes=0",
        "eval.batch_size=0",
        "eval.episode.ways=1",
        "seed=-1",
    ],
)
def test_every_number_is_range_checked_at_load(override):
    # Bug 3: log_every=0 crashed with ZeroDivisionError after the run folder was made.
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: .* out of range; expected"):
        load_config(recipe_path("omniglot/protonet-5w1s"), [override])


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.episodes"])


def test_overrides_are_parsed_as_yaml_and_nested():
    cfg = load_config(
        recipe_path("omniglot/protonet-5w1s"),
        ["train.episodes=7", "train.optim.lr=0.01", "data.rotations=[0]"],
    )
    assert cfg.train.episodes == 7
    assert cfg.train.optim.lr == 0.01
    assert list(cfg.data["rotations"]) == [0]
    assert cfg.train.episode.ways == 60  # untouched siblings survive


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(FileNotFoundError, match="Did you mean omniglot/protonet-5w1s"):
        resolve_recipe("omniglot/protonet-5w1")


def test_a_run_folder_given_as_recipe_says_how_to_resume(tmp_path):
    """Found by hand: `manytask run RUN_DIR` said "recipe file RUN_DIR does not exist"."""
    (tmp_path / "config.yaml").write_text("family: meta\n")
    with pytest.raises(FileNotFoundError, match=r"run folder.*--resume"):
        resolve_recipe(str(tmp_path))
    assert resolve_recipe(str(tmp_path / "config.yaml")) == tmp_path / "config.yaml"


def test_unknown_family_lists_the_families():
    with pytest.raises(ConfigError, match=r"family: 'metta'.*Did you mean 'meta'"):
        load_config({"family": "metta"})


class FixedHead(MetaLearner):
    """A toy learner with one output unit per class, fixed at construction."""

    def __init__(self, encoder: nn.Module, ways: int, scale: float = 1.0) -> None:
        super().__init__()
        self.encoder, self.ways, self.scale = encoder, ways, scale
        self.head = nn.LazyLinear(ways)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways=None) -> Tensor:
        return self.head(self.encoder(query_x.flatten(0, 1))).view(*query_x.shape[:2], -1)


@pytest.fixture
def fixed_head():
    LEARNERS.add("fixed-head", FixedHead)
    yield "fixed-head"
    LEARNERS.remove("fixed-head")


def test_learner_arguments_are_checked_against_the_signature(fixed_head):
    base = {**BASE, "model": {"learner": fixed_head}}
    cfg = load_config(base, ["model.args.scale=2e-1"])
    assert cfg.model.args == {"scale": 0.2}  # typed, and complete (defaults filled in)
    with pytest.raises(ConfigError, match=r"model\.args\.scal\b.*Did you mean 'scale'.*Valid"):
        load_config(base, ["model.args.scal=2"])
    with pytest.raises(ConfigError, match=r"model\.args\.scale: expected a number, got 'many'"):
        load_config(base, ["model.args.scale=many"])
    with pytest.raises(ConfigError, match=r"model\.args\.ways.*set by the run"):
        load_config(base, ["model.args.ways=5"])
    with pytest.raises(ConfigError, match=r"unknown learner 'fixed-haed'"):
        load_config({**BASE, "model": {"learner": "fixed-haed"}})


def test_fixed_size_learner_cannot_test_at_other_ways(fixed_head):
    base = {**BASE, "model": {"learner": fixed_head}}
    with pytest.raises(ConfigError, match=r"eval\.episode\.ways=20 but train\.episode\.ways=5"):
        load_config(base, ["eval.episode.ways=20"])
    # ProtoNet has no fixed output size: 60-way training, 5-way test is fine.
    load_config(recipe_path("omniglot/protonet-5w1s"))


def test_encoder_arguments_are_checked():
    with pytest.raises(ConfigError, match=r"model\.encoder_args\.hiden.*Did you mean 'hidden'"):
        load_config(BASE, ["model.encoder_args.hiden=8"])
    with pytest.raises(ConfigError, match=r"unknown encoder 'conv5'"):
        load_config(BASE, ["model.encoder=conv5"])


def test_classification_needs_ways():
    with pytest.raises(ConfigError, match=r"train\.episode\.ways: classification data needs"):
        load_config({"family": "meta"})


def test_impossible_batch_sizes_fail_at_load():
    # Bug 11: eval.episode.ways=500 allocated 40 GB: evaluation batches are sized by what
    # they hold, and a task that cannot fit is an error when the config is loaded.
    cfg = load_config(recipe_path("omniglot/protonet-5w1s-quick"), ["eval.episode.ways=500"])
    assert cfg.eval_batch_size() == 1
    with pytest.raises(ConfigError, match=r"eval\.episode: one test task holds"):
        load_config(recipe_path("omniglot/protonet-5w1s"), ["eval.episode.ways=5000"])
    with pytest.raises(ConfigError, match=r"train\.episode: one training batch holds"):
        load_config(recipe_path("omniglot/protonet-5w1s"), ["train.episode.tasks=1000"])


def test_schema_1_configs_migrate_and_newer_ones_are_refused():
    old = {
        "name": "old",
        "data": {"dataset": "omniglot", "image_size": 28, "split": "vinyals"},
        "model": {"learner": "protonet", "encoder": "conv4", "hidden": 32},
        "train": {"episode": {"ways": 60, "shots": 1, "queries": 5, "tasks": 1}},
        "eval": {"episode": {"ways": 5, "shots": 1, "queries": 15, "tasks": 1}},
    }
    cfg = load_config(old)
    assert cfg.schema == 2 and cfg.model.encoder_args["hidden"] == 32  # the rest at defaults
    assert migrate(old)["family"] == "meta"
    with pytest.raises(ConfigError, match=r"newer manytask \(config schema 99"):
        load_config({**old, "schema": 99})
