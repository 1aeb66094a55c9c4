"""Data: stores (download, verify, cache), splits and episode samplers."""

from manytask.data.archives import ArchiveError
from manytask.data.episodes import (
    Episode,
    EpisodeSampler,
    FixedEpisodes,
    RegressionEpisode,
    fixed_episodes,
)
from manytask.data.omniglot import (
    build_embedded,
    fetch_omniglot,
    load_image,
    load_omniglot,
    omniglot_split,
    verify_omniglot,
)
from manytask.data.paths import cache_dir, data_dir
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
