"""Property-based fuzzing of the readers (hypothesis).

Random and corrupted rows go to every reader. Each input must either load exactly what an
independent, deliberately simple line-by-line parser (written here from the documented
grammar, with regexes) says it holds, or raise `DataError` whose message starts with
"FILE:LINE:" at the first bad line that parser finds. Any other exception, a wrong line,
a dropped row or a changed value fails. Chunk sizes are fuzzed too, so that the vectorised
fast pass, its hand-over to the reference pass and the line count across chunks are all
exercised.
"""

import contextlib
import re

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from jaxrec import data as jd
from jaxrec.data import readers

SETTINGS = hypothesis.settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.function_scoped_fixture,
    ],
)

# ---------------------------------------------------------------------------------------
# The independent reference parser.

INT_RE = re.compile(rb"[ \t]*[+-]?[0-9]+[ \t]*")
REAL_RE = re.compile(rb"[ \t]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*")
ASCII_INT_RE = re.compile(r"[+-]?[0-9]+")
I64 = 2**63


class Bad(Exception):

  def __init__(self, line):
    super().__init__(line)
    self.line = line


def ref_field(token: bytes, kind: str):
  """Returns the value, or raises ValueError."""
  if kind == "str":
    text = token.decode("utf-8").strip(" \t")  # UnicodeDecodeError is a ValueError
    if not text or any(ord(c) < 32 and c != "\t" for c in text):
      raise ValueError
    return text
  if kind == "int":
    if not INT_RE.fullmatch(token):
      raise ValueError
    value = int(token.strip(b" \t"))
    if not -I64 <= value < I64:
      raise ValueError
    return value
  if not REAL_RE.fullmatch(token):
    raise ValueError
  value = float(token.strip(b" \t"))
  with np.errstate(over="ignore"):
    if not np.isfinite(np.float32(value)):
      raise ValueError
  return value


def ref_lines(content: bytes):
  """(line number, line without terminator) for every non-blank line."""
  if content.startswith(b"\xef\xbb\xbf"):
    content = content[3:]
  lines = content.split(b"\n")
  if lines[-1] == b"":
    lines.pop()
  out = []
  for n, line in enumerate(lines, start=1):
    if line.endswith(b"\r"):
      line = line[:-1]
    out.append((n, line, line.strip(b" \t\r") == b""))
  return out


def ref_parse(content: bytes, delim: bytes, kinds, skip_first: bool):
  """Rows of parsed fields; raises Bad(line) at the first bad line."""
  rows = []
  for n, line, blank in ref_lines(content):
    if (n == 1 and skip_first) or blank:
      continue
    fields = line.split(delim)
    if len(fields) != len(kinds):
      raise Bad(n)
    try:
      rows.append([ref_field(f, k) for f, k in zip(fields, kinds)])
    except ValueError:
      raise Bad(n) from None
  return rows


def first_fields(content: bytes, delim: bytes):
  lines = ref_lines(content)
  if not lines:
    return []
  return [f.strip(b" \t").decode("utf-8", "replace").lower() for f in lines[0][1].split(delim)]


def ref_interactions(rows, duplicates):
  """rows: [user, item, weight|None, ts|None] -> expected columns (dict remap)."""
  users, items = sorted({r[0] for r in rows}), sorted({r[1] for r in rows})
  umap = {u: n for n, u in enumerate(users)}
  imap = {i: n for n, i in enumerate(items)}
  merged = {}
  for u, i, w, t in rows:
    key = (umap[u], imap[i])
    if key not in merged:
      merged[key] = [w, t]
    elif duplicates == "last":
      if t >= merged[key][1]:
        merged[key] = [w, t]
    else:
      old = merged[key]
      merged[key] = [None if w is None else old[0] + w, None if t is None else max(old[1], t)]
  keys = sorted(merged)
  return users, items, keys, merged


def check(path, load, expected):
  """expected: ("bad", line) | ("empty",) | ("overflow",) | ("ok", rows, duplicates)."""
  if expected[0] == "ok":
    inter = load(path)
    rows, duplicates = expected[1], expected[2]
    users, items, keys, merged = ref_interactions(rows, duplicates)
    assert inter.user_raw.tolist() == users
    assert inter.item_raw.tolist() == items
    assert list(zip(inter.user_ids.tolist(), inter.item_ids.tolist())) == keys
    w = [merged[k][0] for k in keys]
    if w[0] is None:
      assert inter.weights is None
    else:
      # Summed duplicates may be added in another order: float64 rounding, then float32.
      np.testing.assert_allclose(inter.weights, np.float32(w), rtol=1e-6)
    t = [merged[k][1] for k in keys]
    if t[0] is None:
      assert inter.timestamps is None
    else:
      assert inter.timestamps.tolist() == t
    return
  with pytest.raises(jd.DataError) as info:
    load(path)
  message = str(info.value)
  if expected[0] == "bad":
    assert message.startswith(f"{path}:{expected[1]}: "), (message, expected)
  elif expected[0] == "empty":
    assert message.startswith(f"{path}: no interactions"), message
  else:
    assert "overflow float32" in message, message


def expect(content, delim, kinds, skip_first, duplicates, to_row):
  try:
    rows = ref_parse(content, delim, kinds, skip_first)
  except Bad as bad:
    return ("bad", bad.line)
  if not rows:
    return ("empty",)
  rows = [to_row(r) for r in rows]
  if duplicates == "sum" and rows[0][2] is not None:
    _, _, keys, merged = ref_interactions(rows, "sum")
    with np.errstate(over="ignore"):
      if not all(np.isfinite(np.float32(merged[k][0])) for k in keys):
        return ("overflow",)
  return ("ok", rows, duplicates)


# ---------------------------------------------------------------------------------------
# Strategies: tokens that are valid, nearly valid, or garbage.

PAD = st.sampled_from(["", "", "", " ", "  ", "\t"])
GARBAGE = st.text(alphabet="0123456789.eE+- \t:,_naxé\r\x00\x0b", max_size=6)


@st.composite
def int_token(draw, clean):
  if clean:
    # Mostly a small pool, so that (user, item) pairs repeat and duplicates get merged.
    value = draw(st.one_of(st.integers(0, 4), st.integers(0, 4), st.integers(-(10**12), 10**12)))
  else:
    value = draw(st.integers(-(2**64), 2**64))
  text = str(value)
  if value >= 0 and draw(st.integers(0, 9)) == 0:
    text = "+" + text
  elif value >= 0 and draw(st.integers(0, 9)) == 0:
    text = "0" * draw(st.integers(1, 3)) + text
  return draw(PAD) + text + draw(PAD)


@st.composite
def real_token(draw, clean):
  if clean:
    value = draw(
        st.one_of(st.integers(0, 10).map(lambda x: x / 2), st.floats(-1e6, 1e6, allow_nan=False))
    )
  else:
    value = draw(st.floats(allow_nan=True, allow_infinity=True, width=64))
  style = draw(st.sampled_from(["repr", "g", "f", "e"]))
  text = {"repr": repr(value), "g": f"{value:g}", "f": f"{value:.2f}", "e": f"{value:e}"}[style]
  return draw(PAD) + text + draw(PAD)


CLEAN_STR = st.text(alphabet="abcé12 -_", min_size=1, max_size=5).filter(lambda s: s.strip())
MESSY_STR = st.text(alphabet="abcé12 \t-_,;\x01\r", min_size=0, max_size=5)


NASTY = "__e.-+ \t\r\x00\x0b\x1fxé,:;0"


@st.composite
def near_miss(draw, base):
  """A well-formed token with one character inserted or replaced (grammar boundaries)."""
  text = draw(base)
  pos = draw(st.integers(0, len(text)))
  ch = draw(st.sampled_from(NASTY))
  return text[:pos] + ch + text[pos + draw(st.integers(0, 1)) :]


def token(kind, corrupt):
  """corrupt: 0 = always well-formed; else one token in 8 (1), in 2 (2), in 30 (3) is bad."""
  clean = {"int": int_token(True), "real": real_token(True), "str": CLEAN_STR}[kind]
  messy = st.one_of(
      {"int": int_token(False), "real": real_token(False), "str": MESSY_STR}[kind],
      GARBAGE,
      near_miss(clean),
      near_miss(clean),
  )
  if corrupt == 0:
    return clean
  return st.one_of(*([clean] * {1: 7, 2: 1, 3: 29}[corrupt]), messy)


@st.composite
def table(draw, kinds, delim, header=None):
  """File content: rows of tokens, some with a field too many or too few, blank lines,
  LF or CRLF endings, maybe a header and a BOM, maybe no final newline."""
  corrupt = draw(st.sampled_from([0, 0, 1, 2, 3]))
  n = draw(st.integers(0, 16))
  lines, previous = [], []
  if header is not None and draw(st.booleans()):
    lines.append(header)
  for _ in range(n):
    r = draw(st.integers(0, 24))
    if r == 0:
      lines.append(draw(st.sampled_from(["", " ", "\t", "\r"])))
      continue
    fields = [draw(token(k, corrupt)) for k in kinds]
    if delim == "\t" and corrupt == 0:
      fields = [f.replace("\t", " ") for f in fields]  # a tab pad would add a field
    if r == 1 and corrupt:
      fields = fields[:-1]
    elif r == 2 and corrupt:
      fields.append(draw(token(kinds[-1], corrupt)))
    elif r <= 8 and previous:  # repeat an earlier (user, item) pair: duplicates get merged
      fields[:2] = draw(st.sampled_from(previous))
    previous.append(fields[:2])
    lines.append(delim.join(fields))
  newline = draw(st.sampled_from(["\n", "\r\n"]))
  text = newline.join(lines) + (newline if lines and draw(st.booleans()) else "")
  bom = b"\xef\xbb\xbf" if draw(st.integers(0, 9)) == 0 else b""
  return bom + text.encode("utf-8")


@contextlib.contextmanager
def chunk_size(n):
  old = readers.CHUNK_BYTES
  readers.CHUNK_BYTES = n
  try:
    yield
  finally:
    readers.CHUNK_BYTES = old


CHUNKS = st.sampled_from([readers.CHUNK_BYTES, 1, 7, 40])
ML_KINDS = ("int", "int", "real", "int")


def ml_row(r):
  return (r[0], r[1], r[2], r[3])


# ---------------------------------------------------------------------------------------
# The properties.


@pytest.mark.parametrize("name, delim", [("u.data", "\t"), ("ratings.dat", "::")])
@SETTINGS
@hypothesis.given(data=st.data())
def test_fuzz_movielens_headerless(tmp_path, name, delim, data):
  content = data.draw(table(ML_KINDS, delim))
  path = tmp_path / name
  path.write_bytes(content)
  expected = expect(content, delim.encode(), ML_KINDS, False, "last", ml_row)
  with chunk_size(data.draw(CHUNKS)):
    check(path, jd.load_movielens, expected)


@SETTINGS
@hypothesis.given(data=st.data())
def test_fuzz_movielens_csv(tmp_path, data):
  content = data.draw(table(ML_KINDS, ",", header="userId, movieId ,rating,TIMESTAMP"))
  path = tmp_path / "ratings.csv"
  path.write_bytes(content)
  skip = first_fields(content, b",") == ["userid", "movieid", "rating", "timestamp"]
  expected = expect(content, b",", ML_KINDS, skip, "last", ml_row)
  with chunk_size(data.draw(CHUNKS)):
    check(path, jd.load_movielens, expected)


@SETTINGS
@hypothesis.given(data=st.data())
def test_fuzz_lastfm(tmp_path, data):
  kinds = ("int", "int", "real")
  content = data.draw(table(kinds, "\t", header="userID\tartistID\tweight"))
  path = tmp_path / "user_artists.dat"
  path.write_bytes(content)
  skip = first_fields(content, b"\t") == ["userid", "artistid", "weight"]
  expected = expect(content, b"\t", kinds, skip, "sum", lambda r: (r[0], r[1], r[2], None))
  with chunk_size(data.draw(CHUNKS)):
    check(path, jd.load_lastfm, expected)


USER_NAMES = {
    "user",
    "userid",
    "users",
    "uid",
    "u",
    "customer",
    "customerid",
    "visitor",
    "visitorid",
    "session",
    "sessionid",
    "query",
    "queryid",
    "reviewer",
    "reviewerid",
}
ITEM_NAMES = {
    "item",
    "itemid",
    "items",
    "iid",
    "i",
    "movie",
    "movieid",
    "artist",
    "artistid",
    "track",
    "trackid",
    "song",
    "songid",
    "product",
    "productid",
    "book",
    "bookid",
    "isbn",
    "asin",
    "business",
    "businessid",
    "doc",
    "docid",
    "video",
    "videoid",
}


def csv_ids(values):
  """The documented id typing: all ASCII integers fitting int64 -> ints, else strings."""
  if all(ASCII_INT_RE.fullmatch(v) and -I64 <= int(v) < I64 for v in values):
    return [int(v) for v in values]
  return values


@SETTINGS
@hypothesis.given(data=st.data())
def test_fuzz_csv(tmp_path, data):
  ncols = data.draw(st.integers(2, 4))
  kinds = ("str", "str", "real", "int")[:ncols]
  delim = data.draw(st.sampled_from([",", ";", "\t"]))
  header = (
      data.draw(st.sampled_from(["User_ID", "user", "who"]))
      + delim
      + data.draw(st.sampled_from(["Item-Id", "movieId", "what"]))
      + "".join(delim + n for n in ["w", "t"][: ncols - 2])
  )
  content = data.draw(table(kinds, delim, header=header))
  has_header = data.draw(st.sampled_from([None, True, False]))
  path = tmp_path / "data.csv"
  path.write_bytes(content)
  d = delim.encode()
  if has_header is None:
    names = [re.sub(r"[\s_\-.]", "", f) for f in first_fields(content, d)]
    skip = len(names) >= 2 and names[0] in USER_NAMES and names[1] in ITEM_NAMES
  else:
    skip = has_header
  # The field count comes from the first non-blank data row.
  rows_after = [
      (n, line) for n, line, blank in ref_lines(content) if not blank and not (n == 1 and skip)
  ]
  if not rows_after:
    expected = ("empty",)
  else:
    n0, line0 = rows_after[0]
    k = line0.count(d) + 1
    if not 2 <= k <= 4:
      expected = ("bad", n0)
    else:
      kinds = ("str", "str", "real", "int")[:k]
      try:
        rows = ref_parse(content, d, kinds, skip)
        users = csv_ids([r[0] for r in rows])
        items = csv_ids([r[1] for r in rows])
        rows = [
            (u, i, r[2] if k >= 3 else None, r[3] if k >= 4 else None)
            for u, i, r in zip(users, items, rows)
        ]
        expected = expect_rows(rows)
      except Bad as bad:
        expected = ("bad", bad.line)
  with chunk_size(data.draw(CHUNKS)):
    check(path, lambda p: jd.load_csv(p, delimiter=delim, has_header=has_header), expected)


def expect_rows(rows):
  if rows[0][2] is not None:
    _, _, keys, merged = ref_interactions(rows, "sum")
    with np.errstate(over="ignore"):
      if not all(np.isfinite(np.float32(merged[k][0])) for k in keys):
        return ("overflow",)
  return ("ok", rows, "sum")


KIND_MAP = {"int": readers.INT, "real": readers.REAL, "str": readers.STR_ID}


@SETTINGS
@hypothesis.given(data=st.data())
def test_fast_pass_never_disagrees_with_the_reference_pass(data):
  """Where the vectorised pass answers at all, it answers exactly what the line-by-line
  reference pass answers (which the tests above check against the regex parser)."""
  kinds = data.draw(
      st.sampled_from(
          [
              ("int", "int", "real", "int"),
              ("int", "int", "real"),
              ("str", "str"),
              ("str", "int", "real"),
          ]
      )
  )
  delim = data.draw(st.sampled_from(["\t", ",", "::"]))
  chunk = data.draw(table(kinds, delim))
  kinds = tuple(KIND_MAP[k] for k in kinds)
  names = tuple(f"f{n}" for n in range(len(kinds)))
  try:
    fast = readers.parse_lines_fast(chunk, delim.encode(), kinds)
  except readers.Bail:
    return
  slow = readers.parse_lines_slow(chunk, 1, "x", delim.encode(), kinds, names)
  assert len(fast) == len(slow)
  for f, s in zip(fast, slow):
    assert f.tolist() == s


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
@hypothesis.given(data=st.data())
def test_token_grammar_matches_the_regex_reference(data):
  """Token by token, both passes accept exactly the regex grammar, with the same values."""
  kind = data.draw(st.sampled_from(["int", "real", "str"]))
  clean = {"int": int_token(True), "real": real_token(True), "str": CLEAN_STR}[kind]
  wide = {
      "int": st.integers(-(10**12), 10**12).map(str),
      "real": st.floats(-1e6, 1e6, allow_nan=False).map(repr),
      "str": CLEAN_STR,
  }[kind]
  one = st.one_of(
      clean,
      near_miss(clean),
      near_miss(wide),
      near_miss(wide),
      near_miss(near_miss(clean)),
      GARBAGE,
      {"int": int_token(False), "real": real_token(False), "str": MESSY_STR}[kind],
  )
  texts = data.draw(st.lists(one, min_size=1, max_size=3))
  tokens = [t.encode("utf-8") for t in texts]
  lib_kind = KIND_MAP[kind]
  expected = []
  for tok in tokens:
    try:
      expected.append(ref_field(tok, kind))
    except ValueError:
      expected.append(ValueError)
  for tok, want in zip(tokens, expected):  # the reference pass, token by token
    if want is ValueError:
      with pytest.raises(ValueError):
        readers.parse_field(tok, lib_kind, "f")
    else:
      assert readers.parse_field(tok, lib_kind, "f") == want
  if any(b < 32 and b != 9 for tok in tokens for b in tok):
    return  # parse_lines_fast hands chunks with control bytes to the reference pass
  buf = np.frombuffer(b"".join(tokens) or b"\0", np.uint8)
  ends = np.cumsum([len(t) for t in tokens])
  starts = ends - [len(t) for t in tokens]
  try:
    fast = readers.fast_column(buf, starts, ends, lib_kind).tolist()
  except (readers.Bail, ValueError, OverflowError, UnicodeError):
    return  # the caller hands such a chunk to the reference pass
  assert ValueError not in expected, (tokens, fast)
  assert fast == expected
