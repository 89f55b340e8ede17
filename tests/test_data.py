"""Tests for jaxrec.data: Interactions, readers, k-core, synthetic worlds, splits, download.

Every reader test writes its own small file under tmp_path and checks the result against an
independent Python computation (a dict-based remap of the raw rows).
"""

import collections
import io
import pathlib
import zipfile

import numpy as np
import pytest

from jaxrec import data as jd
from jaxrec.data import download, readers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# --------------------------------------------------------------------------------------
# Helpers: an independent "expected" Interactions from raw rows.


def expected_from_rows(rows, *, duplicates):
  """rows: list of (user_raw, item_raw, weight or None, timestamp or None) in file order.

  Dense ids = rank of the raw id among the sorted distinct raw ids; one row per
  (user, item): "last" keeps the row with the largest timestamp (ties: later in the file),
  "sum" sums weights and keeps the largest timestamp. Returned sorted by (user, item).
  """
  users = sorted({r[0] for r in rows})
  items = sorted({r[1] for r in rows})
  umap = {u: n for n, u in enumerate(users)}
  imap = {i: n for n, i in enumerate(items)}
  merged = {}
  for u, i, w, t in rows:
    key = (umap[u], imap[i])
    if key not in merged:
      merged[key] = [w, t]
    elif duplicates == "last":
      if t is None or t >= merged[key][1]:
        merged[key] = [w, t]
    else:
      old = merged[key]
      merged[key] = [None if w is None else old[0] + w, None if t is None else max(old[1], t)]
  keys = sorted(merged)
  return dict(
      users=users,
      items=items,
      user_ids=[k[0] for k in keys],
      item_ids=[k[1] for k in keys],
      weights=[merged[k][0] for k in keys],
      timestamps=[merged[k][1] for k in keys],
  )


def assert_matches(inter, exp):
  assert inter.num_users == len(exp["users"]) and inter.num_items == len(exp["items"])
  assert inter.user_raw.tolist() == exp["users"]
  assert inter.item_raw.tolist() == exp["items"]
  np.testing.assert_array_equal(inter.user_ids, exp["user_ids"])
  np.testing.assert_array_equal(inter.item_ids, exp["item_ids"])
  assert inter.user_ids.dtype == np.int32 and inter.item_ids.dtype == np.int32
  if exp["weights"][0] is None:
    assert inter.weights is None
  else:
    assert inter.weights.dtype == np.float32
    np.testing.assert_array_equal(inter.weights, np.float32(exp["weights"]))
  if exp["timestamps"][0] is None:
    assert inter.timestamps is None
  else:
    assert inter.timestamps.dtype == np.int64
    np.testing.assert_array_equal(inter.timestamps, exp["timestamps"])


def random_rows(rng, n=60, *, big_ids=True, half_stars=True, dup=True):
  """Rows with sparse raw ids (some beyond int32), ratings and timestamps."""
  hi = 10**15 if big_ids else 50
  user_pool = rng.integers(0, hi, size=12).tolist()
  item_pool = rng.integers(0, hi, size=25).tolist()
  rows = []
  for _ in range(n):
    r = rng.integers(1, 11) / 2 if half_stars else float(rng.integers(1, 6))
    rows.append(
        (int(rng.choice(user_pool)), int(rng.choice(item_pool)), r, int(rng.integers(8e8, 1.6e9)))
    )
  if dup:  # a re-rated pair: an older and a newer rating
    u, i = rows[0][0], rows[0][1]
    rows.append((u, i, 1.0, rows[0][3] - 5))
    rows.append((u, i, 5.0, rows[0][3] + 5))
  return rows


def fmt_num(x):
  return str(int(x)) if float(x).is_integer() else repr(float(x))


def write(path, text, *, newline="\n"):
  path.write_bytes(text.replace("\n", newline).encode())
  return path


# --------------------------------------------------------------------------------------
# Interactions.


def test_interactions_canonical_dtypes_and_helpers():
  inter = jd.Interactions(
      np.array([2, 0, 2, 1], np.int64),
      [1, 0, 3, 1],
      3,
      4,
      weights=[1, 2, 3, 4],
      timestamps=np.array([5, 6, 7, 8], np.int32),
  )
  assert inter.user_ids.dtype == np.int32 and inter.item_ids.dtype == np.int32
  assert inter.weights.dtype == np.float32 and inter.timestamps.dtype == np.int64
  assert inter.num_interactions == 4
  np.testing.assert_array_equal(inter.item_counts(), [1, 2, 0, 1])
  np.testing.assert_array_equal(inter.user_counts(), [1, 1, 2])
  offsets, items = inter.to_csr()
  expected = collections.defaultdict(list)
  for u, i in zip(inter.user_ids.tolist(), inter.item_ids.tolist()):
    expected[u].append(i)
  for u in range(3):
    assert items[offsets[u] : offsets[u + 1]].tolist() == sorted(expected[u])
  assert offsets[-1] == 4
  sub = inter.subset(np.array([True, False, True, False]))
  assert sub.user_ids.tolist() == [2, 2] and sub.item_ids.tolist() == [1, 3]
  assert sub.weights.tolist() == [1, 3] and sub.timestamps.tolist() == [5, 7]
  assert sub.num_users == 3 and sub.num_items == 4
  compact = sub.compact()
  assert (compact.num_users, compact.num_items) == (1, 2)
  assert compact.user_ids.tolist() == [0, 0] and compact.item_ids.tolist() == [0, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(user_ids=[0.0, 1.0]), "user_ids: expected an integer array"),
        (dict(user_ids=[0, 2]), r"user_ids: values must lie in \[0, 2\)"),
        (dict(item_ids=[0, -1]), r"item_ids: values must lie in \[0, 3\)"),
        (dict(item_ids=[0]), r"item_ids: expected shape \[2\]"),
        (dict(weights=[1.0, np.nan]), "weights: non-finite value nan at row 1"),
        (dict(weights=[1.0, 1e39]), "weights: non-finite value inf"),
        (dict(timestamps=[1.5, 2.0]), "timestamps: expected an integer array"),
        (dict(user_groups=[0, 1, 2]), r"user_groups: expected shape \[2\]"),
        (dict(item_raw=["a", "b"]), r"item_raw: expected shape \(3,\)"),
        (dict(num_users=-1), r"num_users must lie in"),
        (
            dict(user_ids=np.array([0, 2**31], np.int64), num_users=2**31 + 1),
            r"num_users must lie in \[0, 2147483647\]",
        ),  # ids that overflow int32
        (dict(num_items=2.0), "num_items must be an int"),
    ],
)
def test_interactions_validation_names_the_field(kwargs, match):
  base = dict(user_ids=[0, 1], item_ids=[0, 2], num_users=2, num_items=3)
  base.update(kwargs)
  with pytest.raises(ValueError, match=match):
    jd.Interactions(**base)


def test_subset_rejects_bad_mask():
  inter = jd.Interactions([0, 1], [0, 1], 2, 2)
  with pytest.raises(ValueError, match="mask must be bool"):
    inter.subset(np.array([1, 0]))


# --------------------------------------------------------------------------------------
# Readers: every format against the dict remap.


@pytest.mark.parametrize(
    "layout",
    ["u.data", "ratings.dat", "ratings.csv", "ratings.csv-noheader", "file-path", "sniffed-name"],
)
def test_load_movielens_formats(tmp_path, layout):
  rows = random_rows(np.random.default_rng(0))
  lines = {
      "u.data": [f"{u}\t{i}\t{fmt_num(r)}\t{t}" for u, i, r, t in rows],
      "ratings.dat": [f"{u}::{i}::{fmt_num(r)}::{t}" for u, i, r, t in rows],
      "ratings.csv": ["userId,movieId,rating,timestamp"]
      + [f"{u},{i},{r},{t}" for u, i, r, t in rows],
      "ratings.csv-noheader": [f"{u},{i},{r},{t}" for u, i, r, t in rows],
      "file-path": [f"{u}::{i}::{fmt_num(r)}::{t}" for u, i, r, t in rows],
      "sniffed-name": [f"{u}::{i}::{fmt_num(r)}::{t}" for u, i, r, t in rows],
  }[layout]
  name = {
      "ratings.csv-noheader": "ratings.csv",
      "file-path": "ratings.dat",
      "sniffed-name": "my_ratings.txt",
  }.get(layout, layout)
  path = write(tmp_path / name, "\n".join(lines) + "\n")
  inter = jd.load_movielens(
      tmp_path if layout in ("u.data", "ratings.dat", "ratings.csv") else path
  )
  assert_matches(inter, expected_from_rows(rows, duplicates="last"))


def test_load_movielens_keeps_latest_rerating(tmp_path):
  write(tmp_path / "u.data", "1\t10\t2\t100\n1\t10\t5\t300\n1\t10\t3\t200\n2\t10\t4\t50\n")
  inter = jd.load_movielens(tmp_path)
  assert inter.num_interactions == 2
  assert inter.weights.tolist() == [5.0, 4.0] and inter.timestamps.tolist() == [300, 50]


def test_load_movielens_min_rating(tmp_path):
  rows = random_rows(np.random.default_rng(1), dup=False)
  write(tmp_path / "ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
  inter = jd.load_movielens(tmp_path, min_rating=3.5)
  kept = [r for r in rows if r[2] >= 3.5]
  assert 0 < len(kept) < len(rows)
  assert_matches(inter, expected_from_rows(kept, duplicates="last"))
  with pytest.raises(jd.DataError, match=r"no interactions with rating >= 9"):
    jd.load_movielens(tmp_path, min_rating=9)
  with pytest.raises(ValueError, match="min_rating must be a finite number"):
    jd.load_movielens(tmp_path, min_rating=float("nan"))


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_load_lastfm_variants(tmp_path, header, newline):
  rng = np.random.default_rng(2)
  rows = [
      (int(rng.integers(2, 40)), int(rng.integers(1, 300)), float(rng.integers(1, 10**5)), None)
      for _ in range(80)
  ]
  rows.append((rows[3][0], rows[3][1], 7.0, None))  # a duplicated pair: counts add up
  text = ["userID\tartistID\tweight"] if header else []
  for n, (u, i, w, _) in enumerate(rows):
    item = f"{i}  " if n % 7 == 0 else str(i)  # the "65  " row of the real file
    tail = " " if n % 11 == 0 else ""
    text.append(f"{u}\t{item}\t{int(w)}{tail}")
  write(tmp_path / "user_artists.dat", "\n".join(text) + "\n", newline=newline)
  inter = jd.load_lastfm(tmp_path)
  assert_matches(inter, expected_from_rows(rows, duplicates="sum"))
  assert inter.timestamps is None


@pytest.mark.parametrize("ncols", [2, 3, 4])
@pytest.mark.parametrize("header", ["auto", "flag", "none"])
def test_load_csv_columns_and_headers(tmp_path, ncols, header):
  rng = np.random.default_rng(3)
  users = ["alice", "bob", "carol", "dan", "émile", "x y"]
  rows = []
  for _ in range(40):
    rows.append(
        (
            str(rng.choice(users)),
            f"item-{rng.integers(0, 15)}",
            float(rng.integers(1, 6)) if ncols >= 3 else None,
            int(rng.integers(0, 10**10)) if ncols >= 4 else None,
        )
    )
  names = ["user_id", "item_id", "weight", "timestamp"][:ncols]
  lines = [",".join(names)] if header != "none" else []
  for u, i, w, t in rows:
    lines.append(
        ",".join(
            [u, f" {i} "] + ([fmt_num(w)] if ncols >= 3 else []) + ([str(t)] if ncols >= 4 else [])
        )
    )
  path = write(tmp_path / "x.csv", "\n".join(lines) + "\n")
  inter = jd.load_csv(path, has_header={"auto": None, "flag": True, "none": False}[header])
  assert_matches(inter, expected_from_rows(rows, duplicates="sum"))


def test_load_csv_integer_id_columns_sort_numerically(tmp_path):
  path = write(tmp_path / "x.tsv", "10\ta\n9\tb\n+100\ta\n-3\tb\n")
  inter = jd.load_csv(path, delimiter="\t")
  assert inter.user_raw.dtype == np.int64 and inter.user_raw.tolist() == [-3, 9, 10, 100]
  assert inter.item_raw.tolist() == ["a", "b"]
  # One non-integer id keeps the whole column as strings (code-point order).
  path = write(tmp_path / "y.tsv", "10\ta\n9\tb\nu7\ta\n")
  assert jd.load_csv(path, delimiter="\t").user_raw.tolist() == ["10", "9", "u7"]


def test_load_csv_unknown_header_gets_a_hint(tmp_path):
  path = write(tmp_path / "x.csv", "who,what,score\na,b,1\n")
  with pytest.raises(
      jd.DataError, match=r"x.csv:1: weight 'score' is not a number.*has_header=True"
  ):
    jd.load_csv(path)
  inter = jd.load_csv(path, has_header=True)
  assert inter.user_raw.tolist() == ["a"] and inter.weights.tolist() == [1.0]


def test_load_csv_rejects_bad_arguments(tmp_path):
  path = write(tmp_path / "x.csv", "a,b\n")
  with pytest.raises(ValueError, match="delimiter must be one ASCII character"):
    jd.load_csv(path, delimiter="::")
  with pytest.raises(ValueError, match="has_header must be True, False or None"):
    jd.load_csv(path, has_header="yes")
  with pytest.raises(jd.DataError, match=r"x5.csv:1: found 5 field\(s\), expected 2 to 4"):
    jd.load_csv(write(tmp_path / "x5.csv", "a,b,1,2,3\n"))


# --------------------------------------------------------------------------------------
# Readers: bad input.

# (file name, content, expected line, reason regex). Lines are 1-based physical lines.
BAD_FILES = [
    ("u.data", "1\t2\t3\t4\n1\t2\t3\n", 2, r"found 3 field\(s\), expected 4"),
    ("u.data", "1\t2\t3\t4\n\n\n1\t2\tx\t4\n", 4, r"rating 'x' is not a number"),
    ("u.data", "1\t2\t3\t4\n1\t2\tnan\t4\n", 2, r"rating 'nan' is not a number"),
    ("u.data", "1\t2\t3\t4\n1\t2\t1e39\t4\n", 2, r"rating '1e39' is not finite in float32"),
    ("u.data", "1\t\t3\t4\n", 1, r"item id is empty"),
    ("u.data", "1\t2\t3\t4\n99999999999999999999\t2\t3\t4\n", 2, r"user id .* does not fit int64"),
    ("u.data", "1\t2\t3\t4\n1\t2\t3\t4.5\n", 2, r"timestamp '4.5' is not an integer"),
    ("u.data", "1\t2\t3\t4\n1\t1_0\t3\t4\n", 2, r"item id '1_0' is not an integer"),
    (
        "ratings.dat",
        "1::2::3::4\r\n1::2::3::4\r\n1:::2::3::4\r\n",
        3,
        r"item id ':2' is not an integer",
    ),
    ("ratings.dat", "1::2::3::4\n1::2::3::4\r\r\n", 2, r"timestamp '4\\r' is not an integer"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,,4\n", 3, r"rating is empty"),
    ("ratings.csv", "1,2,3,4\n1,2,3,4,\n", 2, r"found 5 field\(s\)"),
    (
        "user_artists.dat",
        "userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t5 1\t1\r\n",
        3,
        r"artist id '5 1' is not an integer",
    ),
    ("user_artists.dat", "2\t51\t13883\n2\t52\x00\t1\n", 2, r"artist id .* is not an integer"),
    ("data.csv", "a,b,1\nc,d\n", 2, r"found 2 field\(s\), expected 3"),
    ("data.csv", "a,b,1\n,d,2\n", 2, r"user id is empty"),
    ("data.csv", "a,b\nc\x01,d\n", 2, r"user id .* contains a control character"),
    ("data.csv", "a,b\nc,\xff\xfe\n", 2, r"item id .* is not valid UTF-8"),
    ("data.csv", "a,b,1,5\nc,d,2,5.5\n", 2, r"timestamp '5.5' is not an integer"),
]


def _load_any(path):
  if path.name == "user_artists.dat":
    return jd.load_lastfm(path)
  if path.name == "data.csv":
    return jd.load_csv(path)
  return jd.load_movielens(path)


@pytest.mark.parametrize("chunk_bytes", [readers.CHUNK_BYTES, 8])
@pytest.mark.parametrize("name, content, line, reason", BAD_FILES)
def test_bad_row_reports_file_and_line(
    tmp_path, monkeypatch, chunk_bytes, name, content, line, reason
):
  # chunk_bytes=8 makes every line its own chunk: the line count must carry across chunks.
  monkeypatch.setattr(readers, "CHUNK_BYTES", chunk_bytes)
  path = tmp_path / name
  path.write_bytes(content.encode("latin-1"))
  with pytest.raises(jd.DataError) as info:
    _load_any(path)
  message = str(info.value)
  assert message.startswith(f"{path}:{line}: "), message
  assert __import__("re").search(reason, message), message


def test_fast_and_slow_paths_agree_across_chunks(tmp_path, monkeypatch):
  rows = random_rows(np.random.default_rng(4), n=300)
  text = "".join(f"{u}\t{i}\t{fmt_num(r)}\t{t}\n" for u, i, r, t in rows)
  write(tmp_path / "u.data", text)
  whole = jd.load_movielens(tmp_path)
  monkeypatch.setattr(readers, "CHUNK_BYTES", 100)
  chunked = jd.load_movielens(tmp_path)
  monkeypatch.setattr(readers, "parse_lines_fast", lambda *a: (_ for _ in ()).throw(readers.Bail()))
  slow = jd.load_movielens(tmp_path)
  for other in (chunked, slow):
    for field in ("user_ids", "item_ids", "weights", "timestamps", "user_raw", "item_raw"):
      np.testing.assert_array_equal(getattr(whole, field), getattr(other, field))
  assert_matches(whole, expected_from_rows(rows, duplicates="last"))


@pytest.mark.parametrize(
    "content", ["", "\n\n", "  \r\n\t\r\n", "userId,movieId,rating,timestamp\n"]
)
def test_empty_file_raises(tmp_path, content):
  write(tmp_path / "ratings.csv", content)
  with pytest.raises(jd.DataError, match=r"ratings.csv: no interactions"):
    jd.load_movielens(tmp_path)


def test_empty_csv_and_lastfm_raise(tmp_path):
  with pytest.raises(jd.DataError, match="no interactions"):
    jd.load_csv(write(tmp_path / "a.csv", "user,item\n"))
  with pytest.raises(jd.DataError, match="no interactions"):
    jd.load_lastfm(write(tmp_path / "user_artists.dat", "userID\tartistID\tweight\r\n"))


def test_missing_paths_raise_naming_the_path(tmp_path):
  missing = tmp_path / "nope"
  for load in (jd.load_movielens, jd.load_lastfm, jd.load_csv):
    with pytest.raises(jd.DataPathError, match=str(missing)) as info:
      load(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, jd.DataError)
  with pytest.raises(FileNotFoundError, match=r"no MovieLens ratings file found .*u.data"):
    jd.load_movielens(tmp_path)
  with pytest.raises(FileNotFoundError, match="no user_artists.dat"):
    jd.load_lastfm(tmp_path)
  with pytest.raises(jd.DataError, match="is a directory"):
    jd.load_csv(tmp_path)


# --------------------------------------------------------------------------------------
# k-core.


def brute_force_k_core(pairs, min_user, min_item):
  pairs = list(pairs)
  while True:
    uc = collections.Counter(u for u, _ in pairs)
    ic = collections.Counter(i for _, i in pairs)
    kept = [(u, i) for u, i in pairs if uc[u] >= min_user and ic[i] >= min_item]
    if len(kept) == len(pairs):
      return kept
    pairs = kept


@pytest.mark.parametrize("min_user, min_item", [(1, 1), (2, 3), (3, 2), (4, 4)])
def test_k_core_matches_brute_force(min_user, min_item):
  rng = np.random.default_rng(5)
  pairs = sorted({(int(rng.integers(0, 40)), int(rng.integers(0, 30))) for _ in range(300)})
  raw_u = np.array([f"u{n}" for n in range(40)])
  inter = jd.Interactions(
      [p[0] for p in pairs],
      [p[1] for p in pairs],
      40,
      30,
      weights=np.arange(len(pairs)),
      user_raw=raw_u,
      item_groups=np.arange(30) % 3,
  )
  core = jd.k_core(inter, min_user=min_user, min_item=min_item)
  expected = brute_force_k_core(pairs, min_user, min_item)
  got = sorted(
      zip(
          core.user_raw[core.user_ids].tolist(),
          core.item_groups[core.item_ids].tolist(),
          core.weights.tolist(),
      )
  )
  want = sorted((f"u{u}", i % 3, float(pairs.index((u, i)))) for u, i in expected)
  assert got == want
  assert core.num_users == len({u for u, _ in expected})
  assert core.num_items == len({i for _, i in expected})
  assert core.user_counts().min() >= min_user and core.item_counts().min() >= min_item


def test_k_core_errors():
  inter = jd.Interactions([0, 1], [0, 1], 2, 2)
  with pytest.raises(jd.DataError, match="removed every interaction"):
    jd.k_core(inter, min_user=2, min_item=1)
  with pytest.raises(ValueError, match="min_item must be an int >= 1"):
    jd.k_core(inter, min_user=1, min_item=0)


# --------------------------------------------------------------------------------------
# Synthetic folding world.


def test_folding_world_structure():
  w = jd.make_folding_world(
      num_groups=4, num_users=400, num_items=200, interactions_per_user=10, seed=1
  )
  assert (w.num_users, w.num_items, w.num_interactions) == (400, 200, 4000)
  np.testing.assert_array_equal(w.item_groups, np.repeat(np.arange(4), 50))
  np.testing.assert_array_equal(np.bincount(w.user_groups), [100] * 4)
  # noise = 0: no cross-group interaction at all.
  assert np.all(w.user_groups[w.user_ids] == w.item_groups[w.item_ids])
  # Distinct items per user, k of them.
  pairs = set(zip(w.user_ids.tolist(), w.item_ids.tolist()))
  assert len(pairs) == w.num_interactions
  np.testing.assert_array_equal(w.user_counts(), 10)
  # Each user's timestamps are a permutation of 0..k-1.
  for u in range(0, 400, 37):
    assert sorted(w.timestamps[w.user_ids == u].tolist()) == list(range(10))


def test_folding_world_noise_rate_is_binomial():
  noise, users, k = 0.1, 2000, 10
  w = jd.make_folding_world(
      num_groups=4, num_users=users, num_items=400, interactions_per_user=k, noise=noise, seed=2
  )
  cross = int(np.sum(w.user_groups[w.user_ids] != w.item_groups[w.item_ids]))
  # Cross-group count ~ Binomial(users * k, noise): mean 2000, sd ~ 42. 4 sd ~ 1 in 15,000.
  n = users * k
  assert abs(cross - n * noise) < 4 * np.sqrt(n * noise * (1 - noise)), cross
  # Cross-group items are spread over the other groups, never the user's own.
  w0 = jd.make_folding_world(num_groups=1, num_users=50, num_items=100, interactions_per_user=5)
  assert np.all(w0.item_groups == 0)


def test_folding_world_zipf_within_group():
  w = jd.make_folding_world(
      num_groups=2,
      num_users=3000,
      num_items=200,
      interactions_per_user=5,
      zipf_exponent=1.0,
      seed=3,
      topics_per_group=1,
  )
  counts = w.item_counts()
  for g in range(2):
    c = counts[w.item_groups == g]
    assert c.argmax() == 0  # the rank-0 item is the most popular of its group
    # Popularity falls with rank: mean count of ranks 0-9 well above ranks 50-99.
    assert c[:10].mean() > 3 * c[50:].mean()
  # Without a Zipf exponent popularity is flat-ish: no 3x gap.
  flat = jd.make_folding_world(
      num_groups=2,
      num_users=3000,
      num_items=200,
      interactions_per_user=5,
      zipf_exponent=0.0,
      seed=3,
      topics_per_group=1,
  ).item_counts()
  assert flat[:10].mean() < 1.5 * flat[50:100].mean()


@pytest.mark.parametrize("topics", [1, 4])
def test_folding_world_single_draw_law(topics):
  # With one interaction per user each draw is one weighted draw. With w_j = (r_j+1)^-s,
  # topic t_j = r_j % T, a uniform user topic t and affinity a:
  #   P(j) = mean_t [ a * w_j 1[t_j = t] / W_t + (1 - a) * w_j 1[t_j != t] / (W - W_t) ]
  # (for T = 1 simply w_j / W). Chi-square test, 19 dof: the 0.1% critical value is 43.8.
  s, a, n_items, users = 1.2, 0.7, 20, 20000
  w = jd.make_folding_world(
      num_groups=1,
      num_users=users,
      num_items=n_items,
      interactions_per_user=1,
      zipf_exponent=s,
      seed=4,
      topics_per_group=topics,
      topic_affinity=a,
  )
  weight = (np.arange(n_items) + 1.0) ** -s
  topic = np.arange(n_items) % topics
  if topics == 1:
    p = weight / weight.sum()
  else:
    p = np.zeros(n_items)
    for t in range(topics):
      own = topic == t
      p += (
          a * weight * own / weight[own].sum() + (1 - a) * weight * ~own / weight[~own].sum()
      ) / topics
  np.testing.assert_allclose(p.sum(), 1.0)
  observed = w.item_counts()
  chi2 = np.sum((observed - users * p) ** 2 / (users * p))
  assert chi2 < 43.8, chi2


def test_folding_world_topics_beat_popularity():
  """A user's topic is learnable: 'most popular items of the user's train topic' beats
  global popularity on held-out items by a wide margin."""
  w = jd.make_folding_world(
      num_groups=4, num_users=1000, num_items=800, interactions_per_user=20, seed=5
  )
  train, test = jd.split(w, seed=0)
  T = 5  # default: min(5, 200 // 20)
  topic = (np.arange(800) % 200) % T
  pop = train.item_counts().astype(float)
  offsets, items = train.to_csr()
  t_off, t_items = test.to_csr()
  rec_pop, rec_topic = [], []
  for u in range(0, 1000, 5):
    seen = items[offsets[u] : offsets[u + 1]]
    truth = set(t_items[t_off[u] : t_off[u + 1]].tolist())
    g = w.user_groups[u]
    fav = np.bincount(topic[seen], minlength=T).argmax()
    score_pop = pop.copy()
    score_pop[seen] = -1
    score_topic = pop + 1e6 * ((topic == fav) & (w.item_groups == g))
    score_topic[seen] = -1
    for score, out in ((score_pop, rec_pop), (score_topic, rec_topic)):
      top = set(np.argsort(-score, kind="stable")[:20].tolist())
      out.append(len(top & truth) / min(20, len(truth)))
  assert np.mean(rec_topic) > 2 * np.mean(rec_pop), (np.mean(rec_topic), np.mean(rec_pop))


def test_folding_world_deterministic_and_seeded():
  kw = dict(num_groups=3, num_users=300, num_items=300, interactions_per_user=8, noise=0.2)
  a, b = jd.make_folding_world(seed=7, **kw), jd.make_folding_world(seed=7, **kw)
  c = jd.make_folding_world(seed=8, **kw)
  for field in ("user_ids", "item_ids", "timestamps", "user_groups", "item_groups"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  assert not np.array_equal(a.item_ids, c.item_ids)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_groups=0), "num_groups must be an int >= 1"),
        (dict(noise=1.5), r"noise must be a number in \[0, 1\]"),
        (dict(num_groups=1, noise=0.1), "needs num_groups >= 2"),
        (dict(num_items=100, num_groups=4, interactions_per_user=30), "exceeds the smallest group"),
        (
            dict(num_items=100, num_groups=4, interactions_per_user=10, topics_per_group=5),
            "exceeds the smallest topic",
        ),
        (dict(zipf_exponent=-1.0), "zipf_exponent must be a finite number >= 0"),
    ],
)
def test_folding_world_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jd.make_folding_world(**kwargs)


def test_folding_world_10k_users_has_k_distinct_items_each():
  # No wall-clock bound here (issue 23: speed lives in benchmarks and records; the launcher
  # generates 100k users x 1M items in 2.2 s, docs/RESULTS.md). What 10k users must hold:
  w = jd.make_folding_world(num_users=10000)
  users, items = np.asarray(w.user_ids), np.asarray(w.item_ids)
  np.testing.assert_array_equal(np.bincount(users, minlength=10000), np.full(10000, 20))
  pairs = users.astype(np.int64) * w.num_items + items
  assert np.unique(pairs).size == pairs.size  # distinct items within each user


# --------------------------------------------------------------------------------------
# Language split.


def test_language_split_invariants():
  rng = np.random.default_rng(6)
  base = jd.Interactions(
      rng.integers(0, 50, 400),
      rng.integers(0, 30, 400),
      50,
      30,
      weights=rng.random(400),
      timestamps=rng.integers(0, 99, 400),
      item_groups=np.zeros(30, np.int32),
      item_raw=np.arange(30) * 7,
  )
  L = 3
  ls = jd.language_split(base, L, seed=1)
  assert ls.num_items == 90 and ls.num_users == 50
  copy = ls.user_groups
  np.testing.assert_array_equal(np.bincount(copy), [17, 17, 16])  # even spread
  np.testing.assert_array_equal(ls.item_ids // 30, copy[ls.user_ids])  # own copy only
  np.testing.assert_array_equal(ls.item_ids % 30, base.item_ids)
  np.testing.assert_array_equal(ls.user_ids, base.user_ids)
  np.testing.assert_array_equal(
      ls.item_groups, np.repeat(np.arange(3), 30)
  )  # input groups replaced
  np.testing.assert_array_equal(ls.item_raw[ls.item_ids], base.item_raw[base.item_ids])
  np.testing.assert_array_equal(ls.weights, base.weights)
  np.testing.assert_array_equal(ls.timestamps, base.timestamps)
  np.testing.assert_array_equal(jd.language_split(base, L, seed=1).user_groups, copy)
  assert not np.array_equal(jd.language_split(base, L, seed=2).user_groups, copy)
  with pytest.raises(ValueError, match="num_copies must be an int >= 1"):
    jd.language_split(base, 0)


# --------------------------------------------------------------------------------------
# Splits.


def _rows(inter):
  cols = [inter.user_ids, inter.item_ids]
  cols += [c for c in (inter.weights, inter.timestamps) if c is not None]
  return collections.Counter(zip(*[c.tolist() for c in cols]))


def _split_world():
  rng = np.random.default_rng(7)
  n_per_user = rng.integers(1, 30, size=60)
  users = np.repeat(np.arange(60), n_per_user)
  return jd.Interactions(
      users,
      rng.integers(0, 100, users.size),
      60,
      100,
      weights=rng.random(users.size),
      timestamps=rng.integers(0, 10**6, users.size),
      user_groups=np.arange(60) % 2,
      item_raw=np.arange(100) + 1000,
  )


@pytest.mark.parametrize("kind", ["random", "last", "users"])
def test_split_partitions_rows_in_one_id_space(kind):
  inter = _split_world()
  train, test = jd.split(inter, kind=kind, test_fraction=0.3, seed=0)
  assert _rows(train) + _rows(test) == _rows(inter)  # disjoint and union = input (multiset)
  for part in (train, test):
    assert (part.num_users, part.num_items) == (60, 100)
    np.testing.assert_array_equal(part.user_groups, inter.user_groups)
    np.testing.assert_array_equal(part.item_raw, inter.item_raw)
  again = jd.split(inter, kind=kind, test_fraction=0.3, seed=0)
  np.testing.assert_array_equal(again[1].item_ids, test.item_ids)
  if kind != "last":  # "last" has no randomness beyond ties
    other = jd.split(inter, kind=kind, test_fraction=0.3, seed=1)
    assert _rows(other[1]) != _rows(test)


def test_random_split_fractions():
  inter = _split_world()
  n = inter.user_counts()
  train, test = jd.split(inter, kind="random", test_fraction=0.3, seed=0)
  expected = np.where(n >= 2, np.clip(np.floor(0.3 * n + 0.5), 1, n - 1), 0)
  np.testing.assert_array_equal(test.user_counts(), expected)
  assert np.all(train.user_counts() >= 1)


def test_last_split_picks_the_latest_row():
  inter = _split_world()
  _, test = jd.split(inter, kind="last", seed=0)
  n = inter.user_counts()
  np.testing.assert_array_equal(test.user_counts(), (n >= 2).astype(int))
  for u in np.flatnonzero(n >= 2):
    assert test.timestamps[test.user_ids == u][0] == inter.timestamps[inter.user_ids == u].max()
  no_ts = jd.Interactions([0, 0], [0, 1], 1, 2)
  with pytest.raises(ValueError, match="kind='last'.*needs timestamps"):
    jd.split(no_ts, kind="last")


def test_last_split_breaks_ties_by_seed():
  tied = jd.Interactions(np.zeros(10, int), np.arange(10), 1, 10, timestamps=np.full(10, 5))
  picks = {int(jd.split(tied, kind="last", seed=s)[1].item_ids[0]) for s in range(30)}
  assert len(picks) > 3  # 30 seeds over 10 tied rows


def test_users_split_holds_out_users_with_history():
  inter = _split_world()
  n = inter.user_counts()
  train, test = jd.split(inter, kind="users", test_fraction=0.3, seed=0)
  held = np.flatnonzero(test.user_counts() > 0)
  eligible = np.flatnonzero(n >= 2)
  assert held.size == int(np.floor(0.3 * eligible.size + 0.5))
  assert set(held.tolist()) <= set(eligible.tolist())
  expected = np.clip(np.floor(0.3 * n[held] + 0.5), 1, n[held] - 1)
  np.testing.assert_array_equal(test.user_counts()[held], expected)
  assert np.all(train.user_counts()[held] >= 1)  # their history stays as input
  # Not-held users are entirely in train.
  others = np.setdiff1d(np.arange(60), held)
  np.testing.assert_array_equal(train.user_counts()[others], n[others])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="time"), r"kind='time' is not one of \('random', 'last', 'users'\)"),
        (dict(test_fraction=0.0), r"test_fraction must be in \(0, 1\)"),
        (dict(test_fraction=1.0), r"test_fraction must be in \(0, 1\)"),
    ],
)
def test_split_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jd.split(_split_world(), **kwargs)


# --------------------------------------------------------------------------------------
# Download (offline: a file:// "server" holding a fabricated archive; no network).


def _fake_archive(server, name, inner, files):
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    for fname, content in files.items():
      z.writestr(f"{inner}/{fname}", content)
  (server / f"{name}.zip").write_bytes(buf.getvalue())
  return buf.getvalue()


def test_download_movielens_unpacks_and_verifies(tmp_path):
  import hashlib

  server = tmp_path / "server"
  server.mkdir()
  blob = _fake_archive(server, "ml-1m", "ml-1m", {"ratings.dat": "1::2::5::9\n3::2::4::8\n"})
  base = server.as_uri() + "/"
  dest = tmp_path / "dest"
  with pytest.raises(ValueError, match="has sha256"):
    download.download_movielens("ml-1m", dest, base_url=base, sha256="0" * 64)
  assert not (dest / "ml-1m").exists()
  assert list(dest.iterdir()) == []  # the temporary folder is gone too
  folder = download.download_movielens(
      "ml-1m", dest, base_url=base, sha256=hashlib.sha256(blob).hexdigest()
  )
  assert folder == dest / "ml-1m"
  inter = jd.load_movielens(folder)
  assert inter.user_raw.tolist() == [1, 3] and inter.weights.tolist() == [5.0, 4.0]
  # The CLI entry point prints the folder; an existing folder is reused.
  assert download.main(["--name=ml-1m", f"--dest={dest}", f"--base_url={base}"]) == 0
  with pytest.raises(ValueError, match="unknown name 'ml-2m'"):
    download.download_movielens("ml-2m", dest)


def test_download_refuses_unsafe_archive(tmp_path):
  server = tmp_path / "server"
  server.mkdir()
  _fake_archive(server, "ml-100k", "ml-100k/../../evil", {"u.data": "1\t2\t3\t4\n"})
  with pytest.raises(ValueError, match="unsafe path"):
    download.download_movielens("ml-100k", tmp_path / "dest", base_url=server.as_uri() + "/")
  assert not (tmp_path / "evil").exists()


# --------------------------------------------------------------------------------------
# Real data (optional: ../shared/data next to the repository).


@pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data sets not present at {SHARED_DATA} (optional)"
)
def test_real_data_sets_load_with_known_sizes():
  ml = jd.load_movielens(SHARED_DATA / "ml-latest-small")
  assert (ml.num_interactions, ml.num_users, ml.num_items) == (100836, 610, 9724)
  assert ml.item_raw.max() == 193609 and ml.weights.min() == 0.5 and ml.weights.max() == 5.0
  lf = jd.load_lastfm(SHARED_DATA / "lastfm-2k")
  assert (lf.num_interactions, lf.num_users, lf.num_items) == (92834, 1892, 17632)
  assert 65 in lf.item_raw.tolist()  # the "65  " row parsed, not dropped
