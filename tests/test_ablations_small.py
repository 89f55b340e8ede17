"""Paper-style ablations (experiments/configs/logq.py, gravity_mf.py, sampled_metrics.py, ...)
at tiny size: their analysis helpers against brute force, and each config end to end
through the runner (experiments.sweep) on a tiny MovieLens-format folder written to
tmp_path (no test reads ../shared/data)."""

import csv
import json
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from experiments import gravity_mf, sampled_metrics, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENRES = ("Action", "Comedy", "Drama", "Horror")


def write_tiny_movielens(folder, *, num_users=60, num_items=120, seed=0):
  """ratings.csv + movies.csv in the ml-latest format: 4 genres of 30 movies; each user
  rates 14 movies of a favourite genre and 2 others; sparse raw movie ids; one movie
  with '(no genres listed)' and one title with a quoted comma."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  raw = 7 * np.arange(num_items) + 3
  genre = np.arange(num_items) % len(GENRES)
  with open(os.path.join(folder, "movies.csv"), "w") as f:
    f.write("movieId,title,genres\n")
    for i in range(num_items):
      title = f'"Movie, The {i} (1999)"' if i == 5 else f"Movie {i} (2001)"
      g = "(no genres listed)" if i == 7 else f"{GENRES[genre[i]]}|Thriller"
      f.write(f"{raw[i]},{title},{g}\n")
  with open(os.path.join(folder, "ratings.csv"), "w") as f:
    f.write("userId,movieId,rating,timestamp\n")
    for u in range(num_users):
      fav = np.flatnonzero(genre == u % len(GENRES))
      items = np.concatenate(
          [rng.choice(fav, 14, replace=False), rng.choice(num_items, 2, replace=False)]
      )
      for t, i in enumerate(np.unique(items)):
        f.write(f"{u + 1},{raw[i]},{rng.integers(1, 6)}.0,{1000 + t}\n")
  return str(folder)


def tiny(config, data_path, **extra):
  """The config at tiny size on `data_path`; `extra`: {dotted key: value}, e.g. sweep.ks."""
  with config.unlocked():
    config.data.path = data_path
    config.train.steps = 40
    config.train.log_every = 20
    config.train.batch_size = 32
    config.model.hidden = (16,)
    config.model.max_bag = 8
    for k, v in extra.items():
      node = config
      *parents, leaf = k.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = v
  return config


def get_config(name, arg=None):
  import importlib

  return importlib.import_module(f"experiments.configs.{name}").get_config(arg)


def quiet(*_):
  pass


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- helpers


def silhouette_bruteforce(x, labels):
  """The definition, one point at a time (Rousseeuw 1987; sklearn's singleton rule)."""
  keep = labels >= 0
  x, labels = x[keep].astype(np.float64), labels[keep]
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  s = []
  for i in range(len(x)):
    d = np.array([1 - xn[i] @ xn[j] for j in range(len(x))])
    same = (labels == labels[i]) & (np.arange(len(x)) != i)
    if not same.any():
      s.append(0.0)
      continue
    a = d[same].mean()
    b = min(d[labels == c].mean() for c in set(labels.tolist()) - {labels[i]})
    s.append((b - a) / max(a, b))
  return float(np.mean(s))


def test_silhouette_matches_the_definition():
  rng = np.random.default_rng(1)
  centers = rng.normal(size=(3, 5))
  labels = np.repeat([0, 1, 2], [9, 7, 5])
  x = centers[labels] + 0.8 * rng.normal(size=(21, 5))
  labels = np.concatenate([labels, [3, -1]])  # a singleton and an unlabelled row
  x = np.concatenate([x, rng.normal(size=(2, 5))])
  got = gravity_mf.silhouette_cosine(x, labels, chunk=4)
  assert got == pytest.approx(silhouette_bruteforce(x, labels), abs=1e-10)
  # Scale invariance of cosine distance; and well-separated clusters approach 1.
  assert gravity_mf.silhouette_cosine(3.0 * x, labels) == pytest.approx(got, abs=1e-10)
  sep = np.repeat(np.eye(3), 4, axis=0) + 1e-3 * rng.normal(size=(12, 3))
  assert gravity_mf.silhouette_cosine(sep, np.repeat([0, 1, 2], 4)) > 0.99
  with pytest.raises(ValueError, match="2 clusters"):
    gravity_mf.silhouette_cosine(x[:3], np.zeros(3, int))


def test_knn_label_agreement_matches_brute_force():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(25, 3))
  labels = rng.integers(-1, 3, 25)  # some unlabelled rows
  got, chance = gravity_mf.knn_label_agreement(x, labels, k=4, chunk=6)
  keep = labels >= 0
  xs, ls = x[keep], labels[keep]
  cos = (xs @ xs.T) / np.outer(np.linalg.norm(xs, axis=1), np.linalg.norm(xs, axis=1))
  share = []
  for i in range(len(xs)):
    others = [j for j in np.argsort(-cos[i]) if j != i][:4]
    share.append(np.mean(ls[others] == ls[i]))
  assert got == pytest.approx(np.mean(share), abs=1e-12)
  pairs = [(i, j) for i in range(len(ls)) for j in range(len(ls)) if i != j]
  assert chance == pytest.approx(np.mean([ls[i] == ls[j] for i, j in pairs]), abs=1e-12)


def test_observed_error_and_mean_squared_score_match_brute_force():
  rng = np.random.default_rng(2)
  q, v = rng.normal(size=(7, 4)), rng.normal(size=(11, 4))
  users, items = rng.integers(0, 7, 30), rng.integers(0, 11, 30)
  scores = q @ v.T
  assert gravity_mf.observed_mse(q, v, users, items) == pytest.approx(
      np.mean([(scores[u, i] - 1) ** 2 for u, i in zip(users, items)]), rel=1e-12
  )
  assert gravity_mf.mean_squared_score(q, v) == pytest.approx(np.mean(scores**2), rel=1e-12)


def test_primary_genre_is_the_first_listed(tmp_path):
  path = write_tiny_movielens(tmp_path / "ml")
  raw = [str(7 * i + 3) for i in range(12)] + ["999999"]
  labels, names = gravity_mf.primary_genres(os.path.join(path, "movies.csv"), raw)
  assert names == sorted(GENRES)  # 'Thriller' is never first
  want = [names.index(GENRES[i % 4]) for i in range(12)] + [-1]
  want[7] = -1  # (no genres listed)
  assert labels.tolist() == want
  bad = tmp_path / "bad.csv"
  bad.write_text("id,name\n1,x\n")
  with pytest.raises(ValueError, match="movieId,title,genres"):
    gravity_mf.primary_genres(str(bad), ["1"])


def test_rankings_reorderings_and_kendall_tau_against_scipy():
  full = {"a": 0.30, "b": 0.25, "c": 0.10, "d": 0.05}
  samp = {"a": 0.80, "b": 0.85, "c": 0.70, "d": 0.72}
  assert sampled_metrics.ranking(full) == ["a", "b", "c", "d"]
  assert sampled_metrics.ranking(samp) == ["b", "a", "d", "c"]
  assert sampled_metrics.discordant_pairs(full, samp) == [("a", "b"), ("c", "d")]
  keys = sorted(full)
  tau = scipy.stats.kendalltau([full[k] for k in keys], [samp[k] for k in keys]).statistic
  assert sampled_metrics.kendall_tau(full, samp) == pytest.approx(tau)
  assert sampled_metrics.relative_spread(full) == pytest.approx(0.25 / 0.30)
  # Brute force over all pairs on random scores.
  rng = np.random.default_rng(3)
  a = dict(zip("pqrstu", rng.random(6)))
  b = dict(zip("pqrstu", rng.random(6)))
  want = sorted(
      (x, y) if a[x] > a[y] else (y, x)
      for x, y in itertools.combinations(a, 2)
      if (a[x] > a[y]) != (b[x] > b[y])
  )
  assert sorted(sampled_metrics.discordant_pairs(a, b)) == want


def test_full_hit_rate_matches_brute_force():
  from jaxrec.data import Interactions

  rng = np.random.default_rng(5)
  U, N = 9, 30
  q, v = rng.normal(size=(U, 3)).astype(np.float32), rng.normal(size=(N, 3)).astype(np.float32)
  pairs = np.unique(rng.integers(0, U * N, 120))
  is_test = rng.random(pairs.size) < 0.3
  is_test[pairs // N == 4] = False  # user 4: train only (between others)
  mk = lambda p: Interactions((p // N).astype(np.int32), (p % N).astype(np.int32), U, N)
  tr, te = mk(pairs[~is_test]), mk(pairs[is_test])
  seen = {(int(p // N), int(p % N)) for p in pairs}
  s = q @ v.T
  for k in (1, 3):
    hits = [
        sum(s[u, j] >= s[u, i] for j in range(N) if (u, j) not in seen) < k
        for u, i in zip(te.user_ids, te.item_ids)
    ]
    assert sampled_metrics.full_hit_rate(q, v, tr, te, k=k, user_batch=2) == pytest.approx(
        np.mean(hits)
    )


def test_sampled_hit_rate_from_scores_matches_the_embedding_version():
  """sampled_hit_rate_scores (numpy, any scores function: EASE's) on q . v gives what
  metrics.sampled_hit_rate (jax, embeddings) gives for the same key: the same pairs and
  negatives; continuous random scores, so no tie can differ between the two."""
  import jax
  from jaxrec import metrics
  from jaxrec.data import Interactions

  rng = np.random.default_rng(6)
  U, N = 40, 200
  q, v = rng.normal(size=(U, 5)).astype(np.float32), rng.normal(size=(N, 5)).astype(np.float32)
  pairs = np.unique(rng.integers(0, U * N, 1500))
  is_test = rng.random(pairs.size) < 0.3
  mk = lambda p: Interactions((p // N).astype(np.int32), (p % N).astype(np.int32), U, N)
  tr, te = mk(pairs[~is_test]), mk(pairs[is_test])
  key = jax.random.PRNGKey(3)
  for k in (1, 10):
    want = metrics.sampled_hit_rate(q, v, tr, te, num_negatives=30, k=k, key=key)
    got = sampled_metrics.sampled_hit_rate_scores(
        lambda ub: q[ub] @ v.T, N, tr, te, num_negatives=30, k=k, key=key, user_batch=7
    )
    assert got == pytest.approx(want, abs=1e-12) and 0.0 < got < 1.0


# ----------------------------------------------------------------------- end to end


def test_gravity_mf_end_to_end(tmp_path):
  data = write_tiny_movielens(tmp_path / "ml")
  wd = str(tmp_path / "g")
  variants = ["observed_only", "l2=0.1+gravity=1.0"]
  config = tiny(
      get_config("gravity_mf"),
      data,
      **{
          "model.dim": 6,
          "sweep.seeds": (0,),
          "sweep.only": ",".join(variants),
          "sweep.genre_min_ratings": 1,
      },
  )
  summary = sweep.run(config, wd, log=quiet).summary
  rows = read_csv(os.path.join(wd, "results.csv"))
  assert sorted(r["strategy"] for r in rows) == sorted(variants + [gravity_mf.RANDOM])
  ref = [r for r in rows if r["strategy"] == gravity_mf.RANDOM][0]
  assert -0.2 < float(ref["genre_silhouette"]) < 0.2  # random vectors: no genre structure
  rows = [r for r in rows if r["strategy"] != gravity_mf.RANDOM]
  tr, _, _ = sweep.load_data(config.data, 0)
  for r in rows:  # the extra columns equal a brute-force recomputation from the embeddings
    z = np.load(os.path.join(wd, r["workdir"], "embeddings.npz"))
    s = z["query"].astype(np.float64) @ z["items"].astype(np.float64).T
    assert float(r["train_mse"]) == pytest.approx(
        np.mean((s[tr.user_ids, tr.item_ids] - 1) ** 2), rel=1e-6
    )
    assert float(r["mean_sq_score"]) == pytest.approx(np.mean(s**2), rel=1e-6)
    assert -1 <= float(r["genre_silhouette"]) <= 1
    assert 0 <= float(r["genre_knn@10"]) <= 1
  for f in ("summary.md", "metrics_bars.png", "item_pca.png"):
    assert os.path.getsize(os.path.join(wd, f)) > 0
  text = open(os.path.join(wd, "summary.md")).read()
  assert "genre_silhouette" in text and "process CPU" in text
  assert len(gravity_mf.checks(summary)) == 6  # 5 claims + the random reference


def test_logq_end_to_end(tmp_path):
  data = write_tiny_movielens(tmp_path / "ml")
  wd = str(tmp_path / "l")
  config = tiny(
      get_config("logq"),
      data,
      **{
          "model.dim": 8,
          "eval.ks": (5, 10, 20),
          "sweep.seeds": (0,),
          "sweep.metrics": ("recall@5", "recall@10", "recall@20"),
          "sweep.temperatures": (0.1,),
      },
  )
  config.sweep.simulation.update(
      steps=60, num_items=50, batch_size=8, alphas=(0.01, 0.5), hashes=(2,), colliding_buckets=20
  )
  sw = sweep.run(config, wd, log=quiet)
  rows = read_csv(os.path.join(wd, "results.csv"))
  assert sorted((r["strategy"], r["seed"]) for r in rows) == [
      ("T=0.1,logq", "0"),
      ("T=0.1,no_logq", "0"),
  ]
  for r in rows:  # each run really used its temperature and log-Q setting
    cfg = open(os.path.join(wd, r["workdir"], "config.json")).read()
    assert '"temperature": 0.1' in cfg
    assert f'"logq": {"true" if r["strategy"].endswith(",logq") else "false"}' in cfg
  text = open(os.path.join(wd, "summary.md")).read()
  assert "## Table 1 form" in text and "| 0.1 |" in text
  assert text.count("log-Q better on") == 3  # one check per K
  curves = sw.extras["simulation"]
  assert set(curves["alpha"]) == {0.01, 0.5} and set(curves["hashes"]) == {2}
  assert all(e.shape == (60,) and np.all(np.isfinite(e)) for e in curves["alpha"].values())
  assert "| 2 hash fn, H=20, alpha=0.01 |" in text
  for f in ("logq_recall.png", "freq_estimation.png"):
    assert os.path.getsize(os.path.join(wd, f)) > 0


def test_sampled_metrics_end_to_end(tmp_path):
  data = write_tiny_movielens(tmp_path / "ml")
  wd = str(tmp_path / "s")
  config = tiny(
      get_config("sampled_metrics"),
      data,
      **{"model.dim": 8, "sweep.seeds": (0,), "sweep.num_negatives": 20, "sweep.mf_dims": (4,)},
  )
  sweep.run(config, wd, log=quiet)
  rows = {r["strategy"]: r for r in read_csv(os.path.join(wd, "results.csv"))}
  assert set(rows) == {"popularity", "mf_d4", "softmax_dnn", "wals"}
  from jaxrec import metrics

  tr, _, te = sweep.load_data(config.data, 0)
  q, v = metrics.popularity_scores(tr)
  assert float(rows["popularity"]["recall@10"]) == pytest.approx(
      metrics.evaluate(q, v, tr, te, ks=(10,))["recall@10"]
  )
  for r in rows.values():
    # 20 sampled negatives instead of every unseen item (about 100): HR goes up (in
    # expectation; by a wide margin at this size, and the run is seeded)
    assert 0.0 <= float(r["full_hr@10"]) <= float(r["sampled_hr@10"]) <= 1.0
  text = open(os.path.join(wd, "summary.md")).read()
  assert "## Rankings" in text and "Kendall tau" in text
  assert ("REORDERED" in text) or ("no reordering" in text)
  for f in ("metrics_bars.png", "full_vs_sampled.png"):
    assert os.path.getsize(os.path.join(wd, f)) > 0


@pytest.mark.parametrize(
    "module",
    [
        "logq",
        "gravity_mf",
        "sampled_metrics",
        "negatives_vs_quality",
        "hard_negatives",
        "popularity_tail",
        "folding_movielens",
    ],
)
def test_missing_data_exits_2_with_a_message(tmp_path, module):
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "experiments.sweep",
          f"--config=experiments/configs/{module}.py",
          f"--workdir={tmp_path / 'w'}",
          f"--config.data.path={tmp_path / 'none'}",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 2, out.stderr[-2000:]
  assert "does not exist" in out.stderr and "jaxrec.data.download" in out.stderr
  assert not os.path.exists(tmp_path / "w")


def test_gravity_mf_needs_movies_csv(tmp_path):
  data = write_tiny_movielens(tmp_path / "ml")
  os.remove(os.path.join(data, "movies.csv"))
  config = tiny(get_config("gravity_mf"), data)
  with pytest.raises(sweep.ConfigError, match="movies.csv' does not exist"):
    sweep.run(config, str(tmp_path / "w"), log=quiet)
  assert not os.path.exists(tmp_path / "w")


def test_negatives_vs_quality_end_to_end(tmp_path):
  from experiments.configs import negatives_vs_quality as nvq

  data = write_tiny_movielens(tmp_path / "ml")
  wd = str(tmp_path / "n")
  config = tiny(
      get_config("negatives_vs_quality"),
      data,
      **{
          "model.dim": 8,
          "sampler.pool_size": 64,
          "sweep.ks": (1, 48),
          "sweep.samplers": ("uniform", "in_batch", "mixed"),
      },
  )
  summary = sweep.run(config, wd, log=quiet).summary
  rows = {r["strategy"]: r for r in read_csv(os.path.join(wd, "results.csv"))}
  # in-batch K=48 > B=32 and mixed K=1 are not defined: 1 + 4 + 2 + 2 runs
  assert set(rows) == {
      nvq.FULL,
      "uniform,K=1,logq",
      "uniform,K=1,no_logq",
      "uniform,K=48,logq",
      "uniform,K=48,no_logq",
      "in_batch,K=1,logq",
      "in_batch,K=1,no_logq",
      "mixed,K=48,logq",
      "mixed,K=48,no_logq",
  }
  cfg = json.load(open(os.path.join(wd, rows["mixed,K=48,logq"]["workdir"], "config.json")))
  assert (cfg["sampler"]["batch_negatives"], cfg["sampler"]["num_uniform"]) == (24, 24)
  assert cfg["sampler"]["logq"] is True and cfg["loss"]["name"] == "sampled"
  cfg = json.load(open(os.path.join(wd, rows["in_batch,K=1,no_logq"]["workdir"], "config.json")))
  assert cfg["sampler"]["batch_negatives"] == 1 and cfg["sampler"]["logq"] is False
  for r in rows.values():  # every run reports the held-out full-softmax loss
    assert 0 < float(r["test_softmax_loss"]) < 20
  text = open(os.path.join(wd, "summary.md")).read()
  assert "### test_softmax_loss (full softmax:" in text
  assert "| in_batch | on | " in text and "n/a" in text
  want = summary["uniform,K=48,logq"]["recall@20"][0]
  assert f"{want:.4f} ± 0.0000" in text
  assert "held-out loss gap to full softmax" in text and "log-Q matters for mixed" in text
  assert os.path.getsize(os.path.join(wd, "negatives_vs_quality.png")) > 0


def test_hard_negatives_end_to_end(tmp_path):
  from experiments.configs import hard_negatives as hn

  data = write_tiny_movielens(tmp_path / "ml")
  wd = str(tmp_path / "h")
  config = tiny(
      get_config("hard_negatives"),
      data,
      **{
          "model.dim": 8,
          "sampler.pool_size": 64,
          "sampler.num_negatives": 16,
          "data.k_core": 0,
          "sweep.seeds": (0, 1),
          "sweep.fractions": (0.5,),
          "sweep.temperatures": (2.0,),
      },
  )
  sweep.run(config, wd, log=quiet)
  rows = read_csv(os.path.join(wd, "results.csv"))
  assert sorted({r["strategy"] for r in rows}) == sorted(
      [hn.UNIFORM, "hard_exact,f=0.5,T=2", "hard_pool,f=0.5,T=2", "hard_topk,f=0.5"]
  )
  assert len(rows) == 8
  for r in rows:
    cfg = json.load(open(os.path.join(wd, r["workdir"], "config.json")))
    assert cfg["data"]["language_split"] == 4
    if r["strategy"] != hn.UNIFORM:
      assert cfg["sampler"]["hard_fraction"] == 0.5
      assert cfg["sampler"]["temperature"] == (1.0 if "topk" in r["strategy"] else 2.0)
    assert 0.0 <= float(r["cross_group@20"]) <= 1.0
  text = open(os.path.join(wd, "summary.md")).read()
  assert "best recall@20:" in text and "/2 seeds" in text
  assert "### cross_group@20 (f = 0, all uniform:" in text
  assert os.path.getsize(os.path.join(wd, "hard_negatives.png")) > 0


def test_popularity_tail_helpers_match_brute_force():
  from experiments import popularity_tail as pt

  rng = np.random.default_rng(0)
  q, v = rng.standard_normal((7, 3)), rng.standard_normal((30, 3))
  tu = np.array([0, 0, 3, 6, 6, 6])
  ti = np.array([1, 2, 5, 0, 7, 9])
  top, mass = pt.topk_and_mass(q, v, tu, ti, k=4, temperature=0.5, chunk=3)
  s = q @ v.T / 0.5
  p = np.exp(s - s.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  np.testing.assert_allclose(mass, p.mean(0), rtol=1e-12)
  s[tu, ti] = -np.inf
  for u in range(7):
    assert set(top[u]) == set(np.argsort(-s[u])[:4])
  counts = np.array([0, 1, 2, 4, 5, 19, 20, 300])
  masks = dict(pt.bin_masks(counts))
  assert [list(np.flatnonzero(masks[b])) for b in ("0", "1", "2-4", "5-19", ">=20")] == [
      [0],
      [1],
      [2, 3],
      [4, 5],
      [6, 7],
  ]
  assert pt.shares(np.arange(8.0), pt.bin_masks(counts))["2-4"] == pytest.approx(5 / 28)


def test_popularity_tail_end_to_end(tmp_path):
  from experiments import popularity_tail as pt

  data = write_tiny_movielens(tmp_path / "ml")
  wd = str(tmp_path / "p")
  config = tiny(
      get_config("popularity_tail"),
      data,
      **{"model.dim": 8, "sampler.num_negatives": 16, "sweep.push_ks": (4, 16)},
  )
  per_seed = sweep.run(config, wd, log=quiet).extras["per_seed"]
  rows = read_csv(os.path.join(wd, "results.csv"))
  assert sorted(r["strategy"] for r in rows) == sorted(pt.RUNS)
  d = per_seed[0]
  for r in pt.RUNS:  # shares over the bins sum to 1
    assert sum(d["runs"][r]["top20"].values()) == pytest.approx(1.0)
    assert sum(d["runs"][r]["mass"].values()) == pytest.approx(1.0)
  assert set(d["push"]) == {("unigram", 4), ("unigram", 16), ("uniform", 4), ("uniform", 16)}
  assert d["push"][("unigram", 4)]["0"] > 0.0  # zero-count items are drawn (smoothed counts)
  text = open(os.path.join(wd, "summary.md")).read()
  assert "## Push of the partition term" in text and "| unigram, K=16 |" in text
  assert "SUPPORTED" in text
  assert os.path.getsize(os.path.join(wd, "popularity_tail.png")) > 0
