"""Evaluation of trained embeddings: full-ranking quality and folding metrics, held-out loss.

Thin over `jaxrec.metrics` (full ranking over the whole catalogue, training items masked)
with the top-K computed per shard of the item table on several devices
(`sharding.sharded_topk`).
"""

from __future__ import annotations

import numpy as np

from jaxrec import metrics, sharding
from jaxrec.data import DataError


def evaluate_embeddings(
    query_UxD, items_NxD, train, test, eval_cfg, *, eval_users=None
) -> dict[str, float]:
  """Full-ranking metrics at config eval.ks of given embeddings (`metrics.evaluate`), over
  the test users in `eval_users` (None: all)."""
  return metrics.evaluate(
      query_UxD,
      items_NxD,
      train,
      test,
      ks=tuple(eval_cfg.ks),
      eval_users=eval_users,
      chunk_size=int(eval_cfg.chunk_size),
      topk_fn=sharding.sharded_topk,
  )


def evaluate_model(
    query_UxD, items_NxD, train, test, eval_cfg, *, temperature: float, eval_users=None
) -> dict[str, float]:
  """Full-ranking metrics plus test_softmax_loss: the held-out pairs' cross-entropy under
  the full softmax at the training temperature (what every sampled loss estimates); both
  over the users in `eval_users` (None: all)."""
  out = evaluate_embeddings(query_UxD, items_NxD, train, test, eval_cfg, eval_users=eval_users)
  pairs = test
  if eval_users is not None:
    keep = np.isin(test.user_ids, eval_users)
    pairs = (test.user_ids[keep], test.item_ids[keep])
  out["test_softmax_loss"] = metrics.heldout_softmax_loss(
      query_UxD, items_NxD, pairs, temperature=temperature, chunk_size=int(eval_cfg.chunk_size)
  )
  return out


def with_logp_bias(query_UxD, items_NxD, train, beta: float):
  """(query, items) whose dot products are the model's scores plus beta log p_j:
  query' = [query, 1], item'_j = [item_j, beta log p_j], p_j = (c_j + 1) / (sum c + N)
  with c_j item j's train count (add-one, so an item never seen has a finite log p).

  A popularity adjustment at serving (config eval.logp_bias = beta): beta > 0 lifts
  popular items, beta < 0 pushes them down, the counterpart of a log-Q correction applied
  after training instead of in the loss (the form of Menon et al. 2021's post-hoc logit
  adjustment, its sign and size chosen on validation).
  beta = 0 returns the embeddings unchanged."""
  if not beta:
    return query_UxD, items_NxD
  counts_N = np.bincount(train.item_ids, minlength=train.num_items).astype(np.float64)
  log_p_N = np.log((counts_N + 1.0) / (counts_N.sum() + train.num_items))
  query = np.asarray(query_UxD, np.float32)
  items = np.asarray(items_NxD, np.float32)
  bias = (float(beta) * log_p_N).astype(np.float32)[:, None]
  return (
      np.concatenate([query, np.ones((query.shape[0], 1), np.float32)], axis=1),
      np.concatenate([items, bias], axis=1),
  )


def evaluate_scorer(scorer, train, test, eval_cfg, *, eval_users=None) -> dict[str, float]:
  """Full-ranking metrics of a closed-form model: `scorer.scores(users_B) -> [B, N]`
  (`metrics.evaluate_scores`) or, when it has them, its embeddings `query_UxD`/`items_NxD`;
  over the users in `eval_users` (None: all)."""
  if hasattr(scorer, "query_UxD"):
    return evaluate_embeddings(
        scorer.query_UxD, scorer.items_NxD, train, test, eval_cfg, eval_users=eval_users
    )
  return metrics.evaluate_scores(
      scorer.scores,
      train.num_users,
      train.num_items,
      train,
      test,
      ks=tuple(eval_cfg.ks),
      eval_users=eval_users,
  )


def evaluable_users(train, part) -> np.ndarray:
  """The users `metrics.evaluate` ranks on `part`: those with a `part` pair outside
  `train` (sorted)."""
  n = max(int(train.num_items), 1)
  _, held = metrics._pair_keys(train, part, int(train.num_users), n)
  return np.unique(held // n)


# Stream tag of the validation users' sample (so it is not the seed's other draws).
_SAMPLE_STREAM = 0x65766C75


def sample_eval_users(users, num_users: int, seed: int) -> np.ndarray | None:
  """The validation users of a run (config eval.num_users = n): n users drawn uniformly
  without replacement from `users` (`evaluable_users(train, valid)`, sorted) by a
  generator seeded from the run's seed (the same n users at every validation evaluation,
  and on resume); None (all users) when n is 0 or at least their number. Sorted."""
  if num_users <= 0 or num_users >= users.size:
    return None
  rng = np.random.default_rng([_SAMPLE_STREAM, int(seed) & (2**63 - 1)])
  return np.sort(rng.choice(users, size=int(num_users), replace=False))


def known_pairs(train, valid):
  """The pairs a final test evaluation masks: train and validation (both are known to the
  model's user; ranking them would count them as misses)."""
  return train.union(valid) if valid.num_interactions else train


def check_evaluable(train, part, name: str) -> np.ndarray:
  """`evaluable_users(train, part)`; raises DataError when there is none (no pair of
  `part`, valid or test, is outside `train`)."""
  users = evaluable_users(train, part)
  if not users.size:
    raise DataError(
        f"no user to evaluate on {name}: every {name} pair ({part.num_interactions}) is also "
        f"a train pair ({train.num_interactions} train rows; users need >= 2 interactions)"
    )
  return users
