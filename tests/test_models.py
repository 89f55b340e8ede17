"""Towers and bag pooling agree with plain numpy forward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import models


def _numpy_mlp(params, x, num_hidden):
  for i in range(num_hidden):
    layer = params[f"hidden_{i}"]
    x = np.maximum(x @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"]), 0.0)
  out = params["out"]
  return x @ np.asarray(out["kernel"]) + np.asarray(out["bias"])


@pytest.mark.parametrize("with_features", [False, True])
def test_dnn_tower_equals_numpy_mlp(with_features):
  rng = np.random.default_rng(0)
  b, e, f, d = 6, 8, 3, 4
  bag = rng.normal(size=(b, e)).astype(np.float32)
  feats = rng.normal(size=(b, f)).astype(np.float32) if with_features else None
  tower = models.DNNQueryTower(hidden=(16, 12), dim=d)
  params = tower.init(
      jax.random.PRNGKey(0), jnp.asarray(bag), None if feats is None else jnp.asarray(feats)
  )["params"]
  # Bias-free init would hide a wrong bias path; perturb every bias.
  params = jax.tree.map(lambda p: p + 0.1 if p.ndim == 1 else p, params)
  out = tower.apply(
      {"params": params}, jnp.asarray(bag), None if feats is None else jnp.asarray(feats)
  )
  assert out.shape == (b, d) and out.dtype == jnp.float32
  x = bag if feats is None else np.concatenate([bag, feats], axis=1)
  assert params["hidden_0"]["kernel"].shape == (x.shape[1], 16)
  np.testing.assert_allclose(np.asarray(out), _numpy_mlp(params, x, 2), rtol=1e-5, atol=1e-5)


def test_dnn_tower_rejects_mismatched_features():
  tower = models.DNNQueryTower(hidden=(4,), dim=2)
  with pytest.raises(ValueError, match="features must be"):
    tower.init(jax.random.PRNGKey(0), jnp.zeros((3, 5)), jnp.zeros((2, 1)))


def test_pool_rows_masked_mean_with_empty_bag():
  """The DNN's input: the masked mean of a bag's gathered rows (zeros for an empty bag)."""
  rng = np.random.default_rng(1)
  n, e = 10, 4
  table = rng.normal(size=(n, e)).astype(np.float32)
  ids = np.array([[1, 2, 2, 9], [4, 0, 0, 0], [7, 3, 5, 0]], np.int32)
  mask = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]], np.float32)
  pooled = np.asarray(models.pool_rows(jnp.asarray(table)[ids], jnp.asarray(mask)))
  expected = np.stack(
      [
          table[[1, 2, 2]].mean(axis=0),  # duplicates count twice; masked 9 ignored
          np.zeros(e, np.float32),  # empty bag -> zeros
          table[[7, 5, 0]].mean(axis=0),
      ]
  )
  np.testing.assert_allclose(pooled, expected, rtol=1e-6, atol=1e-7)


def test_pool_rows_gradient_is_mask_over_count():
  # d/d rows[b,l] of sum_b,e pooled[b,e] = mask[b,l] / max(1, count_b) (closed form).
  rows = jnp.ones((2, 3, 2))
  mask = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
  g = jax.grad(lambda r: models.pool_rows(r, mask).sum())(rows)
  expected = np.broadcast_to((np.array([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]))[..., None], (2, 3, 2))
  np.testing.assert_allclose(np.asarray(g), expected)


def test_registry_models_compute_the_query_they_name():
  """mf: the query is the user's row (no dense parameters); dnn: DNNQueryTower over the
  pooled bag, with parameters from init_dense; wals is not trained by the step."""
  from jaxrec import config

  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))
  mf = models.REGISTRY["mf"]
  spec = config.ModelSpec(name="mf", normalize=False, hidden=(), max_bag=1)
  assert mf.init_dense(jax.random.PRNGKey(0), spec, 4) == {}
  np.testing.assert_array_equal(np.asarray(mf.apply_dense({}, x, spec)), np.asarray(x))
  dnn = models.REGISTRY["dnn"]
  spec = config.ModelSpec(name="dnn", normalize=False, hidden=(6,), max_bag=3)
  params = dnn.init_dense(jax.random.PRNGKey(0), spec, 4)
  want = models.DNNQueryTower(hidden=(6,), dim=4).init(jax.random.PRNGKey(0), x[:1])
  np.testing.assert_array_equal(
      np.asarray(params["params"]["out"]["kernel"]), np.asarray(want["params"]["out"]["kernel"])
  )
  out = np.asarray(dnn.apply_dense(params, x, spec))
  np.testing.assert_allclose(
      out, _numpy_mlp(params["params"], np.asarray(x), 1), rtol=1e-5, atol=1e-5
  )
  assert (mf.query_table, dnn.query_table) == ("users", "items")
  assert [n for n in models.REGISTRY if not models.trained_by_step(n)] == [
      "wals",
      "ease",
      "popularity",
  ]


def test_init_table_scale_and_shape():
  table = models.init_table(jax.random.PRNGKey(0), 4000, 16)
  assert table.shape == (4000, 16) and table.dtype == jnp.float32
  # 64000 draws: the sample std of N(0, 1/16) is within ~0.3% of 0.25 (1 sigma); 2% is
  # > 6 sigma.
  np.testing.assert_allclose(float(jnp.std(table)), 0.25, rtol=0.02)
  assert abs(float(jnp.mean(table))) < 0.01  # mean's sigma = 0.25/253 ~ 0.001
  small = models.init_table(jax.random.PRNGKey(0), 4000, 16, scale=0.01)
  np.testing.assert_allclose(float(jnp.std(small)), 0.01, rtol=0.02)
  with pytest.raises(ValueError, match="num_rows"):
    models.init_table(jax.random.PRNGKey(0), 0, 16)


# --------------------------------------------------------------------------------------
# Side features: the towers against numpy forward passes from the same parameters.


def _decls():
  from jaxrec.data.features import FeatureDecl

  user = (
      FeatureDecl("age", "categorical", size=4, slots=1),
      FeatureDecl("tags", "multi", size=5, slots=3),
      FeatureDecl("income", "numeric"),
  )
  item = (FeatureDecl("genres", "multi", size=6, slots=2), FeatureDecl("year", "year", 3, 1))
  return user, item


def _np_bag(table, ids):
  """Mean of the rows of the ids > 0; the unknown row 0 when there is none."""
  ids = [i for i in ids if i > 0]
  return table[ids].mean(axis=0) if ids else table[0]


def _feature_spec(name, user, item, hidden=(8,)):
  from jaxrec import config

  return config.ModelSpec(
      name=name, normalize=False, hidden=hidden, max_bag=4, user_features=user, item_features=item
  )


def _perturbed(params):
  # Zero biases would hide a wrong bias path.
  return jax.tree.map(lambda p: p + 0.1 if p.ndim == 1 else p, params)


def test_user_features_change_the_dnn_query_as_declared():
  """Two users with the same bag and different features: each query is the MLP over
  [pooled bag; e_age; e_tags (masked mean); z_income; missing_income], and their
  difference is exactly what the features change through the tower (numpy, from the
  params); an all-unknown user reads the reserved rows 0 and a zero income flagged
  missing."""
  user, item = _decls()
  d = 4
  spec = _feature_spec("dnn", user, item)
  dnn = models.REGISTRY["dnn"]
  params = _perturbed(dnn.init_dense(jax.random.PRNGKey(1), spec, d))
  p = jax.tree.map(np.asarray, params["params"])
  bag = np.random.default_rng(0).normal(size=(1, d)).astype(np.float32)
  x_BxD = np.repeat(bag, 3, axis=0)
  cat = np.array([[2, 1, 3, 0], [3, 4, 0, 0], [0, 0, 0, 0]], np.int32)  # age | tags x3
  num = np.array([[0.5, 0.0], [-1.5, 0.0], [0.0, 1.0]], np.float32)  # z | missing
  q = np.asarray(dnn.apply_dense(params, jnp.asarray(x_BxD), spec, (cat, num)))
  e_age, e_tags = p["user_embed"]["embed_age"], p["user_embed"]["embed_tags"]
  want = []
  for b in range(3):
    feats = [_np_bag(e_age, cat[b, :1]), _np_bag(e_tags, cat[b, 1:]), num[b]]
    want.append(_numpy_mlp(p["tower"], np.concatenate([x_BxD[b]] + feats)[None], 1)[0])
  want = np.stack(want)
  np.testing.assert_allclose(q, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(q[0] - q[1], want[0] - want[1], rtol=1e-4, atol=1e-5)
  assert np.abs(q[0] - q[1]).max() > 1e-3  # the features do move the query
  # The unknown user's tower input holds exactly the reserved rows.
  assert np.array_equal(_np_bag(e_age, [0]), e_age[0]) and np.array_equal(
      _np_bag(e_tags, [0, 0, 0]), e_tags[0]
  )


def test_user_features_add_to_the_mf_query_and_item_features_to_item_rows():
  """mf: query = user row + e_age + e_tags + W_u [z; missing] (no bias); items: row +
  e_genres (masked mean) + e_year; both checked against numpy from the params."""
  user, item = _decls()
  d = 4
  spec = _feature_spec("mf", user, item, hidden=())
  mf = models.REGISTRY["mf"]
  params = mf.init_dense(jax.random.PRNGKey(2), spec, d)
  p = jax.tree.map(np.asarray, params["params"])
  assert "user_numeric" in p and "bias" not in p["user_numeric"]
  rng = np.random.default_rng(1)
  rows = rng.normal(size=(2, d)).astype(np.float32)
  cat = np.array([[1, 2, 2, 0], [0, 0, 0, 0]], np.int32)
  num = np.array([[0.7, 0.0], [0.0, 1.0]], np.float32)
  q = np.asarray(mf.apply_dense(params, jnp.asarray(rows), spec, (cat, num)))
  ue = p["user_embed"]
  for b in range(2):
    want = (
        rows[b]
        + _np_bag(ue["embed_age"], cat[b, :1])
        + _np_bag(ue["embed_tags"], cat[b, 1:])
        + num[b] @ p["user_numeric"]["kernel"]
    )
    np.testing.assert_allclose(q[b], want, rtol=1e-5, atol=1e-6)
  icat = np.array([[1, 5, 2], [0, 0, 0], [3, 0, 1]], np.int32)  # genres x2 | year
  off = np.asarray(models.item_offsets(params, spec, icat, np.zeros((3, 0), np.float32), d))
  ie = p["item_embed"]
  for m in range(3):
    want = _np_bag(ie["embed_genres"], icat[m, :2]) + _np_bag(ie["embed_year"], icat[m, 2:])
    np.testing.assert_allclose(off[m], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(off[1], ie["embed_genres"][0] + ie["embed_year"][0], rtol=1e-6)


@pytest.mark.parametrize("rows", [7, models.ONE_HOT_CELLS])  # one-hot (7 x 3 slots), gather
def test_embed_bag_masked_mean_or_unknown_row_and_its_gradient(rows):
  """embed_bag = mean of the rows of ids > 0 (repeats count), else row 0; its gradient
  w.r.t. the table is the bag weights summed over the rows (closed form)."""
  rng = np.random.default_rng(4)
  table = rng.normal(size=(rows, 3)).astype(np.float32)
  ids = np.array([[1, 5, 5], [0, 0, 0], [6, 0, 2]], np.int32)
  out = np.asarray(models.embed_bag(jnp.asarray(table), jnp.asarray(ids)))
  want = np.stack([_np_bag(table, r) for r in ids])
  np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
  g = np.asarray(jax.grad(lambda t: models.embed_bag(t, jnp.asarray(ids)).sum())(table))
  weights = np.zeros(rows)
  np.add.at(weights, [1, 5, 5], 1 / 3)
  weights[0] += 1.0
  np.add.at(weights, [6, 2], 1 / 2)
  np.testing.assert_allclose(g, np.repeat(weights[:, None], 3, axis=1), rtol=1e-6, atol=1e-6)
