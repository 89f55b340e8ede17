"""The default world: a softmax DNN with uniform sampled softmax on the synthetic folding world.

Command:
  python -m experiments.main --config=experiments/configs/synthetic.py --workdir=runs/synthetic

Expected (2-core CPU, about half a minute): recall@20 far above popularity, cross_group@20
near 0. With `--config.loss.name=positive_only` the same model folds: cross_group@20 near
(G-1)/G = 0.75. Measured figures are in docs/RESULTS.md.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic"  # synthetic | movielens | lastfm | csv | lightgcn (fixed split)
  c.data.path = ""  # file or folder for movielens / lastfm / csv / lightgcn
  c.data.min_rating = 0.0  # keep ratings >= this as positives (0: keep all)
  c.data.k_core = 0  # drop users/items with fewer interactions (0: off)
  c.data.language_split = 0  # L > 1: L copies of the catalogue, users spread over them
  c.data.split = "random"  # random (per-user holdout) | last | users
  c.data.test_fraction = 0.2
  c.data.valid_fraction = 0.0  # share of each user's train rows held out for validation
  c.data.seed = -1  # seed of the world and the split (-1: the run's seed)
  # Synthetic world (data.name=synthetic).
  c.data.num_groups = 4
  c.data.num_users = 2000
  c.data.num_items = 1000
  c.data.interactions_per_user = 20
  c.data.zipf_exponent = 1.0
  c.data.noise = 0.0
  # Side features (jaxrec.data.features; models mf and dnn): a delimited file with a header,
  # keyed by the raw user / item id, and its declared columns "COLUMN:KIND,..." (KIND: id,
  # categorical, multi, year, numeric); "" types: the file name's preset (MovieLens
  # movies.csv: genres and title year; Last.fm user_taggedartists.dat: tags). "": none.
  c.data.user_features = ""
  c.data.user_feature_types = ""
  c.data.item_features = ""
  c.data.item_feature_types = ""

  c.model = ml_collections.ConfigDict()
  c.model.name = "dnn"  # mf | dnn | wals | ease | popularity
  c.model.dim = 32
  c.model.hidden = (64,)  # DNN query tower hidden sizes
  c.model.max_bag = 32  # items sampled from the user's history as DNN input
  c.model.init_scale = 0.1
  c.model.normalize = False  # L2-normalise query and item embeddings (cosine scores)
  # WALS (model.name=wals).
  c.model.unobserved_weight = 0.1
  c.model.regularization = 0.1
  c.model.alpha = 0.0
  c.model.iterations = 10
  c.model.solver = "cholesky"
  c.model.reg_scaling = "none"
  c.model.ease_lambda = 200.0  # EASE (model.name=ease): ridge on the item-item weights

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "sampled"  # full | sampled | positive_only
  c.loss.temperature = 1.0
  c.loss.gravity = 0.0
  c.loss.l2 = 0.0
  c.loss.positive_only_kind = "squared"
  c.loss.chunk_size = 0  # full softmax item chunk (0: unchunked)

  c.sampler = ml_collections.ConfigDict()
  c.sampler.name = "uniform"  # see jaxrec.samplers.REGISTRY
  c.sampler.num_negatives = 64
  c.sampler.logq = True
  c.sampler.replace = True  # uniform sampler
  c.sampler.alpha = 0.75  # unigram exponent
  c.sampler.pool_size = 256  # hard_pool / hard_topk
  c.sampler.temperature = 1.0  # hard samplers
  c.sampler.freq_buckets = 0  # in_batch / mixed hash buckets (0: 2 * num_items)
  c.sampler.freq_alpha = 0.01  # in_batch / mixed estimator learning rate
  c.sampler.num_uniform = 0  # mixed: uniform negatives beside the batch (0: batch size)
  c.sampler.batch_negatives = 0  # in_batch / mixed: first K of the batch's positives (0: all)
  # in_batch / mixed: log-Q corrects the positive's logit too, by its own log(K q) (Yi et al.
  # 2019 eq. 4, TFRS); False corrects the negatives only.
  c.sampler.correct_positive = True
  c.sampler.hard_fraction = 1.0  # hard samplers: this share of K is hard, the rest uniform
  c.sampler.kernel_alpha = 100.0  # kernel: q proportional to alpha * score^2 + 1 (Blanc & Rendle)
  # kernel: items per tree leaf (scored exactly inside a leaf); N <= K x this: no tree, the
  # same law drawn from the [B, N] kernel
  c.sampler.kernel_leaf = 128
  # neg_cache: share of the cached item embeddings re-read per step (round robin); a row is
  # at most ceil(1 / cache_refresh) - 1 steps stale (1.0: never stale).
  c.sampler.cache_refresh = 0.1

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1500
  c.train.batch_size = 256
  c.train.learning_rate = 0.5
  c.train.optimizer = "adagrad"  # sgd | adagrad | adam (tables row-wise, dense via optax)
  c.train.batching = "random"  # random pairs with replacement | epoch permutation
  c.train.log_every = 250
  # Checkpoints by wall time (a save this long after the last one; 0: off), and/or every
  # N steps (0: off), plus one at the end. By time, a save's cost (~1 s of the 2 cores per
  # 512 MB of state here, benchmarks/loop_throughput.py) stays a small share of training at
  # any catalogue size; every 500 steps it cost 0.3x of the steps/s at 1M items.
  c.train.checkpoint_every = 0
  c.train.checkpoint_seconds = 300.0
  c.train.skip_nonfinite = False  # skip a step whose loss is NaN/inf instead of stopping
  # > 0: also stop once this many seconds of training (train_seconds) are spent, checked
  # at each log line (so set train.log_every small); equal-time comparisons use it
  c.train.max_seconds = 0.0

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ()  # devices on the 'data' axis; () = all devices

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 0  # evaluate on valid every this many steps (0: only at the end)
  c.eval.every_seconds = 0.0  # > 0: also at the first log line after each such interval
  c.eval.select = ""  # e.g. "valid/recall@20": report test at the best valid step
  c.eval.patience = 0  # stop after this many evaluations without a better eval.select
  # Validation evaluations (eval.every, eval.select, the last step) rank this many valid
  # users, sampled once per run from the run's seed (0: all); the final test evaluation
  # always ranks every test user. results.json: run.eval_num_users.
  c.eval.num_users = 0
  c.eval.ks = (10, 20)
  c.eval.logp_bias = 0.0  # beta: rank by score + beta log p_j (train popularity; 0: off)
  c.eval.chunk_size = 8192
  c.eval.save_embeddings = False  # write embeddings.npz (for the PCA picture)
  return c
