"""Models: the query towers (Flax Linen) over rows gathered from plain tables, and `REGISTRY`.

Embedding tables are NOT module parameters: they are plain [N,E] arrays in the train
state (see `jaxrec.tables`), so that the train step can gather the rows a batch
touches, differentiate w.r.t. those rows only, and update them sparsely. The towers here
take gathered rows and hold only the small dense parameters (MLP weights), which optax
updates densely. Items are their table rows.

 mf:   query = user_table[user]                                   (no dense parameters)
 dnn:  query = DNNQueryTower(pool_rows(item_table[bag], mask))    (Covington et al. 2016,
       "Deep Neural Networks for YouTube Recommendations"; the bag is the user's other items)
 wals, ease, popularity: closed form, no train step: `fit(config, train) -> scorer`
       (`jaxrec.wals.fit_config`, `jaxrec.baselines`), evaluated by
       `evaluate.evaluate_scorer`.

`REGISTRY` maps config `model.name` to a `Model` record with one calling convention:
`init_dense(key, spec, dim) -> params` and `apply_dense(params, x_BxD, spec) -> query_BxD`,
x being the user's row (mf) or the pooled bag (dnn).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec import baselines, wals

Array = jax.Array


def init_table(key: Array, num_rows: int, dim: int, scale: Optional[float] = None) -> Array:
  """An [num_rows, dim] float32 table with entries ~ Normal(0, scale^2).

  The default scale 1/sqrt(dim) gives rows of expected squared norm 1.
  """
  if num_rows <= 0 or dim <= 0:
    raise ValueError(f"init_table needs num_rows > 0 and dim > 0; got {num_rows}, {dim}")
  if scale is None:
    scale = 1.0 / float(dim) ** 0.5
  return scale * jax.random.normal(key, (num_rows, dim), jnp.float32)


def pool_rows(rows_BxLxE: Array, mask_BxL: Array) -> Array:
  """Masked mean over the bag axis: sum_l mask[b,l] rows[b,l] / max(1, sum_l mask[b,l]).

  An empty bag (all mask zero) gives the zero vector. Differentiable w.r.t. the rows,
  so the train step can gather rows first and take gradients w.r.t. them.
  """
  if rows_BxLxE.ndim != 3 or mask_BxL.shape != rows_BxLxE.shape[:2]:
    raise ValueError(
        f"pool_rows expects rows [B,L,E] and mask [B,L]; got {rows_BxLxE.shape} and "
        f"{mask_BxL.shape}"
    )
  mask_BxL = mask_BxL.astype(rows_BxLxE.dtype)
  total_BxE = jnp.einsum("ble,bl->be", rows_BxLxE, mask_BxL)
  count_Bx1 = jnp.maximum(jnp.sum(mask_BxL, axis=1, keepdims=True), 1.0)
  return total_BxE / count_Bx1


class DNNQueryTower(nn.Module):
  """Softmax-DNN query tower: MLP over [pooled bag embedding, dense side features].

  query = W_out relu(... relu(W_1 [bag; features] + b_1) ...) + b_out,  shape [B, dim].
  """

  hidden: Sequence[int]
  dim: int

  @nn.compact
  def __call__(self, bag_BxE: Array, features_BxF: Optional[Array] = None) -> Array:
    x = bag_BxE
    if features_BxF is not None:
      if features_BxF.ndim != 2 or features_BxF.shape[0] != bag_BxE.shape[0]:
        raise ValueError(
            f"features must be [B,F] with B={bag_BxE.shape[0]}; got " f"{features_BxF.shape}"
        )
      x = jnp.concatenate([x, features_BxF.astype(x.dtype)], axis=-1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
    return nn.Dense(self.dim, name="out")(x)


def _no_dense(key, spec, dim):
  del key, spec, dim
  return {}


def _identity(params, x_BxD, spec):
  del params, spec
  return x_BxD


def _dnn_init(key, spec, dim):
  return DNNQueryTower(hidden=spec.hidden, dim=dim).init(key, jnp.zeros((1, dim), jnp.float32))


def _dnn_apply(params, pooled_BxD, spec):
  return DNNQueryTower(hidden=spec.hidden, dim=pooled_BxD.shape[-1]).apply(params, pooled_BxD)


@dataclasses.dataclass(frozen=True)
class Model:
  """A registered model. `query_table`: what the query table's rows are ("users": one row
  per user; "items": the query pools a bag of the user's other items over item rows).
  `fit(config, train) -> scorer`: set for closed-form models (no jitted step); the scorer
  has `scores(users_B) -> [B, N]` or `query_UxD`/`items_NxD` embeddings, and may carry a
  `history` (one dict per iteration). `spec` is a `jaxrec.config.ModelSpec`."""

  help: str
  query_table: str = "users"
  fit: Optional[Callable[..., Any]] = None
  seeded: bool = True  # False: the fit does not depend on config.seed (EASE, popularity)
  init_dense: Callable[..., Any] = _no_dense
  apply_dense: Callable[..., Array] = _identity


REGISTRY: dict[str, Model] = {
    "mf": Model("matrix factorization: the query is the user's row"),
    "dnn": Model(
        "softmax DNN: MLP over the mean of the user's other items' rows",
        query_table="items",
        init_dense=_dnn_init,
        apply_dense=_dnn_apply,
    ),
    "wals": Model("weighted ALS / iALS, closed form (jaxrec.wals)", fit=wals.fit_config),
    "ease": Model(
        "EASE (Steck 2019), closed form, ridge model.ease_lambda",
        fit=baselines.fit_ease,
        seeded=False,
    ),
    "popularity": Model(
        "most popular: train count of the item", fit=baselines.fit_popularity, seeded=False
    ),
}


def trained_by_step(name: str) -> bool:
  """The model has a jitted train step (else a closed-form `fit`)."""
  return REGISTRY[name].fit is None


def help_text() -> str:
  """One line per registered model (for the launcher's --help)."""
  return "\n".join(f"{name}: {m.help}" for name, m in REGISTRY.items())
