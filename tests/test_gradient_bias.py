"""The gradient-fidelity experiment: its estimator against exact enumeration, against
diagnostics.gradient_fidelity on the same draws, and a tiny end-to-end run."""

import csv
import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import gradient_bias as gb
from jaxrec import diagnostics, losses, samplers

N, D, B = 6, 4, 3
COUNTS = np.array([5.0, 3.0, 2.0, 1.0, 1.0, 0.0], np.float32)  # item 5 never in training


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.standard_normal((B, D)).astype(np.float32))
  v = jnp.asarray(rng.standard_normal((N, D)).astype(np.float32))
  pos = jnp.asarray(np.array([0, 3, 5], np.int32))  # includes the never-drawn item 5
  return q, v, pos


def _slot_distributions(name, k, q, v):
  """Per row b: a list of slot distributions [N] (the K-sample is their product) and the
  loss's logit correction c_loss [N] (log expected count as the sampler applies it)."""
  f = COUNTS / COUNTS.sum()
  uni = np.full(N, 1.0 / N)
  scores = np.asarray(q, np.float64) @ np.asarray(v, np.float64).T
  rows = []
  for b in range(B):
    with np.errstate(divide="ignore"):
      if name == "uniform":
        slots, c = [uni] * k, np.log(k * uni)
      elif name == "unigram":
        w = (COUNTS + 1.0) ** 0.75
        slots, c = [w / w.sum()] * k, np.log(k * w / w.sum())
      elif name == "in_batch":
        slots, c = [f] * k, np.log(k * f)
      elif name == "mixed":
        slots, c = [f] * k + [uni] * k, np.log(k * f + k / N)
      elif name == "hard_exact":
        p = np.exp(scores[b] - scores[b].max())
        p /= p.sum()
        slots, c = [p] * k, np.log(k * p)
    rows.append((slots, c))
  return rows


_row_grad = jax.jit(
    jax.vmap(
        jax.grad(
            lambda qv, pos, ids, neg_log_q: losses.sampled_softmax(
                qv[0], qv[1][pos], qv[1][ids], pos_ids=pos, neg_ids=ids, neg_log_q=neg_log_q
            )[0]
        ),
        in_axes=(None, None, 0, 0),
    )
)


def _exact_moments(name, k, logq, q, v, pos):
  """E g, E||g - E g||^2 and Var(||g - E g||^2) by enumerating every K-sample of each row
  (rows are independent given the sampler's law, and E is linear, so per-row enumeration
  gives E g even for shared negatives)."""
  mean = [np.zeros((B, D)), np.zeros((N, D))]
  per_row = []
  for b, (slots, c) in enumerate(_slot_distributions(name, k, q, v)):
    supports = [np.flatnonzero(s > 0) for s in slots]
    tuples = np.array(list(itertools.product(*supports)), np.int32)  # [T, S]
    weights = np.prod([slots[i][tuples[:, i]] for i in range(len(slots))], axis=0)
    nlq = (c[tuples] if logq else np.zeros(tuples.shape)) - math.log(tuples.shape[1])
    gq, gv = _row_grad(
        (q[b : b + 1], v), pos[b : b + 1], jnp.asarray(tuples), jnp.asarray(nlq.astype(np.float32))
    )
    gq = np.asarray(gq, np.float64)[:, 0] / B  # [T, D]
    gv = np.asarray(gv, np.float64) / B  # [T, N, D]
    mean[0][b] = weights @ gq
    mean[1] += np.tensordot(weights, gv, 1)
    per_row.append((weights, gq, gv))
  # Rows draw independently here, so Var(sum_b g_b) = sum_b Var(g_b) (for the variance
  # check; the shared samplers' rows are dependent, so only their bias is checked).
  var, var_of_sq = 0.0, 0.0
  for b, (w, gq, gv) in enumerate(per_row):
    mq = w @ gq
    mv = np.tensordot(w, gv, 1)
    sq = np.sum((gq - mq) ** 2, 1) + np.sum((gv - mv) ** 2, (1, 2))
    var += w @ sq
    var_of_sq += w @ sq**2 - (w @ sq) ** 2
  return np.concatenate([mean[0].ravel(), mean[1].ravel()]), var, var_of_sq


@pytest.mark.parametrize("name", ["uniform", "in_batch", "mixed", "hard_exact"])
def test_bias_matches_exact_enumeration(name):
  """The nested, control-variate estimate of ||E g - g*|| / ||g*|| agrees with the exact
  value from enumerating every K-sample, for K = 2 read as a prefix of K_max = 3 draws, logQ
  on and off (in_batch/mixed: the estimator's fixed point, the expected count; in_batch
  never draws item 5, a positive, so E g_IS != g*; unigram shares uniform's i.i.d.
  corrections).

  Tolerance: the estimate's error e has E||e||^2 = noise^2 (noise is returned; it is the
  RMS error of the bias vector), and | ||b_hat|| - ||b|| | <= ||e||; 5 noise is exceeded
  with probability < 1/25 by Markov's inequality on ||e||^2, and the seed is fixed.
  """
  q, v, pos = _problem()
  g_star = np.concatenate([np.ravel(x) for x in diagnostics.exact_gradient(q, v, pos)])
  nested = diagnostics.make_nested(name, num_items=N, k_max=3, counts_N=COUNTS)
  out = gb.nested_fidelity(jax.random.PRNGKey(7), q, v, pos, nested, (2, 3), num_draws=2000)
  for i, (k, logq) in enumerate(zip(out["K"], out["logq"])):
    if k != 2:
      continue
    e_g, var, var_of_sq = _exact_moments(name, 2, logq, q, v, pos)
    bias = e_g - g_star
    exact_rel = np.linalg.norm(bias) / np.linalg.norm(g_star)
    exact_cos = 1 - e_g @ g_star / np.linalg.norm(e_g) / np.linalg.norm(g_star)
    print(
        f"{name} K=2 logq={logq}: exact {exact_rel:.4f} (1-cos {exact_cos:.2e}), "
        f"estimate {out['rel_norm_err'][i]:.4f} +- {out['noise'][i]:.4f} "
        f"(1-cos {out['one_minus_cos'][i]:.2e}); raw {out['raw_rel_norm_err'][i]:.4f}"
    )
    assert abs(out["rel_norm_err"][i] - exact_rel) <= 5 * out["noise"][i] + 1e-4
    # 1 - cos(a, g*) = ||a/|a| - g*/|g*|||^2 / 2 and a perturbation e of a moves a/|a| by
    # at most 2||e||/|a|: the change is <= sqrt(2 (1 - cos)) 2r + 2r^2, r = ||e||/|a|.
    r = 5 * out["noise"][i] * np.linalg.norm(g_star) / np.linalg.norm(e_g)
    tol = 2 * r * math.sqrt(2 * max(exact_cos, 0)) + 2 * r * r + 1e-6
    assert abs(out["one_minus_cos"][i] - exact_cos) <= tol
    if name == "hard_exact":  # per-example draws: rows independent, variance exact
      # the sample variance over R draws has std sqrt(Var(||g - Eg||^2) / R); 5 sigma.
      tol = 5 * math.sqrt(var_of_sq / 2000) / (g_star @ g_star)
      assert abs(out["variance"][i] - var / (g_star @ g_star)) <= tol


def test_same_draws_as_diagnostics_and_prefix_is_a_k_sample():
  """With the same key, the raw estimate equals diagnostics.gradient_fidelity's: at K =
  K_max (identical draws), and at K = 4 < K_max = 16 against a sampler that returns the
  first 4 of the 16 draws (checks the masking of the other slots), shared and per-example."""
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.standard_normal((5, 6)).astype(np.float32))
  v = jnp.asarray(rng.standard_normal((40, 6)).astype(np.float32))
  pos = jnp.asarray(rng.integers(0, 40, 5).astype(np.int32))
  key = jax.random.PRNGKey(3)
  cases = {"uniform": ((16, True), (4, False)), "hard_exact": ((4, True),)}
  for name, settings in cases.items():
    nested = diagnostics.make_nested(name, num_items=40, k_max=16, counts_N=np.ones(40))
    out = gb.nested_fidelity(key, q, v, pos, nested, (4, 16), num_draws=12)
    full = diagnostics.make_sampler(name, num_items=40, num_samples=16)
    for k, logq in settings:
      i = int(np.flatnonzero((out["K"] == k) & (out["logq"] == logq))[0])
      fn = full if k == 16 else (lambda *a: jax.tree.map(lambda x: x[..., :4], full(*a)))
      ref = diagnostics.gradient_fidelity(key, q, v, pos, fn, num_draws=12, logq=logq)
      print(name, k, logq, ref, {m: out[m][i] for m in ("raw_rel_norm_err", "variance")})
      # float32 sums in a different order: agree to ~1e-6 relative; allow 1e-4.
      np.testing.assert_allclose(out["raw_rel_norm_err"][i], ref["rel_norm_error"], rtol=1e-4)
      np.testing.assert_allclose(out["variance"][i], ref["variance"], rtol=1e-4)
      np.testing.assert_allclose(
          out["raw_one_minus_cos"][i], ref["bias_cosine"], rtol=1e-3, atol=1e-7
      )


def test_in_batch_and_mixed_corrections_are_the_samplers_at_the_estimator_fixed_point():
  """Our closed-form corrections equal what samplers.in_batch / samplers.mixed apply when
  the Yi et al. estimator holds its fixed point b = 1/(K f_j), the expected count."""
  k = 4
  f = COUNTS / COUNTS.sum()
  p = k * f
  state = samplers.FreqState(
      a=jnp.zeros((1, N)),  # hash 0 = id mod N: no collisions
      b=jnp.asarray(np.where(p > 0, 1 / np.maximum(p, 1e-30), 0)[None], jnp.float32),
  )
  batch = jnp.asarray([0, 0, 2, 4], jnp.int32)
  log_f = jnp.log(jnp.asarray(f, jnp.float32))
  ref = samplers.in_batch(batch, state)
  active, c_loss, c_true = diagnostics.in_batch_corrections(batch, log_f[batch], float(k))
  assert bool(jnp.all(active))
  np.testing.assert_allclose(c_loss, ref.log_q + math.log(k), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_true, np.log(k * f[np.asarray(batch)]), rtol=1e-5, atol=1e-6)

  nested = diagnostics.make_nested("mixed", num_items=N, k_max=k, counts_N=COUNTS)
  ref = samplers.mixed(jax.random.PRNGKey(0), batch, state, N, k)
  active, c_loss, c_true = nested.corrections(ref.ids, log_f[ref.ids], float(k))
  assert bool(jnp.all(active))
  np.testing.assert_allclose(c_loss, ref.log_q + math.log(2 * k), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_true, np.log(k * f[np.asarray(ref.ids)] + k / N), rtol=1e-5)
  # K = 2 reads slots 0, 1 of the in-batch half and 0, 1 of the uniform half.
  active, _, _ = nested.corrections(ref.ids, log_f[ref.ids], 2.0)
  np.testing.assert_array_equal(active, [1, 1, 0, 0, 1, 1, 0, 0])


TINY = (
    ("data.num_users", 200),
    ("data.num_items", 100),
    ("data.interactions_per_user", 10),
    ("model.dim", 8),
    ("model.hidden", (16,)),
    ("train.batch_size", 32),
    ("eval.ks", (10,)),
)


def test_tiny_run_writes_csv_and_png_and_uniform_bias_falls(tmp_path):
  messages = []
  rows = gb.run(
      str(tmp_path),
      datasets=("synthetic", "movielens"),
      data_path=str(tmp_path / "missing"),
      ks=(1, 8, 64, 128),
      sampler_names=("uniform", "hard_pool"),
      draws=8,
      train_steps=30,
      batch_size=16,
      overrides=TINY,
      log=messages.append,
  )
  print("\n".join(messages))
  assert any("movielens: skipped" in m for m in messages)
  assert any("K > N = 100 skipped: [128]" in m for m in messages)
  with open(tmp_path / "gradient_bias.csv") as f:
    reader = csv.DictReader(f)
    assert tuple(reader.fieldnames[:7]) == (
        "dataset",
        "sampler",
        "K",
        "logq",
        "one_minus_cos",
        "rel_norm_err",
        "variance",
    )
    csv_rows = list(reader)
  assert len(csv_rows) == 2 * 3 * 2 and {r["K"] for r in csv_rows} == {"1", "8", "64"}
  assert os.path.getsize(tmp_path / "gradient_bias.png") > 1000
  uni = {r["K"]: r for r in rows if r["sampler"] == "uniform" and r["logq"]}
  print(gb.markdown_table(rows))
  # K = 1 of 100 items: the bias is O(1) (one uniform negative stands for 99); at K = 64 it
  # is ~10x smaller; R = 8 draws add at most a noise of the same order as the K=64 value.
  assert uni[64]["rel_norm_err"] < uni[1]["rel_norm_err"]
  assert all(math.isfinite(r[m]) for r in rows for m in gb.CSV_FIELDS[4:7])


def test_bad_names_raise():
  with pytest.raises(ValueError, match="unknown sampler 'hard_topk'"):
    diagnostics.make_nested("hard_topk", num_items=5, k_max=2, counts_N=np.ones(5))
  with pytest.raises(ValueError, match="unknown dataset 'nope'"):
    gb.run("/tmp/unused", datasets=("nope",))


def test_runner_path_reads_the_config_and_fails_in_one_line(tmp_path):
  """`python -m experiments.sweep --config=experiments/configs/gradient_bias.py` goes
  through gb.analysis: its errors are ConfigErrors (one 'error:' line, exit 2)."""
  from experiments import sweep
  from experiments.configs import gradient_bias as config_module

  messages = []

  def run(**sweep_keys):
    c = config_module.get_config("quick")
    c.sweep.update(sweep_keys)
    return sweep.run(c, str(tmp_path / "w"), log=messages.append)

  with pytest.raises(sweep.ConfigError, match="unknown dataset 'nope'"):
    run(datasets=("nope",))
  with pytest.raises(sweep.ConfigError, match="takes one seed"):
    run(seeds=(0, 1))
  with pytest.raises(sweep.ConfigError, match="no dataset was measured"):
    run(datasets=("movielens",), data_path=str(tmp_path / "missing"))
  assert any("movielens: skipped" in m for m in messages)


def test_fit_rates_recovers_a_known_slope_over_resolved_cells_only():
  """log e = log 3 - 1.0 log K + noise: the slope and its interval against numpy's
  polyfit and the textbook standard error; a cell below 2x its noise is left out."""
  from scipy import stats

  rng = np.random.default_rng(0)
  ks = np.array([1, 4, 16, 64, 256])
  err = 3.0 * ks**-1.0 * np.exp(rng.normal(0, 0.05, ks.size))
  rows = [
      dict(dataset="d", sampler="s", logq=True, K=int(k), rel_norm_err=float(e), noise=0.0)
      for k, e in zip(ks, err)
  ]
  rows.append(dict(dataset="d", sampler="s", logq=True, K=1024, rel_norm_err=1.0, noise=0.6))
  rows += [
      dict(dataset="d", sampler="t", logq=False, K=k, rel_norm_err=0.1, noise=0.0) for k in (1, 4)
  ]
  (fit,) = gb.fit_rates(rows)  # "t" has 2 resolved cells: left out
  assert fit["ks"] == tuple(ks) and fit["cells"] == 5
  slope, intercept = np.polyfit(np.log(ks), np.log(err), 1)
  resid = np.log(err) - (intercept + slope * np.log(ks))
  x = np.log(ks)
  se = np.sqrt(resid @ resid / 3 / ((x - x.mean()) @ (x - x.mean())))
  assert fit["slope"] == pytest.approx(slope, abs=1e-9)
  assert fit["upper"] - fit["slope"] == pytest.approx(stats.t.ppf(0.975, 3) * se, rel=1e-6)
  assert fit["lower"] < -1.0 < fit["upper"]
  assert "consistent" in gb.rates_table([fit])
