"""config eval.logp_bias: ranking by score + beta log p_j (a post-hoc popularity
adjustment at serving), checked against numpy."""

import numpy as np
import pytest

from jaxrec import config, data, evaluate, metrics, train
from jaxrec.data import Interactions
import tiny


def test_biased_dot_products_are_the_scores_plus_beta_log_p():
  rng = np.random.default_rng(0)
  q, v = rng.normal(size=(5, 3)), rng.normal(size=(6, 3))
  train_pairs = Interactions(np.array([0, 1, 2, 3, 4, 0]), np.array([1, 1, 1, 2, 2, 5]), 5, 6)
  counts = np.array([0, 3, 2, 0, 0, 1], float)
  log_p = np.log((counts + 1) / (counts.sum() + 6))
  q2, v2 = evaluate.with_logp_bias(q, v, train_pairs, -0.7)
  np.testing.assert_allclose(q2 @ v2.T, q @ v.T - 0.7 * log_p[None, :], rtol=1e-5, atol=1e-5)
  same_q, same_v = evaluate.with_logp_bias(q, v, train_pairs, 0.0)
  assert same_q is q and same_v is v


def test_the_launcher_ranks_the_biased_scores_and_trains_the_same(tmp_path):
  """Same seed with and without eval.logp_bias: the same trained embeddings; the biased
  run's test metrics are metrics.evaluate over numpy's score + beta log p."""
  over = {"model.name": "mf", "eval.save_embeddings": True}
  plain = train.train_and_evaluate(tiny.config(**over), str(tmp_path / "p"), verbose=False)
  beta = 0.8
  c = tiny.config(**over, **{"eval.logp_bias": beta})
  biased = train.train_and_evaluate(c, str(tmp_path / "b"), verbose=False)
  with np.load(tmp_path / "p" / "embeddings.npz") as f:
    q, v = f["query"], f["items"]
  with np.load(tmp_path / "b" / "embeddings.npz") as f:
    np.testing.assert_array_equal(f["items"], v)
  sp = data.load_data(c.data, 0)
  counts = np.bincount(sp.train.item_ids, minlength=sp.train.num_items)
  log_p = np.log((counts + 1.0) / (counts.sum() + sp.train.num_items))
  q1 = np.concatenate([q, np.ones((len(q), 1))], 1).astype(np.float32)
  v1 = np.concatenate([v, beta * log_p[:, None]], 1).astype(np.float32)
  want = metrics.evaluate(q1, v1, sp.train, sp.test, ks=tuple(c.eval.ks))
  for key in ("recall@10", "recall@20", "ndcg@20"):
    np.testing.assert_allclose(biased["metrics"][key], want[key], rtol=1e-5, err_msg=key)
  assert biased["metrics"]["recall@20"] != plain["metrics"]["recall@20"]


@pytest.mark.parametrize(
    "over, match",
    [
        ({"eval.logp_bias": float("nan")}, "finite"),
        ({"eval.logp_bias": float("inf")}, "finite"),
        ({"eval.logp_bias": 1.0, "model.name": "ease"}, "trained by the step"),
    ],
)
def test_bad_logp_bias_is_a_config_error(over, match):
  with pytest.raises(config.ConfigError, match=match):
    config.validate_config(tiny.config(**over))
