r"""jaxrec against PyTorch on the same two workloads, measured side by side in one run.

  pip install -e '.[peers]'        # torch (CPU use; PyPI's wheel also pulls CUDA libraries)
  python -m benchmarks.peers [--workloads=w1,w2] [--repeats=2] [--w1_steps=1500]
      [--torch_w1_steps=300] [--w2_steps=30] [--w1_items=1000000] [--w2_items=100000]

W1 (sampled softmax at a big catalogue): MF, D = 64, batches of B = 1,024 (user, item)
pairs drawn at random from the training pairs, K = 1,024 uniform negatives shared by the
batch (accidental hits removed, log-Q shift), row-wise Adagrad lr 0.05, N = 1,000,000 items.
- jaxrec: the launcher's whole training loop (`train.train_and_evaluate` on a CSV read by
  its reader: progress lines, metrics.jsonl, checkpoints), with checkpoints off and with
  one every 500 steps; its `run.steps_per_second` (steps after the compiling first one,
  training time only).
- PyTorch eager: `nn.Embedding(sparse=True)` for both tables, `torch.optim.Adagrad` (sparse
  row updates), the same loss written with torch ops but without the accidental-hit mask
  (its fastest form found: the mask doubled its step time); PyTorch compiled: the same
  with the loss under `torch.compile` (reported as failed, with the reason, where it fails:
  inductor cannot compile sparse embedding gradients).
W2 (full softmax): MF, D = 64, B = 1,024, softmax over all N = 100,000 items, Adagrad.
- jaxrec: the launcher with `loss.name=full`, `loss.chunk_size` at the library's default
  (`jaxrec.losses.DEFAULT_CHUNK_SIZE`, 4,096, the best on this CPU; the streaming
  log-sum-exp of jaxrec.chunked: no [B, N] logits kept for the backward pass), and with
  `loss.chunk_size=0` (the [B, N] logits at once, as PyTorch computes them);
- PyTorch: logits [B, N] and `F.cross_entropy`, dense tables and Adagrad, eager and compiled.

Each variant runs in its own process (peak RSS = that process's ru_maxrss), the variants
interleaved over `--repeats` rounds, the best steps/s of each kept; both frameworks use
every core. Printed: steps/s per variant, jaxrec / best PyTorch variant, peak RSS. Targets
(issue 23): W1 >= 2x (goal 3x), W2 >= 1.5x with jaxrec's peak RSS <= 1 GB. Without torch
it measures jaxrec alone and says so.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time

from absl import app, flags

from benchmarks import child

_WORKLOADS = flags.DEFINE_list("workloads", ["w1", "w2"], "Workloads to run: w1, w2.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Interleaved rounds; the best of each kept.")
_W1_STEPS = flags.DEFINE_integer("w1_steps", 1500, "W1 training steps per measurement.")
_W2_STEPS = flags.DEFINE_integer("w2_steps", 30, "W2 training steps per measurement.")
_TORCH_W1_STEPS = flags.DEFINE_integer(
    "torch_w1_steps", 300, "W1 steps timed for PyTorch (after 10 warm-up steps)."
)
_W1_ITEMS = flags.DEFINE_integer("w1_items", 1_000_000, "W1 catalogue size N.")
_W2_ITEMS = flags.DEFINE_integer("w2_items", 100_000, "W2 catalogue size N.")
_CHILD = flags.DEFINE_string("child", "", "Internal: run one variant and print RESULT.")
_DATA = flags.DEFINE_string("data", "", "Internal: the variant's CSV.")
_STEPS = flags.DEFINE_integer("steps", 0, "Internal: the variant's steps.")

B, D, K, LR, USERS = 1024, 64, 1024, 0.05, 1000


def write_pairs(path: str, num_items: int, seed: int = 0) -> None:
  """user,item pairs: every item once (so the reader's catalogue is all N items) plus as
  many again drawn uniformly, over USERS users."""
  import numpy as np

  rng = np.random.default_rng(seed)
  items = np.concatenate([np.arange(num_items), rng.integers(0, num_items, num_items)])
  users = rng.integers(0, USERS, items.size)
  np.savetxt(path, np.stack([users, items], 1), fmt="%d", delimiter=",")


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- jaxrec -----------------------------------------------------------------------------


def jaxrec_variant(
    workload: str, path: str, steps: int, checkpoint_every: int, chunk_size: int
) -> dict:
  """The launcher's loop on the CSV; -> steps/s (training only) and peak RSS."""
  from experiments.configs import synthetic
  from jaxrec import train

  c = synthetic.get_config()
  c.data.name, c.data.path, c.data.seed = "csv", path, 0
  c.model.name, c.model.dim = "mf", D
  c.train.batch_size, c.train.learning_rate, c.train.optimizer = B, LR, "adagrad"
  c.train.steps, c.train.log_every = steps, max(steps // 3, 1)
  c.train.checkpoint_every, c.train.checkpoint_seconds = checkpoint_every, 0.0
  c.eval.ks = (20,)
  if workload == "w1":
    c.loss.name, c.sampler.name, c.sampler.num_negatives = "sampled", "uniform", K
  else:
    c.loss.name, c.loss.chunk_size = "full", chunk_size
  with tempfile.TemporaryDirectory() as wd:
    res = train.train_and_evaluate(c, wd, verbose=False)
  run = res["run"]
  return {"steps_per_second": run["steps_per_second"], "peak_mb": _peak_mb()}


# --- PyTorch ----------------------------------------------------------------------------


def torch_variant(workload: str, path: str, steps: int, compiled: bool) -> dict:
  """The same model, loss and optimizer in PyTorch; -> steps/s after 10 warm-up steps."""
  import math

  import numpy as np
  import torch
  import torch.nn.functional as F

  dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # jax uses a GPU too
  pairs = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.int64)).to(dev)
  users_P, items_P = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
  num_users, num_items = int(users_P.max()) + 1, int(items_P.max()) + 1
  torch.manual_seed(0)
  sparse = workload == "w1"
  user = torch.nn.Embedding(num_users, D, sparse=sparse, device=dev)
  item = torch.nn.Embedding(num_items, D, sparse=sparse, device=dev)
  for t in (user, item):
    torch.nn.init.normal_(t.weight, std=0.1)
  opt = torch.optim.Adagrad([user.weight, item.weight], lr=LR)
  log_kq = math.log(K / num_items)  # uniform q = 1/N: every negative logit less log(K q)

  def sampled_loss(u_ids, pos_ids, neg_ids):
    rows = item(torch.cat([pos_ids, neg_ids]))  # one gather, one sparse gradient
    u_BxD, pos_BxD, neg_KxD = user(u_ids), rows[:B], rows[B:]
    pos_B1 = (u_BxD * pos_BxD).sum(-1, keepdim=True)
    # (no accidental-hit mask: masked_fill made the eager step ~2x slower here, and at
    # N = 1M a batch holds about B K / N = 1 hit; jaxrec removes them, so it does more)
    neg_BxK = u_BxD @ neg_KxD.T - log_kq
    logits = torch.cat([pos_B1, neg_BxK], 1)
    return F.cross_entropy(logits, torch.zeros(B, dtype=torch.long, device=dev))

  def full_loss(u_ids, pos_ids, _):
    return F.cross_entropy(user(u_ids) @ item.weight.T, pos_ids)

  loss_fn = sampled_loss if sparse else full_loss
  if compiled:
    loss_fn = torch.compile(loss_fn)

  def step():
    idx = torch.randint(0, users_P.numel(), (B,), device=dev)
    neg = torch.randint(0, num_items, (K,), device=dev)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(users_P[idx], items_P[idx], neg)
    loss.backward()
    opt.step()
    return loss

  for _ in range(10):  # warm-up (and compilation)
    step()
  t = time.perf_counter()
  for _ in range(steps):
    loss = step()
  float(loss)  # waits for the device
  return {"steps_per_second": steps / (time.perf_counter() - t), "peak_mb": _peak_mb()}


# --- the run ----------------------------------------------------------------------------

# workload -> variant name -> how its child runs: ("jaxrec", checkpoint_every, chunked full
# softmax) or ("torch", compiled)
VARIANTS = {
    "w1": {
        "jaxrec loop, no checkpoints": ("jaxrec", 0, True),
        "jaxrec loop, checkpoint / 500": ("jaxrec", 500, True),
        "torch eager": ("torch", False),
        "torch compiled": ("torch", True),
    },
    "w2": {
        "jaxrec loop, chunked full softmax": ("jaxrec", 0, True),
        "jaxrec loop, unchunked full softmax": ("jaxrec", 0, False),
        "torch eager": ("torch", False),
        "torch compiled": ("torch", True),
    },
}


def _framework(workload: str, variant: str) -> str:
  return VARIANTS[workload][variant][0]


def run_child(name: str) -> dict:
  workload, variant = name.split(":", 1)
  framework, *how = VARIANTS[workload][variant]
  if framework == "jaxrec":
    from jaxrec import losses

    every, chunked = how
    chunk = losses.DEFAULT_CHUNK_SIZE if chunked else 0
    return jaxrec_variant(workload, _DATA.value, _STEPS.value, every, chunk)
  (compiled,) = how
  return torch_variant(workload, _DATA.value, _STEPS.value, compiled=compiled)


def _spawn(name: str, path: str, steps: int) -> dict:
  return child.run("benchmarks.peers", f"--child={name}", f"--data={path}", f"--steps={steps}")


def _versions(have_torch: bool) -> str:
  import jax

  out = f"jax {jax.__version__}"
  if have_torch:
    import torch

    out += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
  return out + f", python {platform.python_version()}, {os.cpu_count()} cores"


def main(argv):
  del argv
  if _CHILD.value:
    print("RESULT " + json.dumps(run_child(_CHILD.value)), flush=True)
    return
  try:
    import torch  # noqa: F401

    have_torch = True
  except ImportError:
    have_torch = False
    print("peers: torch is not installed (pip install -e '.[peers]'): jaxrec only")
  print(f"peers: {time.strftime('%Y-%m-%d')}, {platform.machine()}, {_versions(have_torch)}")
  sizes = {"w1": _W1_ITEMS.value, "w2": _W2_ITEMS.value}
  steps = {"w1": _W1_STEPS.value, "w2": _W2_STEPS.value}
  summary = {}
  with tempfile.TemporaryDirectory() as tmp:
    for w in _WORKLOADS.value:
      if w not in VARIANTS:
        raise app.UsageError(f"--workloads: unknown {w!r}; choose from w1, w2")
      path = os.path.join(tmp, f"{w}.csv")
      write_pairs(path, sizes[w])
      names = [v for v in VARIANTS[w] if have_torch or _framework(w, v) == "jaxrec"]
      best: dict[str, dict] = {}
      for r in range(_REPEATS.value):
        for v in names:
          torch_w1 = w == "w1" and _framework(w, v) == "torch"
          n = _TORCH_W1_STEPS.value if torch_w1 else steps[w]
          res = _spawn(f"{w}:{v}", path, n)
          print(f"  {w} round {r + 1}: {v:34s} {json.dumps(res)}", flush=True)
          # the fastest round; a failed round only where no round succeeded
          rate = lambda x: -1.0 if "error" in x else x["steps_per_second"]
          best[v] = max([x for x in (best.get(v), res) if x is not None], key=rate)
      summary[w] = best
      print(
          f"{w.upper()} (N = {sizes[w]:,}, B = {B}, D = {D}{', K = %d' % K if w == 'w1' else ''}):"
      )
      for v in names:
        res = best[v]
        if "error" in res:
          print(f"  {v:34s} failed: {res['error']}")
        else:
          print(
              f"  {v:34s} {res['steps_per_second']:8.1f} steps/s   peak RSS "
              f"{res['peak_mb']:7.0f} MB"
          )
      ok = {v: r for v, r in best.items() if "error" not in r}
      jx = max(
          (r["steps_per_second"] for v, r in ok.items() if _framework(w, v) == "jaxrec"),
          default=None,
      )
      tv = [r["steps_per_second"] for v, r in ok.items() if _framework(w, v) == "torch"]
      if jx and tv:
        print(f"  ratio jaxrec (best loop) / PyTorch (best variant): {jx / max(tv):.2f}")
  print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
