"""Interaction data: the `Interactions` record, file readers, synthetic worlds, splits.

`load_data(config.data, seed)` is the one entry point of a run. The MovieLens download
(`jaxrec.data.download`) is opt-in and not imported here.
"""

import dataclasses

import numpy as np

from jaxrec.data import features
from jaxrec.data.interactions import DataError, DataPathError, Interactions, k_core
from jaxrec.data.readers import load_csv, load_lastfm, load_lightgcn, load_movielens
from jaxrec.data.splits import SPLIT_KINDS, Splits, carve_valid, split, split3
from jaxrec.data.synthetic import language_split, make_folding_world

# config data.name -> reader of data.path (the synthetic world needs no file).
READERS = {
    "movielens": lambda cfg: load_movielens(cfg.path, min_rating=cfg.min_rating or None),
    "lastfm": lambda cfg: _min_weight(load_lastfm(cfg.path), cfg.min_rating, cfg.path),
    "csv": lambda cfg: _min_weight(load_csv(cfg.path), cfg.min_rating, cfg.path),
}


def _min_weight(inter: Interactions, min_rating, path) -> Interactions:
  """data.min_rating for a reader with weights: keep rows with weight >= min_rating."""
  if not min_rating:
    return inter
  if inter.weights is None:
    raise DataError(
        f"{path}: data.min_rating={min_rating} needs a weight column; this file has none"
    )
  keep = inter.weights >= min_rating
  if not keep.any():
    raise DataError(f"{path}: no interactions with weight >= data.min_rating={min_rating}")
  pick = lambda a: None if a is None else a[keep]
  return dataclasses.replace(
      inter,
      user_ids=inter.user_ids[keep],
      item_ids=inter.item_ids[keep],
      weights=inter.weights[keep],
      timestamps=pick(inter.timestamps),
  )


# data.name -> where the rows come from: generated, read then split, or a fixed split.
DATASETS = ("synthetic",) + tuple(READERS) + ("lightgcn",)


def _check_weights(inter: Interactions, path) -> None:
  """Weights are counts or ratings: a negative one is refused, naming its raw ids."""
  if inter.weights is not None and (inter.weights < 0).any():
    e = int(np.flatnonzero(inter.weights < 0)[0])
    raw = lambda r, i: r[i] if r is not None else i
    u = raw(inter.user_raw, inter.user_ids[e])
    i = raw(inter.item_raw, inter.item_ids[e])
    raise DataError(
        f"{path}: user {u} item {i} has a negative weight {float(inter.weights[e])!r} "
        f"({int((inter.weights < 0).sum())} such rows; weights are counts or ratings, >= 0)"
    )


def as_splits(data) -> Splits:
  """A preloaded data set as `Splits`: a `Splits` / (train, valid, test) triple, or a
  (train, test) pair (no validation part)."""
  if len(data) == 2:
    return carve_valid(*data, valid_fraction=0.0)  # valid: no rows
  return Splits(*data)


def synthetic_world(data_cfg, seed: int, **kw):
  """`make_folding_world` with the sizes of config.data (`kw`: its other arguments, e.g.
  return_topics=True)."""
  return make_folding_world(
      num_groups=data_cfg.num_groups,
      num_users=data_cfg.num_users,
      num_items=data_cfg.num_items,
      interactions_per_user=data_cfg.interactions_per_user,
      zipf_exponent=data_cfg.zipf_exponent,
      noise=data_cfg.noise,
      seed=seed,
      **kw,
  )


def load_data(data_cfg, seed: int) -> Splits:
  """(config.data, seed) -> `Splits(train, valid, test)` in one id space: read (or
  generate), k-core filter, language split, then the seeded three-way split (`split3`);
  data.valid_fraction of each user's train rows form valid (0: valid has no rows).

  data.name=lightgcn reads a fixed train/test split (`load_lightgcn`; ids kept as given)
  and carves valid out of its train file only (`carve_valid`, kind data.split)."""
  valid_fraction = float(data_cfg.valid_fraction)
  if data_cfg.name == "lightgcn":
    train, test = (features.attach(part, data_cfg) for part in load_lightgcn(data_cfg.path))
    return carve_valid(train, test, kind=data_cfg.split, valid_fraction=valid_fraction, seed=seed)
  if data_cfg.name == "synthetic":
    inter = synthetic_world(data_cfg, seed)
  else:
    inter = READERS[data_cfg.name](data_cfg)
    _check_weights(inter, data_cfg.path)
  if data_cfg.k_core:
    inter = k_core(inter, min_user=data_cfg.k_core, min_item=data_cfg.k_core)
  if data_cfg.language_split and data_cfg.language_split > 1:
    if data_cfg.language_split > inter.num_users:
      raise DataError(
          f"data.language_split={data_cfg.language_split} exceeds the number of users "
          f"({inter.num_users}): every copy of the catalogue needs a user"
      )
    inter = language_split(inter, data_cfg.language_split, seed=seed)
  # Side features (data.user_features / data.item_features), matched through the raw ids.
  inter = features.attach(inter, data_cfg)
  return split3(
      inter,
      kind=data_cfg.split,
      test_fraction=data_cfg.test_fraction,
      valid_fraction=valid_fraction,
      seed=seed,
  )


__all__ = [
    "DATASETS",
    "DataError",
    "DataPathError",
    "Interactions",
    "READERS",
    "SPLIT_KINDS",
    "Splits",
    "as_splits",
    "carve_valid",
    "features",
    "k_core",
    "language_split",
    "load_csv",
    "load_data",
    "load_lastfm",
    "load_lightgcn",
    "load_movielens",
    "make_folding_world",
    "split",
    "split3",
    "synthetic_world",
]
