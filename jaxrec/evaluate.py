"""Evaluation of trained embeddings: full-ranking quality and folding metrics, held-out loss.

Thin over `jaxrec.metrics` (full ranking over the whole catalogue, training items masked)
with the top-K computed per shard of the item table on several devices
(`sharding.sharded_topk`).
"""

from __future__ import annotations

from jaxrec import metrics, sharding


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
