"""Data: stores (download, verify, cache), splits and episode samplers."""

from manytask.data.episodes import Episode, EpisodeSampler, FixedEpisodes, fixed_episodes
from manytask.data.paths import cache_dir, data_dir
from manytask.data.store import ImageStore

__all__ = ["ImageStore", "cache_dir", "data_dir"]
__all__ += ["Episode", "EpisodeSampler", "FixedEpisodes", "fixed_episodes"]
