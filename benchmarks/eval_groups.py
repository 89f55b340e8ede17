"""Evaluation with groups at scale: `metrics.evaluate` with and without the folding metrics.

Random embeddings (D=64), G groups of items (contiguous blocks), users spread over the
groups, each with `train` training and `test` held-out items drawn uniformly from its own
group; the issue-23 problem is 2,000 users x 4M items. Prints, in one run, the wall time of
`evaluate` without groups (ranking metrics: the chunked top-K), with groups (top-K +
cross_group@K + the group pass + folding_auc), their ratio, and peak memory; one JSON line
(prefix "RESULT ") for scripts. Each call includes its own compilation (the plain call
runs first and compiles the top-K; the call with groups reuses it), so the ratio is
(top-K + group metrics) / top-K as a user sees it.

  python -m benchmarks.eval_groups                                  # 2,000 x 4M
  python -m benchmarks.eval_groups --num_items=200000 --num_users=500   # quick
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import numpy as np

from jaxrec import metrics


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--num_users", type=int, default=2000)
  p.add_argument("--num_items", type=int, default=4_000_000)
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--groups", type=int, default=4)
  p.add_argument("--train", type=int, default=16, help="training items per user")
  p.add_argument("--test", type=int, default=4, help="held-out items per user")
  p.add_argument("--ks", type=str, default="10,20")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  for name in ("num_users", "num_items", "dim", "groups", "train", "test"):
    if getattr(args, name) <= 0:
      p.error(f"--{name} must be > 0; got {getattr(args, name)}")
  if args.num_items // args.groups < args.train + args.test:
    p.error("each group needs at least train + test items")
  return args


def world(args):
  rng = np.random.default_rng(args.seed)
  query = rng.standard_normal((args.num_users, args.dim), np.float32)
  items = rng.standard_normal((args.num_items, args.dim), np.float32)
  item_groups = (np.arange(args.num_items) * args.groups // args.num_items).astype(np.int32)
  user_groups = rng.integers(0, args.groups, args.num_users).astype(np.int32)
  first = np.searchsorted(item_groups, np.arange(args.groups + 1))
  per = args.train + args.test
  picks = np.empty((args.num_users, per), np.int64)
  for u, g in enumerate(user_groups):
    size = first[g + 1] - first[g]
    picks[u] = first[g] + rng.choice(size, per, replace=False)
  users = np.repeat(np.arange(args.num_users), per).reshape(args.num_users, per)
  train = (users[:, : args.train].ravel(), picks[:, : args.train].ravel())
  test = (users[:, args.train :].ravel(), picks[:, args.train :].ravel())
  return query, items, train, test, user_groups, item_groups


def main(argv=None):
  args = parse_args(argv)
  ks = tuple(int(k) for k in args.ks.split(","))
  t0 = time.perf_counter()
  query, items, train, test, ug, ig = world(args)
  gen = time.perf_counter() - t0

  t0 = time.perf_counter()
  plain = metrics.evaluate(query, items, train, test, ks=ks)
  plain_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  full = metrics.evaluate(query, items, train, test, ks=ks, user_groups=ug, item_groups=ig)
  groups_s = time.perf_counter() - t0
  assert all(full[k] == plain[k] for k in plain), "ranking metrics changed with groups"

  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
  result = {
      "device": str(jax.devices()[0].device_kind),
      "num_users": args.num_users,
      "num_items": args.num_items,
      "dim": args.dim,
      "groups": args.groups,
      "pairs_test": int(test[0].size),
      "world_seconds": round(gen, 2),
      "evaluate_plain_seconds": round(plain_s, 2),
      "evaluate_groups_seconds": round(groups_s, 2),
      "ratio_groups_to_plain": round(groups_s / plain_s, 3),
      "peak_rss_gb": round(peak, 2),
      "metrics": {k: round(v, 4) for k, v in full.items() if k not in plain},
  }
  print(
      f"evaluate over {args.num_users:,} users x {args.num_items:,} items, D={args.dim}, "
      f"{args.groups} groups, {test[0].size:,} held-out pairs on {result['device']}"
  )
  print(f"  plain (top-K, ranking metrics): {plain_s:8.2f} s")
  print(f"  with groups (+ folding metrics): {groups_s:8.2f} s   (target < 60 s)")
  print(f"  ratio groups / plain: {groups_s / plain_s:.2f}x;  peak RSS {peak:.2f} GB")
  print("RESULT " + json.dumps(result))
  return result


if __name__ == "__main__":
  main()
