"""Interaction data: the `Interactions` record, file readers, synthetic worlds, splits.

The MovieLens download (`jaxrec.data.download`) is opt-in and not imported here.
"""

from jaxrec.data.interactions import DataError, DataPathError, Interactions, k_core
from jaxrec.data.readers import load_csv, load_lastfm, load_movielens
from jaxrec.data.splits import SPLIT_KINDS, split
from jaxrec.data.synthetic import language_split, make_folding_world

__all__ = [
    "DataError", "DataPathError", "Interactions", "SPLIT_KINDS", "k_core", "language_split",
    "load_csv", "load_lastfm", "load_movielens", "make_folding_world", "split",
]
