"""Sweep folder -> summary.md (mean +- std over seeds per strategy) and plots.

  python -m experiments.report --workdir=runs/folding

Plots (PNG): bars of recall@K and cross_group@K per strategy with std error bars; recall vs
cross-group scatter (quality vs folding); and, where runs saved embeddings, a PCA picture of
item and query embeddings coloured by group for chosen strategies (the picture of folding).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Sequence

import numpy as np

QUALITY = "recall@20"
FOLDING = "cross_group@20"
# A summary's columns; the held-out folding measures agree with cross_group@K on real data,
# folding_auc (uniform pairs) is kept for the records that have only it.
DEFAULT_METRICS = (
    QUALITY,
    "ndcg@20",
    FOLDING,
    "cross_group_heldout",
    "folding_auc_heldout",
    "folding_auc",
)


def read_results(sweep_dir: str) -> list[dict]:
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  for r in rows:
    for k, v in r.items():
      if k in ("strategy", "overrides", "workdir"):
        continue
      try:
        r[k] = float(v)
      except (TypeError, ValueError):
        pass
  return rows


def summarize(rows: list[dict]) -> dict[str, dict]:
  """strategy -> {metric: (mean, std), "n": runs, "overrides": ...}; std is the sample std
  (ddof=1), 0 for one run."""
  out: dict[str, dict] = {}
  for r in rows:
    out.setdefault(r["strategy"], {"_rows": []})["_rows"].append(r)
  for s, d in out.items():
    rs = d.pop("_rows")
    d["overrides"] = rs[0]["overrides"]
    d["n"] = len(rs)
    for k in rs[0]:
      vals = [r[k] for r in rs if isinstance(r.get(k), float) and not math.isnan(r[k])]
      if vals and k not in ("seed",):
        d[k] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
  return out


def fmt(ms, digits: int = 3) -> str:
  """(mean, std) -> 'mean ± std' with `digits` decimals."""
  m, s = ms[:2]
  return f"{m:.{digits}f} ± {s:.{digits}f}"


def write_summary(
    sweep_dir: str, summary: dict, *, title: str, metrics: Sequence[str], notes: Sequence[str] = ()
) -> str:
  order = sorted(summary, key=lambda s: -summary[s].get(metrics[0], (-1, 0))[0])
  lines = [
      f"# {title}",
      "",
      f"Mean ± std over seeds (n per row in the last column; the mean alone where n = 1), "
      f"sorted by {metrics[0]}. "
      "Full-ranking metrics over the whole catalogue, training items masked. steps/s "
      "counts the steps after the first (compiling) one; compile s is that first step.",
      "",
  ]
  cols = [m for m in metrics if any(m in summary[s] for s in order)]
  lines.append("| strategy | " + " | ".join(cols) + " | steps/s | compile s | n |")
  lines.append("|---|" + "---|" * (len(cols) + 3))
  for s in order:
    d = summary[s]
    # one seed: the mean alone (a sample std is undefined; "± 0.000" would read as measured)
    cells = [("–" if m not in d else fmt(d[m]) if d["n"] > 1 else f"{d[m][0]:.3f}") for m in cols]
    sps = f"{d['steps_per_second'][0]:.0f}" if "steps_per_second" in d else "–"
    comp = f"{d['compile_seconds'][0]:.1f}" if "compile_seconds" in d else "–"
    lines.append(f"| {s} | " + " | ".join(cells) + f" | {sps} | {comp} | {d['n']} |")
  lines += ["", "Config overrides per strategy (on top of the base config):", ""]
  for s in order:
    lines.append(f"- `{s}`: `{summary[s]['overrides']}`")
  if notes:
    lines += ["", "## Checks", ""] + [f"- {n}" for n in notes]
  path = os.path.join(sweep_dir, "summary.md")
  with open(path + ".tmp", "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(path + ".tmp", path)
  return path


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (imported when a plot is made)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def panel_row(n: int, width: float, height: float):
  """A figure of n panels side by side, each width x height inches -> (fig, axes [n])."""
  fig, axes = pyplot().subplots(1, n, figsize=(width * n, height))
  return fig, np.atleast_1d(axes)


def save_figure(fig, folder: str, fname: str, *, layout: bool = True) -> str:
  """Tight layout (unless layout=False), a 110-dpi PNG at folder/fname written atomically
  (temp file + rename), the figure closed. Returns the path."""
  if layout:
    fig.tight_layout()
  path = os.path.join(folder, fname)
  fig.savefig(f"{path}.tmp", dpi=110, format="png")
  pyplot().close(fig)
  os.replace(f"{path}.tmp", path)
  return path


def plot_series(ax, points, *, min_points: int = 1, **style) -> bool:
  """points: (x, (mean, std) or None); draws the measured ones as mean ± std error bars
  (matplotlib `style`) if there are at least min_points. Returns whether it drew."""
  pts = [(x, v) for x, v in points if v is not None]
  if len(pts) < min_points:
    return False
  ax.errorbar([x for x, _ in pts], [v[0] for _, v in pts], yerr=[v[1] for _, v in pts], **style)
  return True


def pivot_tables(
    summary: dict,
    metrics: Sequence[str],
    *,
    reference: str,
    reference_name: str,
    head: tuple[str, str],
    rows,
    columns,
    missing: str,
) -> list[str]:
  """One markdown table per metric ('mean ± std', 4 decimals): a row per (first cell,
  second cell, label_of) of `rows`, a column per (title, value) of `columns`, the cell of
  strategy label_of(value) (`missing` where it did not run); the heading carries the
  `reference` strategy's value."""
  out = []
  ref_d = summary.get(reference, {})
  for m in metrics:
    ref = fmt(ref_d[m], 4) if m in ref_d else "–"
    out += [
        "",
        f"### {m} ({reference_name}: {ref})",
        "",
        f"| {head[0]} | {head[1]} | " + " | ".join(t for t, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for first, second, label_of in rows:
      cells = [
          fmt(summary[lab][m], 4) if m in summary.get(lab := label_of(v), {}) else missing
          for _, v in columns
      ]
      out.append(f"| {first} | {second} | " + " | ".join(cells) + " |")
  return out


def plot_bars(
    sweep_dir: str,
    summary: dict,
    metric_names: Sequence[str],
    fname: str,
    order: Sequence[str] | None = None,
) -> str:
  plt = pyplot()

  order = list(order or sorted(summary))
  fig, axes = plt.subplots(
      1, len(metric_names), figsize=(5.5 * len(metric_names), 4.2 + 0.12 * len(order))
  )
  axes = np.atleast_1d(axes)
  for ax, m in zip(axes, metric_names):
    means = [summary[s].get(m, (np.nan, 0))[0] for s in order]
    stds = [summary[s].get(m, (np.nan, 0))[1] for s in order]
    y = np.arange(len(order))
    ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(y, order, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(m)
    ax.grid(axis="x", alpha=0.3)
  return save_figure(fig, sweep_dir, fname)


def spread_labels(y, gap: float) -> np.ndarray:
  """Label heights as close to the points' heights `y` as they can be while any two are
  at least `gap` apart: min sum_i (l_i - y_i)^2 s.t. l_(i+1) - l_i >= gap in y's order.
  With z_i = l_i - i gap it is isotonic regression of y_i - i gap, solved exactly by
  pooling adjacent violators (Barlow et al. 1972): each pooled block sits at its mean."""
  y = np.asarray(y, float)
  order = np.argsort(y, kind="stable")
  target = y[order] - gap * np.arange(len(y))
  blocks = []  # [mean, count]
  for t in target:
    blocks.append([t, 1])
    while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
      m2, n2 = blocks.pop()
      m1, n1 = blocks.pop()
      blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
  z = np.concatenate([np.full(n, m) for m, n in blocks]) if blocks else np.zeros(0)
  out = np.empty_like(y)
  out[order] = z + gap * np.arange(len(y))
  return out


def plot_scatter(
    sweep_dir: str,
    summary: dict,
    x: str = FOLDING,
    y: str = QUALITY,
    fname: str = "quality_vs_folding.png",
) -> str:
  """recall vs cross-group, one point per strategy with std error bars. Strategies often
  sit on top of each other (every non-folding one near x = 0), so labels go in a column to
  the right of each cluster of nearby points, spread apart (spread_labels), with a line to
  their point."""
  plt = pyplot()

  pts = [
      (s, d[x], d[y])
      for s, d in sorted(summary.items())
      if x in d and y in d and np.isfinite(d[x][0]) and np.isfinite(d[y][0])
  ]
  fig, ax = plt.subplots(figsize=(7.5, 5.5))
  # tab10, then darker colours of their own (tab20's pale halves read badly as text)
  colors = list(plt.get_cmap("tab10").colors) + [
      "black",
      "darkgoldenrod",
      "teal",
      "navy",
      "maroon",
      "darkolivegreen",
  ]
  for i, (s, (mx, sx), (my, sy)) in enumerate(pts):
    ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt="o", capsize=3, color=colors[i % len(colors)])
  ax.set_xlabel(f"{x} (folding: lower is better)")
  ax.set_ylabel(f"{y} (quality: higher is better)")
  ax.grid(alpha=0.3)
  xs = np.array([p[1][0] for p in pts])
  ys = np.array([p[2][0] for p in pts])
  if pts:
    x0, x1 = min(0.0, xs.min()), max(xs.max(), 1e-9)
    y0, y1 = min(0.0, ys.min()), max(ys.max(), 1e-9)
    ax.set_xlim(x0 - 0.05 * (x1 - x0), x1 + 0.35 * (x1 - x0))  # room for the labels
    ax.set_ylim(y0 - 0.08 * (y1 - y0), y1 + 0.12 * (y1 - y0))
  fig.tight_layout()
  if pts:
    to_ax = ax.transData + ax.transAxes.inverted()
    ax_xy = to_ax.transform(np.stack([xs, ys], 1))
    height_pt = ax.get_window_extent().height * 72 / fig.dpi
    gap = 9.5 / height_pt  # one 7-pt line, in axes fractions
    # clusters: runs of points whose x (in axes fractions) is within 0.12 of the previous
    by_x = np.argsort(ax_xy[:, 0], kind="stable")
    cuts = np.flatnonzero(np.diff(ax_xy[by_x, 0]) >= 0.12) + 1
    for c in np.split(by_x, cuts):
      label_y = spread_labels(ax_xy[c, 1], gap)
      label_x = ax_xy[c, 0].max() + 0.06
      for i, ly in zip(c, label_y):
        ax.annotate(
            pts[i][0],
            ax_xy[i],
            xycoords="axes fraction",
            xytext=(label_x, ly),
            textcoords="axes fraction",
            fontsize=7,
            va="center",
            color=colors[i % len(colors)],
            annotation_clip=False,
            arrowprops=dict(
                arrowstyle="-", lw=0.5, color="0.5", relpos=(0, 0.5), shrinkA=1, shrinkB=3
            ),
        )
  return save_figure(fig, sweep_dir, fname, layout=False)  # laid out before the labels


def plot_embeddings(
    sweep_dir: str, panels: Sequence[tuple[str, str]], fname: str = "embeddings_pca.png"
) -> str | None:
  """panels: (title, run workdir relative to sweep_dir) with an embeddings.npz inside.

  Items and queries of each run are projected together onto the top-2 principal axes of
  the items; colour = group, dots = items, crosses = queries."""
  plt = pyplot()

  found = [(t, os.path.join(sweep_dir, wd, "embeddings.npz")) for t, wd in panels]
  found = [(t, p) for t, p in found if os.path.exists(p)]
  if not found:
    return None
  fig, axes = panel_row(len(found), 4.6, 4.4)
  cmap = plt.get_cmap("tab10")
  for ax, (title, p) in zip(axes, found):
    z = np.load(p)
    items, query = z["items"], z["query"]
    ig, ug = z["item_groups"], z["user_groups"]
    mean = items.mean(0)
    _, _, vt = np.linalg.svd(items - mean, full_matrices=False)
    pi, pq = (items - mean) @ vt[:2].T, (query - mean) @ vt[:2].T
    # normalise each cloud's scale so both are visible on one plot
    pq = pq * (np.abs(pi).max() / max(np.abs(pq).max(), 1e-9))
    # one scatter per cloud in a fixed random order: drawing group by group would bury the
    # earlier groups under the last one wherever they overlap
    order = np.random.default_rng(0).permutation(len(pi))
    ax.scatter(*pi[order].T, s=4, c=[cmap(int(g) % 10) for g in ig[order]], alpha=0.6)
    shown = np.concatenate([np.flatnonzero(ug == g)[:200] for g in np.unique(ug)])
    shown = np.random.default_rng(1).permutation(shown)
    ax.scatter(*pq[shown].T, s=10, marker="x", c=[cmap(int(g) % 10) for g in ug[shown]], alpha=0.5)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("PCA of item (dots) and query (x) embeddings, coloured by group", fontsize=10)
  return save_figure(fig, sweep_dir, fname)


def report(
    sweep_dir: str,
    *,
    title: str = "Sweep summary",
    metrics: Sequence[str] = DEFAULT_METRICS,
    notes: Sequence[str] = (),
    pca_panels: Sequence[tuple[str, str]] = (),
) -> dict:
  rows = read_results(sweep_dir)
  summary = summarize(rows)
  write_summary(sweep_dir, summary, title=title, metrics=metrics, notes=notes)
  plots(sweep_dir, summary)
  if pca_panels:
    plot_embeddings(sweep_dir, pca_panels)
  return summary


def plots(sweep_dir: str, summary: dict) -> None:
  """metrics_bars.png (recall@20 and cross_group@20 where measured, in recall order) and,
  with both, quality_vs_folding.png."""
  order = sorted(summary, key=lambda s: -summary[s].get(QUALITY, (-1, 0))[0])
  shown = [m for m in (QUALITY, FOLDING) if any(m in d for d in summary.values())]
  plot_bars(sweep_dir, summary, shown, "metrics_bars.png", order)
  if len(shown) == 2:
    plot_scatter(sweep_dir, summary)


def standard_plots(sw) -> tuple[list[str], list[str]]:
  """The analysis of a plain --grid sweep (experiments.sweep): the plots, no checks."""
  plots(sw.workdir, sw.summary)
  return [], []


if __name__ == "__main__":
  from absl import flags

  from experiments import cli

  _WORKDIR = flags.DEFINE_string("workdir", None, "Sweep folder holding results.csv.")

  def main(argv):
    del argv
    csv_path = os.path.join(_WORKDIR.value, "results.csv")
    if not os.path.isfile(csv_path):
      raise FileNotFoundError(2, "no results.csv (run experiments.sweep first)", csv_path)
    report(_WORKDIR.value)
    print(f"wrote {os.path.join(_WORKDIR.value, 'summary.md')}")

  flags.mark_flag_as_required("workdir")
  cli.run(main)
