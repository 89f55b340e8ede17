"""Evaluation of trained embeddings: full-ranking quality and folding metrics, held-out loss.

Thin over `jaxrec.metrics` (full ranking over the whole catalogue, training items masked)
with the top-K computed per shard of the item table on several devices
(`sharding.sharded_topk`).
"""

from __future__ import annotations

import numpy as np

from jaxrec import metrics, sharding
from jaxrec.data import DataError


def evaluate_embeddings(query_UxD, items_NxD, train, test, eval_cfg) -> dict[str, float]:
  """Full-ranking metrics at config eval.ks of given embeddings (`metrics.evaluate`)."""
  return metrics.evaluate(
      query_UxD,
      items_NxD,
      train,
      test,
      ks=tuple(eval_cfg.ks),
      chunk_size=int(eval_cfg.chunk_size),
      topk_fn=sharding.sharded_topk,
  )


def evaluate_model(
    query_UxD, items_NxD, train, test, eval_cfg, *, temperature: float
) -> dict[str, float]:
  """Full-ranking metrics plus test_softmax_loss: the held-out pairs' cross-entropy under
  the full softmax at the training temperature (what every sampled loss estimates)."""
  out = evaluate_embeddings(query_UxD, items_NxD, train, test, eval_cfg)
  out["test_softmax_loss"] = metrics.heldout_softmax_loss(
      query_UxD, items_NxD, test, temperature=temperature, chunk_size=int(eval_cfg.chunk_size)
  )
  return out


def evaluate_scorer(scorer, train, test, eval_cfg) -> dict[str, float]:
  """Full-ranking metrics of a closed-form model: `scorer.scores(users_B) -> [B, N]`
  (`metrics.evaluate_scores`) or, when it has them, its embeddings `query_UxD`/`items_NxD`."""
  if hasattr(scorer, "query_UxD"):
    return evaluate_embeddings(scorer.query_UxD, scorer.items_NxD, train, test, eval_cfg)
  return metrics.evaluate_scores(
      scorer.scores, train.num_users, train.num_items, train, test, ks=tuple(eval_cfg.ks)
  )


def known_pairs(train, valid):
  """The pairs a final test evaluation masks: train and validation (both are known to the
  model's user; ranking them would count them as misses)."""
  return train.union(valid) if valid.num_interactions else train


def check_evaluable(train, part, name: str) -> None:
  """Raises DataError when no pair of `part` (valid or test) is outside `train`: no user
  could be evaluated."""
  n = max(int(train.num_items), 1)
  known = train.user_ids.astype(np.int64) * n + train.item_ids
  held = part.user_ids.astype(np.int64) * n + part.item_ids
  if not np.isin(held, known, invert=True).any():
    raise DataError(
        f"no user to evaluate on {name}: every {name} pair ({part.num_interactions}) is also "
        f"a train pair ({train.num_interactions} train rows; users need >= 2 interactions)"
    )
