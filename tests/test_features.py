"""Side features: the features file (types, encoding, unknown rows, errors by file and line),
the raw -> dense id match, the MovieLens / Last.fm presets, and training with features."""

import dataclasses

import jax
import numpy as np
import pytest

from experiments import sweep
from experiments.configs import common, synthetic
from jaxrec import config, data, metrics, models, step, train
from jaxrec.data import features


def _write(path, text, mode="w"):
  with open(path, mode, newline="") as f:
    f.write(text)
  return str(path)


USERS = (
    "user_id,age,country,income,note\n"
    "10,30s,fr,1.0,x\n"
    "7,20s,de,,y\n"  # income missing
    "3,,fr,3.0,z\n"  # age missing
)


def test_user_file_encoding_and_unknowns(tmp_path):
  """Vocabularies are the sorted distinct values with ids 1..V (0 reserved); an empty
  field, a value outside the vocabulary and an id without a row all read 0; numeric
  values are standardised over the file, missing -> 0 with indicator 1."""
  f = features.read_features(
      _write(tmp_path / "u.csv", USERS), "age:categorical,country:categorical,income:numeric"
  )
  assert [(d.name, d.kind, d.size, d.slots) for d in f.decls] == [
      ("age", "categorical", 3, 1),  # 20s, 30s + unknown
      ("country", "categorical", 3, 1),  # de, fr + unknown
      ("income", "numeric", 0, 0),
  ]
  assert list(f.vocab["age"]) == ["20s", "30s"] and list(f.vocab["country"]) == ["de", "fr"]
  np.testing.assert_array_equal(f.encode("country", ["fr", "xx", "de"]), [2, 0, 1])
  # Dense ids 0..3 of raw ids [3, 7, 99, 10] (99: no row in the file).
  raw = np.array([3, 7, 99, 10])
  feats = features.features_for(f, raw, 4)
  np.testing.assert_array_equal(feats.cat, [[0, 2], [1, 1], [0, 0], [2, 2]])
  x = np.array([1.0, 3.0])  # the present incomes (raw 10 and 3)
  z = (x - x.mean()) / x.std()
  np.testing.assert_allclose(
      feats.num, [[z[1], 0.0], [0.0, 1.0], [0.0, 1.0], [z[0], 0.0]], rtol=1e-6, atol=1e-7
  )
  # String raw ids match the same rows.
  feats_s = features.features_for(f, raw.astype(str), 4)
  np.testing.assert_array_equal(feats_s.cat, feats.cat)


def test_unseen_category_gets_the_unknown_embedding_through_the_tower(tmp_path):
  """A user whose value is unknown (no row in the file) gets the query user row + the
  reserved rows 0 of each table + W [0; missing=1], computed with numpy from the params."""
  f = features.read_features(
      _write(tmp_path / "u.csv", USERS), "age:categorical,country:categorical,income:numeric"
  )
  feats = features.features_for(f, np.array([10, 12345]), 2)
  spec = config.ModelSpec("mf", False, (), 1, user_features=f.decls)
  mf = models.REGISTRY["mf"]
  params = mf.init_dense(jax.random.PRNGKey(0), spec, 3)
  p = jax.tree.map(np.asarray, params["params"])
  rows = np.ones((2, 3), np.float32)
  q = np.asarray(mf.apply_dense(params, rows, spec, (feats.cat, feats.num)))
  e = p["user_embed"]
  w = p["user_numeric"]["kernel"]
  unknown = rows[1] + e["embed_age"][0] + e["embed_country"][0] + np.array([0.0, 1.0]) @ w
  np.testing.assert_allclose(q[1], unknown, rtol=1e-6, atol=1e-6)
  known = rows[0] + e["embed_age"][2] + e["embed_country"][2] + feats.num[0] @ w
  np.testing.assert_allclose(q[0], known, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "text,types,match",
    [
        ("u,age\n1,a\n2,b,c\n", "age:categorical", r"f\.csv:3: found 3 field\(s\), expected 2"),
        ("u,inc\n1,2\n\n2,abc\n", "inc:numeric", r"f\.csv:4: inc 'abc' is not a number"),
        ("u,inc\n1,nan\n", "inc:numeric", r"f\.csv:2: inc 'nan' is not a number"),
        (
            "u,age\n1,a\n2,b\n1,c\n",
            "age:categorical",
            r"f\.csv:4: u '1' repeated \(first on line 2\)",
        ),
        ("u,age\n1,a\n", "agee:categorical", r"f\.csv:1: no column 'agee' in the header"),
        ("u,age\r\n1,a\r\n ,b\r\n", "age:categorical", r"f\.csv:3: u is empty"),
        # A quoted field spanning lines 2-3: the bad row is physical line 4.
        ('u,t\n1,"two\nlines"\n2,"x" y\n', "t:categorical", r"f\.csv:4: ',' expected after"),
        ("u,age\n", "age:categorical", r"f\.csv: no data rows"),
    ],
)
def test_malformed_features_file_names_file_and_line(tmp_path, text, types, match):
  path = _write(tmp_path / "f.csv", text)
  with pytest.raises(data.DataError, match=match):
    features.read_features(path, types)


def test_invalid_utf8_names_the_line(tmp_path):
  path = tmp_path / "f.csv"
  path.write_bytes(b"u,age\n1,a\n2,\xff\n")
  with pytest.raises(data.DataError, match=r"f\.csv:3: not valid UTF-8"):
    features.read_features(path, "age:categorical")


def test_bad_types_string():
  for types, match in [
      ("age", "COLUMN:KIND"),
      ("age:color", "COLUMN:KIND"),
      ("a:id,b:id,c:multi", "at most one"),
      ("a:categorical,a:numeric", "twice"),
      ("u:id", "no feature column"),
  ]:
    with pytest.raises(ValueError, match=match):
      features.parse_types(types)


MOVIES = (
    "movieId,title,genres\r\n"
    "10,Toy Story (1995),Adventure|Animation|Comedy\r\n"
    '200,"American President, The (1995)",Comedy|Drama|Romance\r\n'
    "3000,Babylon 5,Sci-Fi\r\n"  # no year -> unknown bucket
    "40,2001: A Space Odyssey (1968) ,(no genres listed)\r\n"
    "999,Never Rated (2010),Drama\r\n"  # not in the ratings: shapes the vocabulary only
)


def test_movielens_preset_through_load_data_and_the_id_map(tmp_path):
  """movies.csv (quoted titles with commas, CRLF) by its preset: genres a bag, the title's
  year bucketed by decade; rows matched to dense item ids through the ratings reader's raw
  ids, also after k-core compaction renumbers them; an unrated movie is ignored, a rated
  movie without a row is unknown."""
  ratings = "userId,movieId,rating,timestamp\n"
  for u in range(1, 5):
    for m in (10, 200, 3000, 40, 7):  # 7: no row in movies.csv
      ratings += f"{u},{m},4,{u}\n"
  ratings += "9,10,4,1\n"  # a user with one rating: removed by the 2-core
  c = synthetic.get_config()
  c.data.name = "csv"
  c.data.path = _write(tmp_path / "ratings.csv", ratings)
  c.data.item_features = _write(tmp_path / "movies.csv", MOVIES)
  c.data.k_core = 2
  c.model.name = "mf"
  c.eval.ks = (2,)
  config.validate_config(c)
  spec = config.StepSpec.from_config(c)
  genres, year = spec.model.item_features
  assert (genres.kind, genres.size, genres.slots) == ("multi", 8, 3)  # 7 genres + unknown
  assert (year.kind, year.size) == ("year", 4)  # 1960, 1990, 2010 + unknown
  train_i = data.load_data(c.data, 0).train
  assert train_i.num_users == 4  # user 9 dropped, ids compacted
  feats = train_i.item_features
  vocab = features.read_features(c.data.item_features).vocab
  want = {
      10: ({"Adventure", "Animation", "Comedy"}, "1990"),
      200: ({"Comedy", "Drama", "Romance"}, "1990"),
      3000: ({"Sci-Fi"}, None),
      40: ({"(no genres listed)"}, "1960"),
      7: (set(), None),
  }
  for dense, raw in enumerate(train_i.item_raw):
    g, y = want[int(raw)]
    bag = {vocab["genres"][v - 1] for v in feats.cat[dense, :3] if v > 0}
    assert bag == g, raw
    assert feats.cat[dense, 3] == (0 if y is None else 1 + list(vocab["title"]).index(y))


def test_lastfm_tags_preset_long_format(tmp_path, monkeypatch):
  """user_taggedartists.dat (tab-separated, one row per (user, artist, tag)): an artist's
  bag holds its tags, most frequent first (ties: first seen), at most MAX_VALUES."""
  rows = ["userID\tartistID\ttagID\tday\tmonth\tyear"]
  for user, artist, tag in [(1, 5, 7), (2, 5, 3), (3, 5, 3), (1, 6, 7), (4, 5, 9), (5, 5, 8)]:
    rows.append(f"{user}\t{artist}\t{tag}\t1\t1\t2010")
  monkeypatch.setattr(features, "MAX_VALUES", 3)
  f = features.read_features(_write(tmp_path / "user_taggedartists.dat", "\n".join(rows)))
  assert [d.name for d in f.decls] == ["tagID"] and f.decls[0].slots == 3
  assert list(f.vocab["tagID"]) == ["3", "7", "9"]  # the tags kept (8 is cut), as text
  feats = features.features_for(f, np.array([5, 6, 1]), 3)
  tag = lambda v: f.vocab["tagID"][v - 1]
  assert [tag(v) for v in feats.cat[0]] == ["3", "7", "9"]  # 3 twice, then 7, 9 (8 cut)
  assert [tag(v) for v in feats.cat[1] if v] == ["7"]
  np.testing.assert_array_equal(feats.cat[2], [0, 0, 0])  # artist 1 has no tags


def test_config_checks(tmp_path):
  path = _write(tmp_path / "u.csv", USERS)
  c = synthetic.get_config()
  c.data.user_features = path
  c.data.user_feature_types = "age:color"
  with pytest.raises(config.ConfigError, match="data.user_feature_types"):
    config.validate_config(c)
  c.data.user_feature_types = "age:categorical"
  c.model.name = "ease"
  with pytest.raises(config.ConfigError, match="applies to model.name mf and dnn"):
    config.validate_config(c)
  c.model.name = "dnn"
  c.data.user_features = str(tmp_path / "missing.csv")
  with pytest.raises(config.ConfigError, match="is not a file"):
    config.validate_config(c)
  c.data.user_features = ""
  with pytest.raises(config.ConfigError, match="needs data.user_features"):
    config.validate_config(c)
  c.data.user_feature_types = ""
  c.data.item_features = _write(tmp_path / "i.csv", "item,g\n1,a\n")
  c.data.item_feature_types = "g:categorical"
  c.sampler.name = "neg_cache"
  with pytest.raises(config.ConfigError, match="data.item_features does not work"):
    config.validate_config(c)


def _small(tmp_path, model="dnn", steps=300):
  c = synthetic.get_config()
  c.data.num_users, c.data.num_items, c.data.interactions_per_user = 400, 200, 12
  c.model.name = model
  c.model.dim, c.model.hidden = 16, (32,)
  c.train.steps, c.train.batch_size, c.train.log_every = steps, 128, 100
  common.no_checkpoints(c)
  c.sampler.num_negatives = 32
  world = data.load_data(c.data, c.seed)
  groups = world.train.user_groups
  rng = np.random.default_rng(0)
  lines = ["user,group,score"] + [f"{u},g{groups[u]},{rng.normal()}" for u in range(400)]
  c.data.user_features = _write(tmp_path / "users.csv", "\n".join(lines) + "\n")
  c.data.user_feature_types = "group:categorical,score:numeric"
  item_lines = ["item,genres"] + [f"{i},a|{'b' if i % 2 else 'c'}" for i in range(200)]
  c.data.item_features = _write(tmp_path / "items.csv", "\n".join(item_lines) + "\n")
  c.data.item_feature_types = "genres:multi"
  return c


@pytest.mark.parametrize("model", ["dnn", "mf"])
def test_training_with_user_and_item_features_through_the_launcher(tmp_path, model):
  """train_and_evaluate with the user's group (and a numeric column) as user features and a
  genre bag as item features: the run finishes, config.json records the feature keys, and
  the model beats popularity."""
  c = _small(tmp_path, model)
  res = train.train_and_evaluate(c, str(tmp_path / "run"), verbose=False)
  tr, _, te = data.load_data(c.data, c.seed)
  q, v = metrics.popularity_scores(tr)
  popular = metrics.evaluate(q, v, tr, te, ks=(20,))["recall@20"]
  assert res["metrics"]["recall@20"] > popular + 0.05, (res["metrics"], popular)
  assert res["config"]["data"]["user_features"] == c.data.user_features
  assert res["config"]["data"]["item_features"] == c.data.item_features


def test_step_with_item_features_keeps_sparse_rows_and_scores_rows_plus_offsets(tmp_path):
  """A sampled step updates only the id rows it read (the sparse path), moves the feature
  tables (dense), and the items it scores -- in training and in `item_embeddings` -- are
  id rows + the features' offsets (numpy from the params)."""
  c = _small(tmp_path, "mf")
  c.train.batch_size = 8
  c.sampler.num_negatives = 4
  spec = config.StepSpec.from_config(c)
  splits = data.load_data(c.data, c.seed)
  dd = step.device_data(splits.train, spec)
  state = step.init_state(spec, c, splits.train.num_users, splits.train.num_items, 0)
  before = jax.tree.map(np.array, state)
  new, _ = step.jitted_train_step(spec, state, dd)
  new = jax.tree.map(np.asarray, new)
  changed = np.flatnonzero(np.any(new.tables["item"] != before.tables["item"], axis=1))
  assert 0 < changed.size <= 8 + 4  # B positives + K shared negatives at most
  g_before = before.dense["params"]["item_embed"]["embed_genres"]
  g_after = new.dense["params"]["item_embed"]["embed_genres"]
  assert np.abs(g_after - g_before).max() > 0
  items = np.asarray(step.item_embeddings(spec, new, dd))
  cat = splits.train.item_features.cat
  bag = np.stack([g_after[[v for v in row if v]].mean(axis=0) for row in cat])
  np.testing.assert_allclose(items, new.tables["item"] + bag, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="pass the DeviceData"):
    step.item_embeddings(spec, new)
  # The users' query embeddings read their features (mf: row + e_group + W [z; missing]).
  p = new.dense["params"]
  uf = splits.train.user_features
  want = (
      new.tables["query"]
      + p["user_embed"]["embed_group"][uf.cat[:, 0]]
      + uf.num @ p["user_numeric"]["kernel"]
  )
  np.testing.assert_allclose(
      np.asarray(step.query_embeddings(spec, new, dd)), want, rtol=1e-5, atol=1e-6
  )


def test_compact_keeps_features_aligned():
  f = features.Features(
      (features.FeatureDecl("g", "categorical", 4, 1),),
      np.array([[1], [2], [3]], np.int32),
      np.zeros((3, 0), np.float32),
  )
  inter = data.Interactions(
      np.array([0, 2]), np.array([1, 1]), 3, 2, item_features=None, user_features=f
  )
  out = inter.compact()
  np.testing.assert_array_equal(out.user_features.cat, [[1], [3]])
  with pytest.raises(ValueError, match="expected 3 rows"):
    dataclasses.replace(inter, user_features=f.take([0, 1]))


def test_sweep_overrides_accept_feature_keys(tmp_path):
  c = sweep.apply_overrides(synthetic.get_config(), (("data.user_features", "x.csv"),))
  assert c.data.user_features == "x.csv"
