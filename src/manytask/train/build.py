"""Turn a :class:`~manytask.config.RunConfig` into the objects a run needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from manytask.config import DataConfig, EpisodeConfig, ModelConfig, RunConfig
from manytask.data.store import ImageStore
from manytask.meta import MetaLearner, ProtoNet
from manytask.nn import Conv4, init_parameters

__all__ = [
    "DataSplits",
    "build_learner",
    "load_splits",
    "make_fixed_episodes",
    "meta_test_episodes",
    "resolve_device",
]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device: {name!r} is not a device (try 'auto', 'cpu', 'cuda')") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but CUDA is not available here; use 'cpu'")
    return device


def build_learner(cfg: ModelConfig, in_channels: int = 1, *, seed: int = 0) -> MetaLearner:
    """The meta-learner named by ``cfg.learner`` over ``cfg.encoder``, initialised from ``seed``."""
    encoder: nn.Module
    if cfg.encoder == "conv4":
        encoder = Conv4(in_channels=in_channels, hidden=cfg.hidden)
    else:  # pragma: no cover - guarded by the config's Literal
        raise ValueError(f"model.encoder: unknown encoder {cfg.encoder!r}")
    if cfg.learner == "protonet":
        learner: MetaLearner = ProtoNet(encoder)
        return init_parameters(learner, seed)  # type: ignore[return-value]
    raise ValueError(f"model.learner: unknown learner {cfg.learner!r}")  # pragma: no cover


@dataclass(frozen=True)
class DataSplits:
    """The meta-train, meta-validation and meta-test class sets of a run."""

    train: ImageStore
    val: ImageStore
    test: ImageStore


def load_splits(cfg: DataConfig, *, progress: bool = True) -> DataSplits:
    """Load the data set named in ``cfg`` and cut it into its train / val / test classes."""
    from manytask.data.omniglot import load_omniglot, omniglot_split

    store = load_omniglot(cfg.image_size, source=cfg.source, progress=progress)
    return DataSplits(
        train=omniglot_split(store, cfg.split, cfg.train_part),
        val=omniglot_split(store, cfg.split, cfg.val_part),
        test=omniglot_split(store, cfg.split, cfg.test_part),
    )


def make_fixed_episodes(
    store: ImageStore,
    ep: EpisodeConfig,
    data: DataConfig,
    *,
    episodes: int,
    seed: int,
    batch_size: int,
    device: torch.device,
):  # -> FixedEpisodes
    """The fixed, seeded evaluation episodes for ``store`` (same on every run and machine)."""
    from manytask.data.episodes import fixed_episodes

    return fixed_episodes(
        store,
        ep.ways,
        ep.shots,
        ep.queries,
        episodes,
        seed=seed,
        rotations=tuple(data.rotations),
        batch_size=batch_size,
        group_by=data.group_by,
        device=device,
    )


def meta_test_episodes(cfg: RunConfig, store: ImageStore, device: torch.device):  # -> FixedEpisodes
    """The run's meta-test episodes: ``cfg.eval`` applied to ``store``."""
    return make_fixed_episodes(
        store,
        cfg.eval.episode,
        cfg.data,
        episodes=cfg.eval.episodes,
        seed=cfg.eval.seed,
        batch_size=cfg.eval.batch_size,
        device=device,
    )
