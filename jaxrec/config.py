"""Config validation and the train step's static spec, one small frozen spec per section.

`validate_config(config)` checks every section before any data is loaded or anything is
compiled, raising `ConfigError` with one line naming the key. The step's settings are
read into frozen dataclasses that check themselves (`ModelSpec`, `LossSpec`,
`SamplerSpec`, `TrainSpec`, each `from_config(section)`), composed into the hashable
`StepSpec`, the static argument of the jitted step: runs with equal specs and shapes
share one compilation (a sweep over seeds compiles once). Names are checked against the
registries (`models.REGISTRY`, `losses.REGISTRY`, `samplers.REGISTRY`,
`tables.ROW_OPTIMIZERS`, `data.DATASETS`), never against lists restated here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import numpy as np

from jaxrec import data, losses, models, samplers, tables

BATCHING = ("random", "epoch")  # train.batching: i.i.d. pairs | per-epoch permutation

# Optional sampler.* keys: a sampler that does not read one must leave it at this value.
_SAMPLER_KEY_DEFAULTS = {
    "hard_fraction": 1.0,
    "batch_negatives": 0,
    "correct_positive": True,
    "kernel_alpha": 100.0,
    "kernel_leaf": 128,
    "cache_refresh": 0.1,
}


class ConfigError(ValueError):
  """A config value that cannot work; raised before any data is loaded or compiled."""


def _choice(value, valid, key):
  if value not in valid:
    raise ConfigError(f"{key}={value!r} is not one of {', '.join(valid)}")


def _positive(value, key, *, allow_zero=False):
  if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
    raise ConfigError(f"{key}={value!r} must be a number")
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def _names(names) -> str:
  names = list(names)
  return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """config.model as the step reads it."""

  name: str
  normalize: bool
  hidden: tuple[int, ...]
  max_bag: int
  # Side features (`jaxrec.data.features.FeatureDecl`s), set by `StepSpec.from_config`
  # from config data.user_features / data.item_features: they shape the dense parameters.
  user_features: tuple = ()
  item_features: tuple = ()

  @classmethod
  def from_config(cls, m) -> "ModelSpec":
    _choice(m.name, tuple(models.REGISTRY), "model.name")
    _positive(m.dim, "model.dim")
    if m.name == "dnn":
      if any(h <= 0 for h in m.hidden):
        raise ConfigError(f"model.hidden={m.hidden!r} must be positive sizes")
      _positive(m.max_bag, "model.max_bag")
    if m.name == "ease":
      _positive(m.ease_lambda, "model.ease_lambda")
    if m.name == "wals":
      _positive(m.iterations, "model.iterations")
      _positive(m.unobserved_weight, "model.unobserved_weight", allow_zero=True)
      _positive(m.regularization, "model.regularization", allow_zero=True)
    return cls(
        name=m.name,
        normalize=bool(m.normalize),
        hidden=tuple(int(h) for h in m.hidden),
        max_bag=int(m.max_bag),
    )


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """config.loss as the step reads it."""

  name: str
  temperature: float
  gravity: float
  l2: float
  positive_only_kind: str
  chunk_size: int | None

  @classmethod
  def from_config(cls, lo) -> "LossSpec":
    _choice(lo.name, tuple(losses.REGISTRY), "loss.name")
    _choice(lo.positive_only_kind, losses.POSITIVE_ONLY_KINDS, "loss.positive_only_kind")
    _positive(lo.temperature, "loss.temperature")
    _positive(lo.gravity, "loss.gravity", allow_zero=True)
    _positive(lo.l2, "loss.l2", allow_zero=True)
    return cls(
        name=lo.name,
        temperature=float(lo.temperature),
        gravity=float(lo.gravity),
        l2=float(lo.l2),
        positive_only_kind=lo.positive_only_kind,
        chunk_size=int(lo.chunk_size) or None,
    )


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """config.sampler as a registered sampler's draw reads it (see `samplers.Sampler`).

  chunk_size is the loss's (hard_exact streams the catalogue in chunks like the full
  softmax); num_uniform / batch_negatives of 0 mean "the batch size"."""

  name: str
  num_negatives: int
  logq: bool = True
  replace: bool = True
  alpha: float = 1.0
  pool_size: int = 0
  temperature: float = 1.0
  freq_alpha: float = 0.01
  num_uniform: int = 0
  batch_negatives: int = 0
  hard_fraction: float = 1.0
  correct_positive: bool = True
  chunk_size: int | None = None
  kernel_alpha: float = _SAMPLER_KEY_DEFAULTS["kernel_alpha"]
  kernel_leaf: int = _SAMPLER_KEY_DEFAULTS["kernel_leaf"]
  cache_refresh: float = _SAMPLER_KEY_DEFAULTS["cache_refresh"]

  @classmethod
  def from_config(
      cls, s, *, batch_size: int, chunk_size: int | None = None, check_keys: bool = True
  ) -> "SamplerSpec":
    """check_keys: the sampler-specific checks (only when the loss draws negatives)."""
    _choice(s.name, tuple(samplers.REGISTRY), "sampler.name")
    _positive(s.temperature, "sampler.temperature")
    if not isinstance(s.correct_positive, bool):
      raise ConfigError(f"sampler.correct_positive={s.correct_positive!r} must be True or False")
    if check_keys:
      entry = samplers.REGISTRY[s.name]
      _positive(s.num_negatives, "sampler.num_negatives")
      _positive(s.batch_negatives, "sampler.batch_negatives", allow_zero=True)
      if s.batch_negatives > batch_size:
        raise ConfigError(
            f"sampler.batch_negatives={s.batch_negatives} exceeds "
            f"train.batch_size={batch_size} (in-batch negatives come from "
            "the batch)"
        )
      if not (isinstance(s.hard_fraction, (int, float)) and 0.0 <= s.hard_fraction <= 1.0):
        raise ConfigError(f"sampler.hard_fraction={s.hard_fraction!r} must be in [0, 1]")
      for key, default in _SAMPLER_KEY_DEFAULTS.items():
        if s.get(key, default) != default and key not in entry.config_keys:
          users = [n for n, e in samplers.REGISTRY.items() if key in e.config_keys]
          raise ConfigError(
              f"sampler.{key}={s[key]} applies to {_names(users)}, not " f"sampler.name={s.name}"
          )
      _positive(s.get("kernel_alpha", 100.0), "sampler.kernel_alpha", allow_zero=True)
      leaf = s.get("kernel_leaf", 128)
      if isinstance(leaf, bool) or not isinstance(leaf, int) or leaf < 1:
        raise ConfigError(f"sampler.kernel_leaf={leaf!r} must be an integer >= 1")
      refresh = s.get("cache_refresh", 0.1)
      if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not 0 < refresh <= 1:
        raise ConfigError(f"sampler.cache_refresh={refresh!r} must be in (0, 1]")
      if "pool_size" in entry.config_keys:
        _positive(s.pool_size, "sampler.pool_size")
        if s.num_negatives > s.pool_size:
          raise ConfigError(
              f"sampler.num_negatives={s.num_negatives} must be <= "
              f"sampler.pool_size={s.pool_size} for {s.name}"
          )
    return cls(
        name=s.name,
        num_negatives=int(s.num_negatives),
        logq=bool(s.logq),
        replace=bool(s.replace),
        alpha=float(s.alpha),
        pool_size=int(s.pool_size),
        temperature=float(s.temperature),
        freq_alpha=float(s.freq_alpha),
        num_uniform=int(s.num_uniform) or int(batch_size),
        batch_negatives=int(s.batch_negatives) or int(batch_size),
        hard_fraction=float(s.hard_fraction),
        correct_positive=s.correct_positive,
        chunk_size=chunk_size,
        kernel_alpha=float(s.get("kernel_alpha", cls.kernel_alpha)),
        kernel_leaf=int(s.get("kernel_leaf", cls.kernel_leaf)),
        cache_refresh=float(s.get("cache_refresh", cls.cache_refresh)),
    )

  @property
  def entry(self) -> samplers.Sampler:
    return samplers.REGISTRY[self.name]


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """config.train as the step reads it."""

  batch_size: int
  batching: str
  optimizer: str
  learning_rate: float
  skip_nonfinite: bool

  @classmethod
  def from_config(cls, t) -> "TrainSpec":
    _choice(t.optimizer, tuple(tables.ROW_OPTIMIZERS), "train.optimizer")
    _choice(t.batching, BATCHING, "train.batching")
    _positive(t.steps, "train.steps")
    _positive(t.batch_size, "train.batch_size")
    _positive(t.learning_rate, "train.learning_rate")
    _positive(t.log_every, "train.log_every")
    _positive(t.checkpoint_every, "train.checkpoint_every", allow_zero=True)
    _positive(t.checkpoint_seconds, "train.checkpoint_seconds", allow_zero=True)
    _positive(t.get("max_seconds", 0.0), "train.max_seconds", allow_zero=True)
    return cls(
        batch_size=int(t.batch_size),
        batching=t.batching,
        optimizer=t.optimizer,
        learning_rate=float(t.learning_rate),
        skip_nonfinite=bool(t.skip_nonfinite),
    )


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """The static (hashable) settings that shape the compiled step."""

  model: ModelSpec
  loss: LossSpec
  sampler: SamplerSpec
  train: TrainSpec

  @classmethod
  def from_config(cls, config) -> "StepSpec":
    train = TrainSpec.from_config(config.train)
    loss = LossSpec.from_config(config.loss)
    model = ModelSpec.from_config(config.model)
    user_feats, item_feats = feature_schema(config)
    model = dataclasses.replace(model, user_features=user_feats, item_features=item_feats)
    if loss.l2 and model.normalize:
      raise ConfigError(
          f"loss.l2={loss.l2} has no effect with model.normalize=True (it penalises the "
          "normalised vectors, whose norm is always 1); set one of them off"
      )
    spec = cls(
        model=model,
        loss=loss,
        sampler=SamplerSpec.from_config(
            config.sampler,
            batch_size=train.batch_size,
            chunk_size=loss.chunk_size,
            check_keys=losses.REGISTRY[loss.name].needs_negatives,
        ),
        train=train,
    )
    if item_feats and spec.sampler_state:
      raise ConfigError(
          f"data.item_features does not work with sampler.name={spec.sampler.name}: its "
          "state follows the item id rows, and item features move every item's embedding"
      )
    return spec

  @property
  def draws_negatives(self) -> bool:
    return losses.REGISTRY[self.loss.name].needs_negatives

  @property
  def uses_freq(self) -> bool:
    """The state keeps the in-batch frequency estimator (Yi et al. 2019)."""
    return self.draws_negatives and self.sampler.entry.uses_freq

  @property
  def sampler_state(self) -> bool:
    """The state keeps the sampler's own state (`samplers.Sampler.init_state`)."""
    return self.draws_negatives and self.sampler.entry.init_state is not None

  @property
  def unigram_alpha(self) -> float | None:
    """The exponent of the unigram table the sampler reads (None: no table)."""
    return self.sampler.alpha if self.sampler.entry.uses_unigram else None

  @property
  def use_logq(self) -> bool:
    """log-Q correction of the negatives' logits: Z ~ e^{s_pos} + sum_j e^{s_j - log(K q_j)}
    (Bengio & Senecal 2008; Jean et al. 2015). With an i.i.d. sampler the positive is not
    corrected, so with every item drawn once under uniform q this is exactly the full
    softmax. A sampler without a proper q (hard_topk: deterministic mining) is never
    corrected."""
    return self.sampler.logq and self.sampler.entry.proper_log_q

  @property
  def correct_positive(self) -> bool:
    """log-Q also corrects the positive's logit by its own log(K q) (in_batch and mixed,
    `sampler.correct_positive`): Yi et al. 2019 eq. 4, as TFRS and tf.nn do, since the
    positive is itself a member of the batch the negatives are drawn from."""
    return (
        self.use_logq and self.sampler.correct_positive and self.sampler.entry.pos_log_q is not None
    )

  @property
  def reads_all_items(self) -> bool:
    """The loss (full softmax) or gravity reads every item row: the step differentiates
    the whole item table (the dense path) instead of the batch's gathered rows."""
    return losses.REGISTRY[self.loss.name].reads_all_items or self.loss.gravity > 0


# The models whose step reads side features (data.user_features / data.item_features).
FEATURE_MODELS = ("mf", "dnn")


def feature_schema(config) -> tuple[tuple, tuple]:
  """(user, item) `FeatureDecl`s of config data.{user,item}_features (() when unset),
  read from the files (cached; a malformed file raises DataError "FILE:LINE: reason")."""
  out = []
  for side in ("user", "item"):
    path, types = data.features.side_config(config.data, side)
    if types and not path:
      raise ConfigError(f"data.{side}_feature_types={types!r} needs data.{side}_features")
    if not path:
      out.append(())
      continue
    if config.model.name not in FEATURE_MODELS:
      raise ConfigError(
          f"data.{side}_features applies to model.name {_names(FEATURE_MODELS)}, not "
          f"{config.model.name}"
      )
    if not os.path.isfile(path):
      raise ConfigError(f"data.{side}_features={path!r} is not a file")
    try:
      data.features.parse_types(
          data.features.resolve_types(path, types), where=f"data.{side}_feature_types"
      )
    except ValueError as err:
      raise ConfigError(str(err)) from None
    out.append(data.features.schema(config.data, side))
  return out[0], out[1]


def _check_data(d) -> None:
  _choice(d.name, data.DATASETS, "data.name")
  _choice(d.split, data.SPLIT_KINDS, "data.split")
  if d.name != "synthetic":
    if not d.path:
      raise ConfigError(f"data.path is required for data.name={d.name}")
    if not os.path.exists(d.path):
      raise ConfigError(f"data.path={d.path!r} does not exist")
    if not os.access(d.path, os.R_OK):
      raise ConfigError(f"data.path={d.path!r} is not readable")
  else:
    for k in ("num_groups", "num_users", "num_items", "interactions_per_user"):
      _positive(d[k], f"data.{k}")
    if not 0.0 <= d.noise <= 1.0:
      raise ConfigError(f"data.noise={d.noise!r} must be in [0, 1]")
  if not 0.0 < d.test_fraction < 1.0:
    raise ConfigError(f"data.test_fraction={d.test_fraction!r} must be in (0, 1)")
  if not isinstance(d.seed, int) or d.seed < -1:
    raise ConfigError(f"data.seed={d.seed!r} must be an integer >= -1 (-1: the run's seed)")
  vf = d.valid_fraction
  if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0.0 <= vf < 1.0:
    raise ConfigError(f"data.valid_fraction={vf!r} must be in [0, 1)")
  if d.name == "lightgcn":
    for key in ("k_core", "language_split", "min_rating"):
      if d[key]:
        raise ConfigError(
            f"data.{key}={d[key]} does not apply to data.name=lightgcn (a fixed split "
            "read as given)"
        )
  _positive(d.language_split, "data.language_split", allow_zero=True)
  if d.min_rating and d.name == "synthetic":
    raise ConfigError(
        f"data.min_rating={d.min_rating} applies to data with weights (movielens, lastfm, "
        "csv), not data.name=synthetic"
    )


# eval.select's metrics: the names `metrics.evaluate` returns at each K of eval.ks.
SELECT_METRICS = ("recall", "recall_full", "ndcg", "coverage")


def data_seed(config) -> int:
  """The seed of the data (world, split, validation carve): config.data.seed, or the
  run's seed when that is -1 (so a sweep over seeds also varies the split)."""
  return int(config.data.seed) if int(config.data.seed) >= 0 else int(config.seed)


def eval_num_users(eval_cfg) -> int:
  """config eval.num_users: the validation users each validation evaluation ranks (a
  seeded sample, `evaluate.sample_eval_users`); 0 = all. The test evaluation ranks all.
  Absent (a config written before the key existed) = 0."""
  return int(eval_cfg.get("num_users", 0))


def select_metric(eval_cfg) -> str | None:
  """eval.select "valid/NAME@K" -> "NAME@K" (None when unset); always maximised."""
  return eval_cfg.select.split("/", 1)[1] if eval_cfg.select else None


def _check_eval(e, valid_fraction) -> None:
  _positive(e.every, "eval.every", allow_zero=True)
  _positive(e.get("every_seconds", 0.0), "eval.every_seconds", allow_zero=True)
  _positive(e.patience, "eval.patience", allow_zero=True)
  n = e.get("num_users", 0)
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise ConfigError(
        f"eval.num_users={n!r} must be an integer >= 0 (validation users per validation "
        "evaluation; 0: all)"
    )
  beta = e.get("logp_bias", 0.0)
  if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta):
    raise ConfigError(f"eval.logp_bias={beta!r} must be a finite number (0: no adjustment)")
  if not e.ks or any((not isinstance(k, int)) or k <= 0 for k in e.ks):
    raise ConfigError(f"eval.ks={e.ks!r} must be positive integers")
  if e.select:
    part, _, metric = e.select.partition("/")
    name, _, k = metric.partition("@")
    if part != "valid" or name not in SELECT_METRICS or not k.isdigit() or int(k) not in e.ks:
      raise ConfigError(
          f"eval.select={e.select!r} must be valid/NAME@K with NAME one of "
          f"{', '.join(SELECT_METRICS)} and K in eval.ks={tuple(e.ks)}"
      )
    if not valid_fraction:
      raise ConfigError(
          f"eval.select={e.select!r} needs a validation part: data.valid_fraction > 0"
      )
  if e.patience and not (e.select and (e.every or e.get("every_seconds", 0.0))):
    raise ConfigError(
        f"eval.patience={e.patience} needs eval.select and eval.every or eval.every_seconds > 0"
    )


def validate_config(config) -> None:
  """Checks names and sizes of every section; raises ConfigError naming the key. Sizes
  known only after loading data (e.g. K >= N without replacement) are checked by
  `check_data_fit`."""
  _check_data(config.data)
  StepSpec.from_config(config)
  _check_eval(config.eval, config.data.valid_fraction)
  if config.eval.get("logp_bias", 0.0) and not models.trained_by_step(config.model.name):
    raise ConfigError(
        f"eval.logp_bias applies to models trained by the step, not model.name="
        f"{config.model.name!r}"
    )


def check_data_fit(config, num_users: int, num_items: int) -> None:
  """Checks that need the data's size."""
  del num_users
  s = config.sampler
  draws = losses.REGISTRY[config.loss.name].needs_negatives
  if draws and models.trained_by_step(config.model.name):
    keys = samplers.REGISTRY[s.name].config_keys
    if "replace" in keys and not s.replace and s.num_negatives >= num_items:
      raise ConfigError(
          f"sampler.num_negatives={s.num_negatives} must be < the number of "
          f"items ({num_items}) when sampling without replacement"
      )
    if "pool_size" in keys and s.pool_size > num_items:
      raise ConfigError(
          f"sampler.pool_size={s.pool_size} exceeds the number of items " f"({num_items})"
      )
  if max(config.eval.ks) > num_items:
    raise ConfigError(f"eval.ks={tuple(config.eval.ks)} exceeds the number of items ({num_items})")


# The models that read the interactions' weights (WALS: as confidence); the rest count
# every interaction once.
WEIGHTED_MODELS = ("wals",)


def check_splits(config, train, *, log=None) -> None:
  """Checks of the loaded train part, before anything is trained or written: an epoch
  fits in the data; `log` (a printf function) gets one warning line when the data carry
  weights that the chosen model ignores. (Whether valid and test can be evaluated is
  `evaluate.check_evaluable`'s, each when it is first read.)"""
  t = config.train
  if (
      models.trained_by_step(config.model.name)
      and t.batching == "epoch"
      and t.batch_size > len(train.user_ids)
  ):
    raise ConfigError(
        f"train.batch_size={t.batch_size} exceeds the {len(train.user_ids)} training "
        "interactions under train.batching=epoch"
    )
  w = train.weights
  if log is not None and w is not None and config.model.name not in WEIGHTED_MODELS:
    if w.size and not bool(np.all(w == w[0])):
      print(
          f"warning: the data carry weights that model.name={config.model.name} ignores "
          f"(every interaction counts once); weights are used by {_names(WEIGHTED_MODELS)}",
          file=sys.stderr,
          flush=True,
      )
