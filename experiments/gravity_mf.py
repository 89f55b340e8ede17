"""The gravity-MF ablation's analysis: embedding metrics (train error, mean squared score, genre
structure) per run, the course's checks, the bars and the item PCA.

The sweep, the setting, the claim and what it measured: experiments/configs/gravity_mf.py.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from experiments import report as report_lib
from experiments import sweep

KNN = 10
RANDOM = "random_embeddings (reference)"
NO_GENRE = "(no genres listed)"


def add_rows(sw: sweep.Sweep) -> list[dict]:
  """The embedding metrics of every run, and one random-embedding reference row per seed
  (the genre labels per seed are kept in sw.extras["genres"])."""
  movies = os.path.join(sw.config.data.path, "movies.csv")
  min_ratings = int(sw.spec.genre_min_ratings)
  genres = sw.extras["genres"] = {}
  for seed in sw.seeds:
    tr, _, _ = sweep.load_data(sw.config.data, seed)
    labels = genre_labels(tr, primary_genres(movies, _raw_ids(tr.item_raw))[0], min_ratings)
    genres[seed] = (tr, labels)
  rows = list(sw.rows)
  for row in rows:
    tr, labels = genres[int(row["seed"])]
    row.update(extra_metrics(os.path.join(sw.workdir, row["workdir"]), tr, labels))
  for seed in sw.seeds:
    rows.append(
        {
            "strategy": RANDOM,
            "seed": seed,
            "overrides": "{}",
            "workdir": "",
            **random_reference(genres[seed][1], int(sw.config.model.dim), seed),
        }
    )
  return rows


def analysis(sw: sweep.Sweep) -> tuple[list[str], list[str]]:
  """The checks, metrics_bars.png, item_pca.png (first seed) and the genre note."""
  p = sw.spec.predictions
  notes = checks(sw.summary, p.baseline, p.regularised)
  order = [r.strategy for r in sw.runs if r.strategy in sw.summary] + [RANDOM]
  report_lib.plot_bars(sw.workdir, sw.summary, sw.spec.metrics, "metrics_bars.png", order)
  s0, min_ratings = sw.seeds[0], int(sw.spec.genre_min_ratings)
  tr, labels = sw.extras["genres"][s0]
  _plot_pca(
      sw.workdir,
      [(s, sw.run_dir(s, s0)) for s in order[:-1]],
      tr,
      os.path.join(sw.config.data.path, "movies.csv"),
      min_count=min_ratings,
  )
  return notes, [
      "",
      f"Genre metrics over the {int(np.sum(labels >= 0))} items with >= {min_ratings} "
      f"train ratings (seed {s0}), labelled by their first genre in movies.csv (MovieLens "
      "lists genres alphabetically, so 'first' favours Action/Adventure/Animation); "
      f"genre_knn@{KNN} = share of an item's {KNN} nearest items (cosine) with its genre.",
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
    self_dist = 1.0 - np.sum(xn[sl] * xn[sl], axis=1)  # 0 for a nonzero row
    n_own = sizes[own]
    a = (sums_CxG[rows, own] - self_dist) / np.maximum(n_own - 1, 1)
    means = sums_CxG / sizes
    means[rows, own] = np.inf
    b = means.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-300)
    out[sl] = np.where(n_own > 1, s, 0.0)
  return float(out.mean())


def knn_label_agreement(x_NxD, labels_N, *, k: int = KNN, chunk: int = 1024) -> tuple[float, float]:
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
    sim = xn[lo : lo + chunk] @ xn.T
    rows = np.arange(sim.shape[0])
    sim[rows, lo + rows] = -np.inf  # not its own neighbour
    nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    agree += float(np.sum(lab[nn] == lab[lo : lo + chunk, None]))
  sizes = np.unique(lab, return_counts=True)[1].astype(np.float64)
  return agree / (n * k), float(np.sum(sizes * (sizes - 1)) / (n * (n - 1)))


def primary_genres(movies_csv: str, item_raw) -> tuple[np.ndarray, list[str]]:
  """[N] int labels (index into the returned genre names; -1: unknown or no genre) from the
  first genre of each movie in a MovieLens movies.csv (movieId,title,genres)."""
  first: dict[str, str] = {}
  with open(movies_csv, newline="", encoding="utf-8") as f:
    rows = csv.reader(f)
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header[:3]] != ["movieid", "title", "genres"]:
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
  return {
      "train_mse": observed_mse(q, v, train_inter.user_ids, train_inter.item_ids),
      "mean_sq_score": mean_squared_score(q, v),
      "genre_silhouette": silhouette_cosine(v, labels_N),
      f"genre_knn@{KNN}": knn_label_agreement(v, labels_N)[0],
  }


def random_reference(labels_N, dim: int, seed: int) -> dict[str, float]:
  """Genre metrics of Gaussian random item embeddings: the no-structure level."""
  v = np.random.default_rng(seed).normal(size=(labels_N.shape[0], dim))
  return {
      "genre_silhouette": silhouette_cosine(v, labels_N),
      f"genre_knn@{KNN}": knn_label_agreement(v, labels_N)[0],
  }


def checks(
    summary: dict, base: str = "observed_only", reg: str = "l2=0.1+gravity=1.0"
) -> list[str]:
  """The course's claims (regularised `reg` against `base`), each with the measured means
  and PASS/FAIL."""
  if base not in summary or reg not in summary:
    return []

  def m(s, k):
    return summary[s][k][0]

  out = []
  for key, word, better in (
      ("train_mse", "raises observed-train error", lambda b, r: r > b),
      ("mean_sq_score", "lowers the mean squared score over all pairs", lambda b, r: r < b),
      ("recall@20", "improves recall@20", lambda b, r: r > b),
      ("genre_silhouette", "improves genre structure (silhouette)", lambda b, r: r > b),
      (f"genre_knn@{KNN}", f"improves genre structure ({KNN}-NN agreement)", lambda b, r: r > b),
  ):
    b, r = m(base, key), m(reg, key)
    out.append(
        f"{'PASS' if better(b, r) else 'FAIL'}: regularisation {word}: {key} " f"{b:.4f} -> {r:.4f}"
    )
  if RANDOM in summary:
    rs = summary[RANDOM]
    out.append(
        f"reference: random Gaussian item embeddings score genre_silhouette "
        f"{rs['genre_silhouette'][0]:.4f}, genre_knn@{KNN} "
        f"{rs[f'genre_knn@{KNN}'][0]:.4f} on the same items"
    )
  return out


def _plot_pca(workdir, panels, train_inter, movies, top_genres=6, min_count=20):
  """Item embeddings (items with >= min_count train ratings) on their top-2 principal axes,
  coloured by primary genre (the 6 most common): the course's 'do genres cluster?' picture."""
  plt = report_lib.pyplot()

  labels, names = primary_genres(movies, _raw_ids(train_inter.item_raw))
  counts = np.bincount(train_inter.item_ids, minlength=train_inter.num_items)
  sel = (counts >= min_count) & (labels >= 0)
  if not sel.any():
    sel = (counts >= 1) & (labels >= 0)
  common = np.argsort(-np.bincount(labels[sel], minlength=len(names)))[:top_genres]
  fig, axes = report_lib.panel_row(len(panels), 4.2, 4.2)
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
  fig.suptitle(
      f"PCA of L2-normalised item embeddings (items with >= {min_count} train "
      "ratings), by primary genre",
      fontsize=9,
  )
  return report_lib.save_figure(fig, workdir, "item_pca.png")
