"""Regularised MF with gravity vs MF on observed entries only (Google's recommendation course).

Command (defaults: ml-latest-small, 3 seeds, 4 variants):
  python -m experiments.gravity_mf --workdir=runs/gravity_mf \
      [--data_path=../shared/data/ml-latest-small] [--seeds=0,1,2] [--quick] \
      [--genre_min_ratings=20] [--config.train.steps=5000 --config.train.learning_rate=0.5 ...]

Setting. The MovieLens exercise of Google's recommendation course ("Recommendation Systems",
Matrix Factorization / Softmax notebooks): MF with D = 35 trained on observed (user, movie)
pairs only, squared error of the score to 1 (`loss.name=positive_only`,
`positive_only_kind=squared`, `model.name=mf`), against the same model with an L2 penalty
(0.1) and the gravity term (1.0) = mean over ALL user-item pairs of score^2. We add the two
halves (L2 only, gravity only) to see which term does what. Per run we report
  train_mse        mean over train pairs of (u.v - 1)^2 (the "observed-train error"),
  mean_sq_score    mean over all U x N pairs of (u.v)^2 (what gravity penalises),
  recall@20        full ranking over the catalogue, train items masked,
  genre_silhouette mean silhouette of item embeddings grouped by primary genre (first
                   genre in movies.csv), cosine distance,
  genre_knn@10     share of an item's 10 nearest items (cosine) that share its genre,
both genre metrics over the items with >= 20 train ratings (`--genre_min_ratings`; rarer
items barely move from their random init), with random Gaussian embeddings of the same
items as the no-structure reference row. MovieLens lists genres alphabetically, so the
"first" genre favours Action / Adventure / Animation: a noisy label.
Differences from the course: its loss is on the rating value and its L2 and gravity are
over all rows per full-batch step; here the target is 1, the optimiser is row-wise
Adagrad on minibatches, L2 is on the batch's rows (popular rows are penalised more
often) and gravity is over the batch's users x all items (train.py's definitions).

Claim (course): observed-only MF drives the train error towards 0 but also scores the
unobserved pairs high (a large mean squared score over all pairs: nothing in its loss
tells it that most pairs are not relevant), so it recommends poorly; regularisation
raises the training error but improves recall and the genre structure of the embeddings.

Found (defaults, seeds 0-2, mean ± std; 2-core CPU shared with other jobs, load ~10:
wall 105 s, process CPU 77 s):

  variant             recall@20    train_mse    mean_sq_score  silhouette    knn@10
  observed_only       0.093±0.008  0.021±0.000  0.310±0.004   -0.166±0.004  0.228±0.008
  l2=0.1              0.110±0.017  0.076±0.000  0.235±0.002   -0.279±0.015  0.235±0.007
  gravity=1.0         0.172±0.003  0.102±0.000  0.104±0.001   -0.186±0.001  0.247±0.011
  l2=0.1+gravity=1.0  0.238±0.006  0.194±0.000  0.102±0.001   -0.312±0.023  0.251±0.009
  random embeddings   -            -            -             -0.169±0.012  0.212±0.004

Held: regularisation raises the observed-train error (0.02 -> 0.19), cuts the mean squared
score over all pairs 3x (0.31 -> 0.10) and raises recall@20 2.6x (0.09 -> 0.24); gravity
does most of it. Genre structure: mixed. The 10-NN genre agreement rises a little (0.228
-> 0.251, random 0.212), but the silhouette falls (-0.17 -> -0.31; random -0.17). Why we
think so: the first-listed genre is an alphabetical, noisy label, and the L2 term packs
the item embeddings around one shared direction (mean pairwise cosine of the items with
>= 20 ratings 0.85-0.89 with L2 vs 0.52 without, seed 0; coverage@20 falls from 14% to
2%): local neighbourhoods (kNN) survive, but between-genre distances shrink relative to
within-genre spread, so the silhouette, a global separation score, gets worse (gravity
alone leaves it at -0.19). No run has genre clusters a silhouette can see (all < 0).
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np

from experiments import ablation_common, report as report_lib
from experiments import sweep
from jaxrec import data as jaxrec_data
from jaxrec import train

DEFAULT_DATA = "../shared/data/ml-latest-small"
L2 = 0.1
GRAVITY = 1.0
METRICS = ("recall@20", "train_mse", "mean_sq_score", "genre_silhouette", "genre_knn@10")
GENRE_MIN_RATINGS = 20   # genre metrics over items with at least this many train ratings
KNN = 10
RANDOM = "random_embeddings (reference)"
NO_GENRE = "(no genres listed)"


def get_config():
  """Base config: MF, D = 35, squared error to 1 on observed pairs (no negatives)."""
  c = ablation_common.movielens_base(DEFAULT_DATA)
  c.data.path = DEFAULT_DATA
  c.model.name = "mf"
  c.model.dim = 35
  c.loss.name = "positive_only"
  c.loss.positive_only_kind = "squared"
  c.loss.l2 = 0.0
  c.loss.gravity = 0.0
  c.train.steps = 5000
  c.train.batch_size = 256
  c.train.learning_rate = 0.5
  c.train.optimizer = "adagrad"
  c.train.log_every = 1000
  c.train.checkpoint_every = 0
  c.eval.ks = (10, 20)
  c.eval.save_embeddings = True
  return c


def strategies() -> list[sweep.Run]:
  R = sweep.Run
  return [
      R("observed_only", (("loss.l2", 0.0), ("loss.gravity", 0.0))),
      R(f"l2={L2}", (("loss.l2", L2), ("loss.gravity", 0.0))),
      R(f"gravity={GRAVITY}", (("loss.l2", 0.0), ("loss.gravity", GRAVITY))),
      R(f"l2={L2}+gravity={GRAVITY}", (("loss.l2", L2), ("loss.gravity", GRAVITY))),
  ]


# --------------------------------------------------------------------------------------
# Metrics on the learned embeddings (numpy, float64).


def observed_mse(query_UxD, items_NxD, user_ids, item_ids) -> float:
  """mean_{(u,i) in train} (q_u . v_i - 1)^2: the objective's data term, unregularised."""
  q = np.asarray(query_UxD, np.float64)[np.asarray(user_ids)]
  v = np.asarray(items_NxD, np.float64)[np.asarray(item_ids)]
  return float(np.mean((np.einsum("ed,ed->e", q, v) - 1.0) ** 2))


def mean_squared_score(query_UxD, items_NxD) -> float:
  """mean_{u,i} (q_u . v_i)^2 over all U x N pairs = <Q^T Q, V^T V>_F / (U N)
  (the Gramian identity behind the gravity term; Krichene et al. 2019), O((U+N) D^2)."""
  q = np.asarray(query_UxD, np.float64)
  v = np.asarray(items_NxD, np.float64)
  return float(np.sum((q.T @ q) * (v.T @ v)) / (q.shape[0] * v.shape[0]))


def silhouette_cosine(x_NxD, labels_N, *, chunk: int = 1024) -> float:
  """Mean silhouette (Rousseeuw 1987) of the rows of x under cosine distance 1 - cos.

  For row i in cluster c: a_i = mean distance to the other members of c, b_i = min over
  clusters c' != c of the mean distance to the members of c', s_i = (b_i - a_i) /
  max(a_i, b_i), and s_i = 0 when c has one member (sklearn's convention). Rows with a
  negative label are left out. Computed in row chunks ([chunk, N] distances at a time),
  so N = 10^4 needs no N x N matrix. Zero rows get distance 1 to everything.
  """
  x = np.asarray(x_NxD, np.float64)
  labels = np.asarray(labels_N)
  if x.ndim != 2 or labels.shape != (x.shape[0],):
    raise ValueError(f"x must be [N, D] and labels [N]; got {x.shape} and {labels.shape}")
  keep = labels >= 0
  x, labels = x[keep], labels[keep]
  names, lab = np.unique(labels, return_inverse=True)
  if names.size < 2:
    raise ValueError(f"silhouette needs >= 2 clusters, got {names.size}")
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  xn = np.where(norms > 0, x / np.maximum(norms, 1e-300), 0.0)
  onehot_NxG = np.eye(names.size)[lab]
  sizes = onehot_NxG.sum(0)
  out = np.empty(x.shape[0])
  for lo in range(0, x.shape[0], chunk):
    sl = slice(lo, lo + chunk)
    dist_CxN = 1.0 - xn[sl] @ xn.T
    sums_CxG = dist_CxN @ onehot_NxG
    rows = np.arange(sums_CxG.shape[0])
    own = lab[sl]
    self_dist = 1.0 - np.sum(xn[sl] * xn[sl], axis=1)   # 0 for a nonzero row
    n_own = sizes[own]
    a = (sums_CxG[rows, own] - self_dist) / np.maximum(n_own - 1, 1)
    means = sums_CxG / sizes
    means[rows, own] = np.inf
    b = means.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-300)
    out[sl] = np.where(n_own > 1, s, 0.0)
  return float(out.mean())


def knn_label_agreement(x_NxD, labels_N, *, k: int = KNN, chunk: int = 1024
                        ) -> tuple[float, float]:
  """(agreement, chance): mean over labelled rows of the share of the row's k nearest
  other rows (cosine similarity) with the same label, and its value for neighbours drawn
  at random, sum_c n_c (n_c - 1) / (n (n - 1)). Rows with a negative label are left out."""
  x = np.asarray(x_NxD, np.float64)
  labels = np.asarray(labels_N)
  keep = labels >= 0
  x, lab = x[keep], labels[keep]
  n = x.shape[0]
  if not 0 < k < n:
    raise ValueError(f"k={k} must be in [1, {n - 1}] for {n} labelled rows")
  xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
  agree = 0.0
  for lo in range(0, n, chunk):
    sim = xn[lo:lo + chunk] @ xn.T
    rows = np.arange(sim.shape[0])
    sim[rows, lo + rows] = -np.inf                      # not its own neighbour
    nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    agree += float(np.sum(lab[nn] == lab[lo:lo + chunk, None]))
  sizes = np.unique(lab, return_counts=True)[1].astype(np.float64)
  return agree / (n * k), float(np.sum(sizes * (sizes - 1)) / (n * (n - 1)))


def primary_genres(movies_csv: str, item_raw) -> tuple[np.ndarray, list[str]]:
  """[N] int labels (index into the returned genre names; -1: unknown or no genre) from the
  first genre of each movie in a MovieLens movies.csv (movieId,title,genres)."""
  first: dict[str, str] = {}
  with open(movies_csv, newline="", encoding="utf-8") as f:
    rows = csv.reader(f)
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header[:3]] != ["movieid", "title",
                                                                     "genres"]:
      raise ValueError(f"{movies_csv}: expected the header movieId,title,genres, got {header}")
    for line, row in enumerate(rows, start=2):
      if len(row) < 3:
        raise ValueError(f"{movies_csv}:{line}: expected 3 fields, got {len(row)}")
      genre = row[2].split("|")[0].strip()
      if genre and genre != NO_GENRE:
        first[row[0].strip()] = genre
  names = sorted(set(first.values()))
  index = {g: k for k, g in enumerate(names)}
  labels = np.array([index.get(first.get(str(r), ""), -1) for r in item_raw], np.int32)
  return labels, names


def _raw_ids(raw):
  """Raw ids as strings without a float's '.0' (movieId may be read as int)."""
  return [str(int(r)) if isinstance(r, (int, np.integer)) else str(r) for r in raw]


def genre_labels(train_inter, genres_N, min_ratings: int) -> np.ndarray:
  """Primary-genre labels of the items with >= min_ratings train ratings, -1 elsewhere."""
  counts = np.bincount(train_inter.item_ids, minlength=train_inter.num_items)
  return np.where(counts >= max(int(min_ratings), 1), genres_N, -1)


def extra_metrics(run_workdir: str, train_inter, labels_N) -> dict[str, float]:
  """The embedding metrics of one finished run (from its embeddings.npz)."""
  z = np.load(os.path.join(run_workdir, "embeddings.npz"))
  q, v = z["query"], z["items"]
  return {"train_mse": observed_mse(q, v, train_inter.user_ids, train_inter.item_ids),
          "mean_sq_score": mean_squared_score(q, v),
          "genre_silhouette": silhouette_cosine(v, labels_N),
          f"genre_knn@{KNN}": knn_label_agreement(v, labels_N)[0]}


def random_reference(labels_N, dim: int, seed: int) -> dict[str, float]:
  """Genre metrics of Gaussian random item embeddings: the no-structure level."""
  v = np.random.default_rng(seed).normal(size=(labels_N.shape[0], dim))
  return {"genre_silhouette": silhouette_cosine(v, labels_N),
          f"genre_knn@{KNN}": knn_label_agreement(v, labels_N)[0]}


# --------------------------------------------------------------------------------------
# The ablation.


def checks(summary: dict) -> list[str]:
  """The course's claims, each with the measured means and PASS/FAIL."""
  base, reg = "observed_only", f"l2={L2}+gravity={GRAVITY}"
  if base not in summary or reg not in summary:
    return []

  def m(s, k):
    return summary[s][k][0]

  out = []
  for key, word, better in (("train_mse", "raises observed-train error", lambda b, r: r > b),
                            ("mean_sq_score", "lowers the mean squared score over all pairs",
                             lambda b, r: r < b),
                            ("recall@20", "improves recall@20", lambda b, r: r > b),
                            ("genre_silhouette", "improves genre structure (silhouette)",
                             lambda b, r: r > b),
                            (f"genre_knn@{KNN}", f"improves genre structure ({KNN}-NN agreement)",
                             lambda b, r: r > b)):
    b, r = m(base, key), m(reg, key)
    out.append(f"{'PASS' if better(b, r) else 'FAIL'}: regularisation {word}: {key} "
               f"{b:.4f} -> {r:.4f}")
  if RANDOM in summary:
    rs = summary[RANDOM]
    out.append(f"reference: random Gaussian item embeddings score genre_silhouette "
               f"{rs['genre_silhouette'][0]:.4f}, genre_knn@{KNN} "
               f"{rs[f'genre_knn@{KNN}'][0]:.4f} on the same items")
  return out


def run(config, workdir: str, seeds: Sequence[int], *, variants: Sequence[str] | None = None,
        genre_min_ratings: int = GENRE_MIN_RATINGS, log=print) -> dict:
  """Trains every variant (all of `strategies()` unless named) x seed (resumable), adds the
  embedding metrics to results.csv, writes summary.md, metrics_bars.png and item_pca.png.
  Returns the summary dict."""
  movies = os.path.join(config.data.path, "movies.csv")
  if not os.path.isfile(movies):
    raise train.ConfigError(f"{movies} not found: the genre silhouette needs the movies.csv "
                            "of a MovieLens 'latest' folder beside ratings.csv")
  clock = ablation_common.Clock()
  runs = strategies()
  if variants is not None:
    unknown = set(variants) - {r.strategy for r in runs}
    if unknown:
      raise ValueError(f"unknown variants {sorted(unknown)}; choose from "
                       f"{[r.strategy for r in runs]}")
    runs = [r for r in runs if r.strategy in variants]
  log(f"gravity_mf: {len(runs)} variants x {len(seeds)} seeds -> {workdir}")
  sweep.run_sweep(config, runs, seeds, workdir)
  rows = report_lib.read_results(workdir)
  inter_by_seed = {}
  for seed in seeds:
    tr, _ = jaxrec_data.load_data(config.data, int(seed))
    labels = genre_labels(tr, primary_genres(movies, _raw_ids(tr.item_raw))[0],
                          genre_min_ratings)
    inter_by_seed[int(seed)] = (tr, labels)
  for row in rows:
    tr, labels = inter_by_seed[int(row["seed"])]
    row.update(extra_metrics(os.path.join(workdir, row["workdir"]), tr, labels))
  for seed in seeds:
    rows.append({"strategy": RANDOM, "seed": int(seed), "overrides": "{}", "workdir": "",
                 **random_reference(inter_by_seed[int(seed)][1], int(config.model.dim),
                                    int(seed))})
  sweep.write_csv_atomic(os.path.join(workdir, "results.csv"), rows)
  summary = report_lib.summarize(report_lib.read_results(workdir))
  notes = checks(summary)
  order = [r.strategy for r in runs if r.strategy in summary] + [RANDOM]
  report_lib.write_summary(workdir, summary, title="Regularised MF with gravity (D = 35)",
                           metrics=METRICS, notes=notes)
  report_lib.plot_bars(workdir, summary, METRICS, "metrics_bars.png", order)
  tr, _ = inter_by_seed[int(seeds[0])]
  _plot_pca(workdir, [(s, sweep.run_dir(workdir, s, seeds[0])) for s in order[:-1]], tr,
            movies, min_count=genre_min_ratings)
  facts = clock.facts()
  n_items = int(np.sum(inter_by_seed[int(seeds[0])][1] >= 0))
  ablation_common.append_lines(os.path.join(workdir, "summary.md"), [
      "", f"Genre metrics over the {n_items} items with >= {genre_min_ratings} train ratings "
      "(seed " + str(seeds[0]) + "), labelled by their first genre in movies.csv (MovieLens "
      "lists genres alphabetically, so 'first' favours Action/Adventure/Animation); "
      f"genre_knn@{KNN} = share of an item's {KNN} nearest items (cosine) with its genre.",
      *ablation_common.facts_lines(facts, seeds, config)])
  for n in notes:
    log(n)
  log(f"done: wall {facts['wall_seconds']:.0f}s, CPU {facts['cpu_seconds']:.0f}s; see "
      f"{os.path.join(workdir, 'summary.md')}")
  return summary


def _plot_pca(workdir, panels, train_inter, movies, top_genres=6, min_count=20):
  """Item embeddings (items with >= min_count train ratings) on their top-2 principal axes,
  coloured by primary genre (the 6 most common): the course's 'do genres cluster?' picture."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  labels, names = primary_genres(movies, _raw_ids(train_inter.item_raw))
  counts = np.bincount(train_inter.item_ids, minlength=train_inter.num_items)
  sel = (counts >= min_count) & (labels >= 0)
  if not sel.any():
    sel = (counts >= 1) & (labels >= 0)
  common = np.argsort(-np.bincount(labels[sel], minlength=len(names)))[:top_genres]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
  axes = np.atleast_1d(axes)
  cmap = plt.get_cmap("tab10")
  for ax, (title, wd) in zip(axes, panels):
    v = np.load(os.path.join(wd, "embeddings.npz"))["items"][sel]
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    v = v - v.mean(0)
    _, _, vt = np.linalg.svd(v, full_matrices=False)
    p = v @ vt[:2].T
    for k, g in enumerate(common):
      m = labels[sel] == g
      ax.scatter(*p[m].T, s=5, alpha=0.6, color=cmap(k), label=names[g])
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0].legend(fontsize=7, markerscale=2, loc="best")
  fig.suptitle(f"PCA of L2-normalised item embeddings (items with >= {min_count} train "
               "ratings), by primary genre", fontsize=9)
  fig.tight_layout()
  path = os.path.join(workdir, "item_pca.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(config, workdir, data_path, seeds, quick, genre_min_ratings=GENRE_MIN_RATINGS):
  config, seeds = ablation_common.prepare(
      config, data_path, seeds, quick, quick_steps=1500,
      what="ml-latest-small (ratings.csv and movies.csv)")
  ablation_common.exit_on_config_error(run, config, workdir, seeds,
                                       genre_min_ratings=genre_min_ratings)


if __name__ == "__main__":
  ablation_common.run_cli(
      get_config, main, workdir="runs/gravity_mf", default_data=DEFAULT_DATA,
      data_help="MovieLens folder with ratings.csv and movies.csv.",
      seeds_help="Seeds (default 0,1,2; --quick: 0).",
      quick_help="One seed, 1500 steps (about a minute).",
      define_extra=lambda flags: {"genre_min_ratings": flags.DEFINE_integer(
          "genre_min_ratings", GENRE_MIN_RATINGS,
          "Genre metrics over items with at least this many train ratings.")})
