import pytest

TINY = [
    "train.episodes=6",
    "train.episode.ways=5",
    "train.episode.shots=1",
    "train.episode.queries=2",
    "train.episode.tasks=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.val_every=3",
    "train.val_episodes=4",
    "model.encoder_args.hidden=8",
    "data.source=embedded",
    "eval.episodes=8",
    "eval.batch_size=4",
    "eval.episode.queries=3",
    "quiet=true",
    "device=cpu",
]


@pytest.fixture
def tiny_overrides():
    return list(TINY)
