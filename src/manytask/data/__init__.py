"""Data: stores (download, verify, cache), splits, episode samplers and multi-task data sets."""

from manytask.data.archives import ArchiveError
from manytask.data.episodes import (
    Episode,
    EpisodeSampler,
    FixedEpisodes,
    RegressionEpisode,
    fixed_episodes,
)
from manytask.data.multitask import MultiTaskData, TaskData, TaskKind, TaskSpec, to_float
from manytask.data.omniglot import (
    build_embedded,
    fetch_omniglot,
    load_image,
    load_omniglot,
    omniglot_split,
    verify_omniglot,
)
from manytask.data.paths import cache_dir, data_dir
from manytask.data.registry import (
    DATASETS,
    fetch_dataset,
    get_dataset,
    list_datasets,
    load_dataset,
    verify_dataset,
)
from manytask.data.store import ImageStore

__all__ = ["ImageStore", "cache_dir", "data_dir"]
__all__ += ["Episode", "EpisodeSampler", "FixedEpisodes", "RegressionEpisode", "fixed_episodes"]
__all__ += [
    "ArchiveError",
    "build_embedded",
    "fetch_omniglot",
    "load_image",
    "load_omniglot",
    "omniglot_split",
    "verify_omniglot",
]
__all__ += ["MultiTaskData", "TaskData", "TaskKind", "TaskSpec", "to_float"]
__all__ += [
    "DATASETS",
    "fetch_dataset",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "verify_dataset",
]
