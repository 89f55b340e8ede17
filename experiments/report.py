"""Sweep folder -> summary.md (mean +- std over seeds per strategy), claims, plots.

  python -m experiments.report --workdir=runs/folding

Plots (PNG): bars of recall@K and cross_group@K per strategy with std error bars; recall vs
cross-group scatter (quality vs folding); validation recall against training seconds
(quality_vs_time.png, with a table of the quality each strategy reaches within equal time
budgets); and, where runs saved embeddings, a PCA picture of item and query embeddings
coloured by group for chosen strategies (the picture of folding). An ablation's claims
(`claims_section`) are judged by the paired difference of two arms over seeds and its 95%
t-interval.
"""

from __future__ import annotations

import csv
import dataclasses
import json
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
  colors = palette(plt)
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


# --------------------------------------------------------------------------------------
# Quality against training time: each run's metrics.jsonl (jaxrec/train.py writes
# `train_seconds` on every row: training time without compilation or evaluations,
# cumulative over resumes).

TIME_PLOT = "quality_vs_time.png"


def read_curve(run_dir: str, metric: str = QUALITY) -> list[tuple[int, float, float]] | None:
  """A run's validation `metric` during training, from its metrics.jsonl: [(step, train
  seconds, value)] in step order (a step evaluated twice, e.g. by a rerun: its last row).
  None: its validation rows have no train_seconds (recorded before jaxrec logged it);
  []: no validation row (no metrics.jsonl, data.valid_fraction = 0)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  key, by_step, timed = f"valid/{metric}", {}, True
  with open(path) as f:
    for line in f:
      row = json.loads(line) if line.strip() else {}
      if key in row:
        timed = timed and "train_seconds" in row
        by_step[int(row["step"])] = (float(row.get("train_seconds", math.nan)), float(row[key]))
  if by_step and not timed:
    return None
  return [(s, t, v) for s, (t, v) in sorted(by_step.items())]


def mean_curve(curves: Sequence[list[tuple[int, float, float]]]) -> list[tuple[float, float]]:
  """Seeds' curves -> [(mean seconds, mean value)] of their i-th evaluations, for i up to
  the shortest curve (a seed that stopped early shortens it). A step schedule evaluates
  every seed at the same steps; a time schedule (eval.every_seconds) at different steps
  but in the same slots of training time, so evaluations are matched by their order."""
  if not curves:
    return []
  n = min(len(c) for c in curves)
  return [
      (float(np.mean([c[i][1] for c in curves])), float(np.mean([c[i][2] for c in curves])))
      for i in range(n)
  ]


def value_at(curve: Sequence[tuple[int, float, float]], budget: float) -> float | None:
  """The value of the curve's last evaluation at or before `budget` seconds (None: none)."""
  before = [v for _, t, v in curve if t <= budget]
  return before[-1] if before else None


def budget_table(
    curves: dict[str, list[list[tuple[int, float, float]]]], fractions: Sequence[float]
) -> tuple[list[float], dict[str, list[float | None]]]:
  """strategy -> its seeds' curves ->

  budgets: fraction x T, T the slowest strategy's training time (the largest, over
  strategies, of the mean over seeds of each seed's last evaluated time);
  cells: per strategy and budget, the mean over seeds of `value_at(seed's curve, budget)`,
  None where some seed has no evaluation by then. A strategy that finished training
  before a budget keeps its last value (what it reached; it was not trained longer)."""
  ends = [np.mean([c[-1][1] for c in cs]) for cs in curves.values() if cs and all(cs)]
  slowest = float(max(ends)) if ends else 0.0
  budgets = [f * slowest for f in fractions]
  cells = {}
  for s, cs in curves.items():
    cells[s] = []
    for b in budgets:
      vals = [value_at(c, b) for c in cs]
      cells[s].append(None if not vals or None in vals else float(np.mean(vals)))
  return budgets, cells


def palette(plt) -> list:
  """tab10, then darker colours of their own (tab20's pale halves read badly)."""
  return list(plt.get_cmap("tab10").colors) + [
      "black",
      "darkgoldenrod",
      "teal",
      "navy",
      "maroon",
      "darkolivegreen",
  ]


def plot_time_curves(
    sweep_dir: str,
    curves: dict[str, list[tuple[float, float]]],
    budgets: Sequence[float],
    metric: str = QUALITY,
    fname: str = TIME_PLOT,
) -> str:
  """One line per strategy: mean validation `metric` against mean training seconds (one
  marker per evaluation; a closed-form model is one point); the budgets as dotted lines.
  Log-x when the times span more than a factor 10."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 5.0))
  colors = palette(plt)
  styles = ("-", "--", ":", "-.")
  for i, (s, pts) in enumerate(curves.items()):
    ax.plot(
        [t for t, _ in pts],
        [v for _, v in pts],
        marker="o",
        ms=3,
        ls=styles[(i // len(colors)) % len(styles)],
        color=colors[i % len(colors)],
        label=s,
    )
  ts = [t for pts in curves.values() for t, _ in pts if t > 0]
  if ts and max(ts) > 10 * min(ts):
    import matplotlib.ticker as ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  for b in budgets:
    if b > 0:
      ax.axvline(b, color="0.6", ls=":", lw=0.8)
  ax.set_xlabel("training seconds (no compilation, no evaluation; mean over seeds)")
  ax.set_ylabel(f"valid {metric} (mean over seeds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  return save_figure(fig, sweep_dir, fname)


def time_section(
    sweep_dir: str,
    rows: Sequence[dict],
    *,
    metric: str = QUALITY,
    fractions: Sequence[float] = (0.25, 0.5, 1.0),
    intro: str = "",
) -> list[str]:
  """summary.md's "Quality against training time": `intro` (a paragraph saying which runs
  the curves are, if given), quality_vs_time.png (drawn here) and the table of
  `budget_table` (strategies in order of their last value; "no timing" for runs recorded
  before train_seconds was logged, "no validation curve" for runs without validation
  evaluations). The curves are read from each row's `workdir` (results.csv)."""
  per: dict[str, list] = {}
  for r in rows:
    wd = r.get("workdir")
    curve = read_curve(os.path.join(sweep_dir, wd), metric) if wd else []
    per.setdefault(r["strategy"], []).append(curve)
  untimed = [s for s, cs in per.items() if any(c is None for c in cs)]
  no_curve = [s for s, cs in per.items() if s not in untimed and not all(cs)]
  timed = {s: cs for s, cs in per.items() if s not in untimed and s not in no_curve}
  head = ["", "## Quality against training time", ""] + ([intro, ""] if intro else [])
  if not timed:
    why = (
        "no timing: these runs' metrics.jsonl have no train_seconds (recorded before "
        "jaxrec logged it)"
        if untimed
        else "no validation curve: no run evaluated on validation during training "
        "(data.valid_fraction, eval.every)"
    )
    return head + [why + "."]
  budgets, cells = budget_table(timed, fractions)
  ends = {s: float(np.mean([c[-1][1] for c in cs])) for s, cs in timed.items()}
  means = {s: mean_curve(cs) for s, cs in timed.items()}
  order = sorted(timed, key=lambda s: -(means[s][-1][1] if means[s] else -1.0))
  plot_time_curves(sweep_dir, {s: means[s] for s in order}, budgets, metric)
  lines = head + [
      f"Validation {metric} against training seconds (without the first, compiling step "
      "and without evaluations; cumulative over resumes), mean over seeds of their i-th "
      f"evaluations, up to the fewest any seed made: [{TIME_PLOT}]({TIME_PLOT}).",
      "",
      f"![valid {metric} against training seconds]({TIME_PLOT})",
      "",
      f"Valid {metric} reached within equal training time: each seed's last evaluation at "
      'or before the budget, mean over seeds ("-": some seed had none by then). '
      "Budgets are fractions of the slowest strategy's mean training time "
      f"({max(ends.values()):.1f} s); a strategy that finished sooner keeps its last value.",
      "",
      "| strategy | "
      + " | ".join(f"{f:.0%} ({b:.1f} s)" for f, b in zip(fractions, budgets))
      + " | its training s |",
      "|---|" + "---|" * (len(budgets) + 1),
  ]
  for s in order:
    vals = " | ".join("-" if v is None else f"{v:.3f}" for v in cells[s])
    lines.append(f"| {s} | {vals} | {ends[s]:.1f} |")
  for s in untimed:
    lines.append(f"| {s} | " + " | ".join(["no timing"] * len(budgets)) + " | - |")
  for s in no_curve:
    lines.append(f"| {s} | " + " | ".join(["no validation curve"] * len(budgets)) + " | - |")
  return lines


# --------------------------------------------------------------------------------------
# Claims: the paired difference of two arms over seeds, its 95% t-interval, a verdict.

OPS = (">", "<")


@dataclasses.dataclass(frozen=True)
class Claim:
  """An ablation's claim, declared in its config before it runs (sweep.claims, one dict
  per claim with these keys): per seed s the difference

    d_s = metric(a, s) - scale * metric(b, s)      (b = "": d_s = metric(a, s))

  of the runs with the same seed, and the claim is  mean d  `op`  threshold."""

  text: str  # what is claimed, in words
  metric: str  # a results.csv column, e.g. "recall@20"
  a: str  # strategy label
  op: str  # ">" or "<"
  threshold: float
  b: str = ""  # strategy label paired with a ("": none, a against the threshold alone)
  scale: float = 1.0

  def __post_init__(self):
    if self.op not in OPS:
      raise ValueError(f"claim {self.text!r}: op={self.op!r} must be one of {', '.join(OPS)}")

  def describe(self) -> str:
    """'recall@20: a - 0.75 x b > 0' (the statistic and the claimed side)."""
    b = "" if not self.b else f" - {self.b}" if self.scale == 1 else f" - {self.scale:g} x {self.b}"
    return f"{self.metric}: {self.a}{b} {self.op} {self.threshold:g}"


def parse_claims(claims) -> list[Claim]:
  """sweep.claims (dicts with Claim's fields) -> Claims; ValueError names a bad one."""
  out = []
  for c in claims:
    try:
      out.append(Claim(**dict(c)))
    except TypeError as err:
      raise ValueError(f"sweep.claims: {dict(c)}: {err}") from None
  return out


def t_quantile(p: float, df: int) -> float:
  """The p-quantile of Student's t with df degrees of freedom (scipy.stats.t)."""
  from scipy import stats

  return float(stats.t.ppf(p, df))


def paired_differences(rows: Sequence[dict], claim: Claim) -> list[float]:
  """d_s (Claim) for every seed where a (and b) ran and measured the metric, seed order."""

  def by_seed(strategy):
    return {
        int(r["seed"]): float(r[claim.metric])
        for r in rows
        if r["strategy"] == strategy
        and isinstance(r.get(claim.metric), float)
        and not math.isnan(r[claim.metric])
    }

  a = by_seed(claim.a)
  b = by_seed(claim.b) if claim.b else {s: 0.0 for s in a}
  return [a[s] - claim.scale * b[s] for s in sorted(set(a) & set(b))]


def t_interval(d: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
  """(mean, lower, upper): mean(d) -/+ t_{(1+level)/2, n-1} std(d, ddof=1) / sqrt(n);
  lower = upper = nan for n < 2 (no interval from one seed)."""
  d = np.asarray(d, float)
  n = d.size
  mean = float(d.mean()) if n else math.nan
  if n < 2:
    return mean, math.nan, math.nan
  half = t_quantile((1 + level) / 2, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
  return mean, mean - half, mean + half


def verdict(claim: Claim, lower: float, upper: float, n: int) -> str:
  """The claim against the 95% interval [lower, upper] of mean d over n paired seeds:

  op ">":  held if lower > threshold; not held if upper < threshold;
  op "<":  held if upper < threshold; not held if lower > threshold;
  otherwise (the interval holds the threshold, or n < 2: no interval)
           "not resolved at n seeds"; "not run" for n = 0."""
  if n == 0:
    return "not run"
  if n >= 2:
    above, below = lower > claim.threshold, upper < claim.threshold
    if above or below:
      return "held" if above == (claim.op == ">") else "not held"
  return f"not resolved at {n} seed{'s' if n != 1 else ''}"


def judge(rows: Sequence[dict], claims: Sequence[Claim]) -> list[dict]:
  """Per claim: {claim, n, mean, lower, upper, verdict}."""
  out = []
  for c in claims:
    d = paired_differences(rows, c)
    mean, lo, hi = t_interval(d)
    out.append(
        dict(claim=c, n=len(d), mean=mean, lower=lo, upper=hi, verdict=verdict(c, lo, hi, len(d)))
    )
  return out


def claims_section(rows: Sequence[dict], claims: Sequence[Claim]) -> list[str]:
  """summary.md's "Claims": one table row per claim (`judge`)."""
  if not claims:
    return []
  lines = [
      "",
      "## Claims",
      "",
      "Each claim's statistic is the difference of two arms at the same seed (or one arm's "
      "value), declared with its threshold in the ablation's config before it ran; mean and "
      "95% t-interval over the paired seeds. Verdict: held if the interval lies on the "
      "claimed side of the threshold, not held if it lies on the other side, else not "
      "resolved at this many seeds.",
      "",
      "| claim | statistic and claimed side | mean | 95% interval | seeds | verdict |",
      "|---|---|---|---|---|---|",
  ]
  for j in judge(rows, claims):
    c = j["claim"]
    mean = "-" if math.isnan(j["mean"]) else f"{j['mean']:.4f}"
    ci = "-" if math.isnan(j["lower"]) else f"[{j['lower']:.4f}, {j['upper']:.4f}]"
    lines.append(f"| {c.text} | {c.describe()} | {mean} | {ci} | {j['n']} | **{j['verdict']}** |")
  return lines


def report(
    sweep_dir: str,
    *,
    title: str = "Sweep summary",
    metrics: Sequence[str] = DEFAULT_METRICS,
    notes: Sequence[str] = (),
    pca_panels: Sequence[tuple[str, str]] = (),
    claims: Sequence[Claim] = (),
) -> dict:
  """summary.md (the table, `notes`, the claims' verdicts, quality against training time)
  and the plots of a sweep folder holding results.csv."""
  rows = read_results(sweep_dir)
  summary = summarize(rows)
  path = write_summary(sweep_dir, summary, title=title, metrics=metrics, notes=notes)
  sections = claims_section(rows, claims) + time_section(sweep_dir, rows)
  with open(path, "a") as f:
    f.write("\n".join(sections) + "\n")
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
