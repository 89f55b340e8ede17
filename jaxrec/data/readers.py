"""Readers for MovieLens, Last.fm (HetRec 2011), generic delimited files and LightGCN splits.

Every reader returns an `Interactions` or raises; it never returns partial data. A bad row
raises `DataError("FILE:LINE: reason")` (LINE is the 1-based physical line of the file).

Row grammar (shared by all readers; Harper & Konstan 2015 for the MovieLens layouts):
  * Lines end in LF or CRLF. A UTF-8 byte-order mark at the start is skipped. Lines holding
    only spaces, tabs or CR are blank and skipped (they carry no data).
  * Fields are split on the delimiter literally (no quoting); surrounding spaces/tabs of
    each field are ignored (the Last.fm copy has a row ``61\\t65  \\t170``).
  * Integer fields (numeric ids, timestamps): ``[+-]?[0-9]+`` fitting int64.
  * Real fields (rating, weight): a decimal number ``[+-]?(d+[.d*]|.d+)([eE][+-]?d+)?``
    that is finite in float32 (no ``nan``/``inf``; no ``_`` separators).
  * String ids (generic CSV): any non-empty UTF-8 text without control characters.
  * So a stray ``\\r``, a NUL or another control character is an error in any field, and
    any character outside the grammar is an error in a numeric field.
  * The distinct user and item ids must each number at most 2**31 - 1 (dense ids are int32);
    raw ids themselves may be any int64 (or string).

Raw ids are remapped to dense ids 0..n-1 in sorted order of the raw ids (so the mapping
is deterministic), and the raw ids are kept in ``user_raw``/``item_raw``; rows come back
sorted by (user, item). A (user, item) pair that appears more than once is merged into
one row: MovieLens keeps the rating with the latest timestamp (a re-rating replaces the
old one; ties: the later row in the file); Last.fm and generic files sum the weights (play
counts add up) and keep the latest timestamp.

Speed: rows are parsed in chunks of whole lines by a vectorised numpy pass. A chunk that the
fast pass cannot vouch for (any unusual byte, blank line, bad field) is re-parsed line by
line by the reference parser, which either raises the precise "FILE:LINE" error or returns
the rows; so the fast pass only changes speed, never results.
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

from jaxrec.data.interactions import DataError, DataPathError, Interactions

_INT32_MAX = int(np.iinfo(np.int32).max)
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
CHUNK_BYTES = 8 << 20  # bytes per parse chunk (cut at a line end); tests shrink it
_BOM = b"\xef\xbb\xbf"

# Column kinds.
INT_ID, STR_ID, REAL, INT = "int_id", "str_id", "real", "int"
_INT_ALPHABET = frozenset(b"0123456789+- \t")
_REAL_ALPHABET = frozenset(b"0123456789+-.eE \t")
_INT_RE = re.compile(rb"[ \t]*([+-]?)([0-9]+)[ \t]*\Z")
_LUT_INT = np.zeros(256, bool)
_LUT_INT[list(_INT_ALPHABET) + [0]] = True
_LUT_REAL = np.zeros(256, bool)
_LUT_REAL[list(_REAL_ALPHABET) + [0]] = True
_LUT_CTRL = np.zeros(256, bool)  # bytes that make the fast pass hand over to the slow one
_LUT_CTRL[[b for b in range(32) if b not in (9, 10)]] = True


class Bail(Exception):
  """The fast pass cannot vouch for this chunk; the reference parser takes over."""


def _show(token: bytes | str, limit: int = 40) -> str:
  if isinstance(token, bytes):
    token = token.decode("utf-8", "backslashreplace")
  return repr(token if len(token) <= limit else token[:limit] + "...")


# --------------------------------------------------------------------------------------
# Reference (line by line) parser.


def parse_field(token: bytes, kind: str, name: str) -> int | float | str:
  """Parses one field by the grammar in the module docstring; raises ValueError(reason)."""
  if kind == STR_ID:
    try:
      text = token.decode("utf-8")
    except UnicodeDecodeError:
      raise ValueError(f"{name} {_show(token)} is not valid UTF-8") from None
    text = text.strip(" \t")
    if not text:
      raise ValueError(f"{name} is empty")
    if any(ord(ch) < 32 and ch != "\t" for ch in text):
      raise ValueError(f"{name} {_show(text)} contains a control character")
    return text
  if not token.strip(b" \t"):
    raise ValueError(f"{name} is empty")
  if kind in (INT_ID, INT):
    m = _INT_RE.match(token)
    if m is None:
      raise ValueError(f"{name} {_show(token)} is not an integer")
    value = int(m.group(2)) if len(m.group(2)) <= 25 else _INT64_MAX + 1
    value = -value if m.group(1) == b"-" else value
    if not _INT64_MIN <= value <= _INT64_MAX:
      raise ValueError(f"{name} {_show(token)} does not fit int64")
    return value
  # REAL: Python's float() restricted to the decimal alphabet (no nan/inf/underscores).
  if not set(token) <= _REAL_ALPHABET:
    raise ValueError(f"{name} {_show(token)} is not a number")
  try:
    value = float(token)
  except ValueError:
    raise ValueError(f"{name} {_show(token)} is not a number") from None
  with np.errstate(over="ignore"):
    if not np.isfinite(np.float32(value)):
      raise ValueError(f"{name} {_show(token)} is not finite in float32")
  return value


def parse_lines_slow(
    chunk: bytes,
    first_line: int,
    fname: str,
    delimiter: bytes,
    kinds: tuple[str, ...],
    names: tuple[str, ...],
) -> list[list]:
  """Reference parser: one Python pass over the lines of ``chunk``."""
  cols = [[] for _ in kinds]
  lines = chunk.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()  # the chunk ends with a line terminator
  for offset, line in enumerate(lines):
    if line.endswith(b"\r"):
      line = line[:-1]
    if not line.strip(b" \t\r"):
      continue
    fields = line.split(delimiter)
    if len(fields) != len(kinds):
      raise DataError(
          f"{fname}:{first_line + offset}: found {len(fields)} field(s), expected "
          f"{len(kinds)} ({', '.join(names)}) separated by {delimiter.decode()!r}"
      )
    for col, token, kind, name in zip(cols, fields, kinds, names):
      try:
        col.append(parse_field(token, kind, name))
      except ValueError as err:
        raise DataError(f"{fname}:{first_line + offset}: {err}") from None
  return cols


# --------------------------------------------------------------------------------------
# Fast (vectorised) parser.


def fast_column(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, kind: str):
  """Parses the tokens buf[starts[t]:ends[t]] of one column; raises Bail if unsure."""
  lengths = ends - starts
  width = int(lengths.max())
  if width == 0 or (kind != STR_ID and width > 40) or width * lengths.size > (1 << 26):
    raise Bail  # an empty token, or too wide for the padded matrix: let the slow pass see
  pos = np.arange(width, dtype=np.int32)  # chunks are small: int32 offsets suffice
  # [n, width] bytes, NUL-padded on the right: the layout of a numpy "S{width}" array.
  index = starts.astype(np.int32)[:, None] + pos
  np.minimum(index, buf.size - 1, out=index)
  matrix = buf[index]
  matrix[pos >= lengths[:, None]] = 0
  arr = matrix.view(f"S{width}")[:, 0]
  if kind == STR_ID:
    text = np.strings.strip(np.strings.decode(arr, "utf-8"), " \t")
    if np.any(np.strings.str_len(text) == 0):
      raise Bail
    return text
  lut = _LUT_REAL if kind == REAL else _LUT_INT
  if not lut[matrix].all():
    raise Bail
  if kind == REAL:
    with np.errstate(over="ignore"):
      values = arr.astype(np.float64)
      if not np.isfinite(values.astype(np.float32)).all():
        raise Bail
    return values
  if width >= 19:  # might not fit int64; the reference parser checks
    raise Bail
  return arr.astype(np.int64)


def parse_lines_fast(chunk: bytes, delimiter: bytes, kinds: tuple[str, ...]) -> list:
  """Vectorised parse of a chunk of whole lines; raises Bail on anything unusual."""
  if b"\r" in chunk:
    chunk = chunk.replace(b"\r\n", b"\n")
  if chunk.endswith(b"\n"):
    chunk = chunk[:-1]
  if not chunk or _LUT_CTRL[np.frombuffer(chunk, np.uint8)].any():
    raise Bail  # empty, a stray CR or another control byte
  if len(delimiter) > 1:
    if delimiter + delimiter[-1:] in chunk:
      raise Bail  # e.g. ":::" splits ambiguously
    chunk = chunk.replace(delimiter, b"\x1f")  # \x1f cannot occur: control bytes bailed
    delimiter = b"\x1f"
  if b"\n\n" in chunk or chunk.startswith(b"\n"):
    raise Bail  # blank line
  buf = np.frombuffer(chunk, np.uint8)
  is_sep = (buf == 10) | (buf == delimiter[0])
  sep_pos = np.flatnonzero(is_sep)
  k = len(kinds)
  newline_pos = np.flatnonzero(buf == 10)
  # Every line must hold exactly k - 1 delimiters: then the separators, in order, are
  # (k - 1 delimiters, a newline) repeated, and token t of line l is column t % k.
  if sep_pos.size != (newline_pos.size + 1) * k - 1:
    raise Bail
  if not np.array_equal(sep_pos[k - 1 :: k], newline_pos):
    raise Bail
  starts = np.concatenate([[0], sep_pos + 1])
  ends = np.append(sep_pos, buf.size)
  try:
    return [fast_column(buf, starts[c::k], ends[c::k], kind) for c, kind in enumerate(kinds)]
  except (ValueError, OverflowError, UnicodeError):
    raise Bail from None


# --------------------------------------------------------------------------------------
# File-level driver.


def _read_bytes(path: pathlib.Path) -> bytes:
  if not path.exists():
    raise DataPathError(f"{path}: no such file")
  if path.is_dir():
    raise DataError(f"{path}: is a directory, expected a file")
  try:
    data = path.read_bytes()
  except OSError as err:
    raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
  return data[len(_BOM) :] if data.startswith(_BOM) else data


def _first_line(data: bytes) -> tuple[bytes, int]:
  """(first line without its terminator, offset where the second line starts)."""
  end = data.find(b"\n")
  end = len(data) if end < 0 else end
  line = data[:end]
  return (line[:-1] if line.endswith(b"\r") else line), min(end + 1, len(data))


def _header_fields(line: bytes, delimiter: bytes) -> list[str]:
  return [f.strip(b" \t").decode("utf-8", "replace").lower() for f in line.split(delimiter)]


def _parse_table(
    path: pathlib.Path,
    data: bytes,
    start: int,
    first_line: int,
    delimiter: bytes,
    kinds: tuple[str, ...],
    names: tuple[str, ...],
) -> list:
  """Parses data[start:] (which begins at line ``first_line``) into one array per column."""
  fname = str(path)
  chunks = [[] for _ in kinds]
  line_no = first_line
  pos = start
  while pos < len(data):
    end = data.find(b"\n", min(pos + CHUNK_BYTES, len(data)) - 1)
    end = len(data) if end < 0 else end + 1
    chunk = data[pos:end]
    try:
      cols = parse_lines_fast(chunk, delimiter, kinds)
    except Bail:
      cols = parse_lines_slow(chunk, line_no, fname, delimiter, kinds, names)
      cols = [np.array(c, dtype=_dtype(kind)) for c, kind in zip(cols, kinds)]
    for acc, col in zip(chunks, cols):
      acc.append(col)
    line_no += chunk.count(b"\n")
    pos = end
  out = [
      np.concatenate(acc) if acc else np.zeros(0, _dtype(kind)) for acc, kind in zip(chunks, kinds)
  ]
  if out[0].size == 0:
    raise DataError(f"{fname}: no interactions (the file has no data rows)")
  return out


def _dtype(kind: str):
  return {INT_ID: np.int64, INT: np.int64, REAL: np.float64, STR_ID: np.str_}[kind]


def _remap(raw: np.ndarray, what: str, fname: str) -> tuple[np.ndarray, np.ndarray]:
  """Raw ids -> (dense ids in sorted raw order, sorted unique raw ids)."""
  uniq, dense = np.unique(raw, return_inverse=True)
  if uniq.size > _INT32_MAX:
    raise DataError(f"{fname}: {uniq.size} distinct {what} ids do not fit int32")
  return dense.astype(np.int32).reshape(-1), uniq


def _build(
    fname: str, users_raw, items_raw, weights, timestamps, *, duplicates: str
) -> Interactions:
  """Dense remap, duplicate merge, sort by (user, item)."""
  users, user_raw = _remap(users_raw, "user", fname)
  items, item_raw = _remap(items_raw, "item", fname)
  key = users.astype(np.int64) * max(item_raw.size, 1) + items
  order = np.argsort(key, kind="stable")  # ties keep file order
  starts = np.flatnonzero(np.diff(key[order], prepend=-1))
  if starts.size < key.size and timestamps is not None:
    # Duplicates: within a key, order by timestamp, then file order (lexsort is stable).
    order = np.lexsort((timestamps, key))
  key = key[order]
  if starts.size < key.size:  # duplicated (user, item) pairs
    if duplicates == "last":
      lasts = np.append(starts[1:], key.size) - 1
      rows = order[lasts]
      weights = None if weights is None else weights[rows]
      timestamps = None if timestamps is None else timestamps[rows]
    else:  # "sum"
      rows = order[starts]
      weights = None if weights is None else np.add.reduceat(weights[order], starts)
      timestamps = None if timestamps is None else np.maximum.reduceat(timestamps[order], starts)
  else:
    rows = order
    weights = None if weights is None else weights[rows]
    timestamps = None if timestamps is None else timestamps[rows]
  if weights is not None:
    with np.errstate(over="ignore"):
      w32 = weights.astype(np.float32)
    if not np.isfinite(w32).all():
      raise DataError(
          f"{fname}: summed weights of a duplicated (user, item) pair overflow " "float32"
      )
    weights = w32
  return Interactions(
      users[rows],
      items[rows],
      int(user_raw.size),
      int(item_raw.size),
      weights=weights,
      timestamps=timestamps,
      user_raw=user_raw,
      item_raw=item_raw,
  )


# --------------------------------------------------------------------------------------
# Public readers.

_ML_NAMES = ("user id", "item id", "rating", "timestamp")
_ML_KINDS = (INT_ID, INT_ID, REAL, INT)
_ML_CSV_HEADER = ["userid", "movieid", "rating", "timestamp"]
_ML_FILES = (("u.data", b"\t"), ("ratings.dat", b"::"), ("ratings.csv", b","))


def _movielens_file(path: pathlib.Path) -> tuple[pathlib.Path, bytes]:
  if not path.exists():
    raise DataPathError(f"{path}: no such file or directory")
  if path.is_dir():
    for name, delimiter in _ML_FILES:
      if (path / name).is_file():
        return path / name, delimiter
    raise DataPathError(
        f"{path}: no MovieLens ratings file found (looked for "
        f"{', '.join(n for n, _ in _ML_FILES)})"
    )
  for name, delimiter in _ML_FILES:
    if path.name == name or path.suffix == pathlib.Path(name).suffix:
      return path, delimiter
  with open(path, "rb") as f:
    head = f.read(4096)
  for delimiter in (b"::", b"\t", b","):
    if delimiter in head:
      return path, delimiter
  raise DataError(
      f"{path}: cannot tell the MovieLens format (expected u.data with tabs, "
      "ratings.dat with '::' or ratings.csv with ',')"
  )


def load_movielens(path, *, min_rating: float | None = None) -> Interactions:
  """Loads MovieLens ratings (Harper & Konstan 2015, https://grouplens.org/datasets/movielens/).

  ``path`` is a folder holding ``u.data`` (100K: ``user\\titem\\trating\\ttimestamp``),
  ``ratings.dat`` (1M/10M: ``user::item::rating::timestamp``) or ``ratings.csv``
  (20M/25M/latest: header ``userId,movieId,rating,timestamp``; the header is recognised
  and skipped, a file without it is read too), or one such file. Other file names are
  recognised by suffix (.data/.dat/.csv), else by the delimiter in the first bytes.

  Returns an `Interactions` with ``weights`` = rating and ``timestamps``. With
  ``min_rating`` only rows with rating >= min_rating are kept (as positives), and ids are
  remapped over the kept rows only. A re-rated (user, movie) pair keeps its latest rating.
  """
  if min_rating is not None:
    if (
        isinstance(min_rating, bool)
        or not isinstance(min_rating, (int, float, np.number))
        or not np.isfinite(min_rating)
    ):
      raise ValueError(f"min_rating must be a finite number or None, got {min_rating!r}")
  file, delimiter = _movielens_file(pathlib.Path(os.fspath(path)))
  data = _read_bytes(file)
  start, first_line = 0, 1
  if delimiter == b",":
    line, after = _first_line(data)
    if _header_fields(line, delimiter) == _ML_CSV_HEADER:
      start, first_line = after, 2
  users, items, ratings, ts = _parse_table(
      file, data, start, first_line, delimiter, _ML_KINDS, _ML_NAMES
  )
  if min_rating is not None:
    keep = ratings >= min_rating
    if not keep.any():
      raise DataError(
          f"{file}: no interactions with rating >= {min_rating} "
          f"(ratings range from {ratings.min()} to {ratings.max()})"
      )
    users, items, ratings, ts = users[keep], items[keep], ratings[keep], ts[keep]
  return _build(str(file), users, items, ratings, ts, duplicates="last")


_LASTFM_HEADER = ["userid", "artistid", "weight"]


def load_lastfm(path) -> Interactions:
  """Loads Last.fm HetRec 2011 ``user_artists.dat`` (Cantador et al., RecSys 2011).

  ``path`` is the file or its folder. Rows are ``user\\tartist\\tplaycount``; the header
  ``userID\\tartistID\\tweight`` is optional, CRLF line ends and spaces around fields are
  accepted. Returns ``weights`` = play count (float32), no timestamps; duplicated
  (user, artist) pairs have their play counts summed.
  """
  file = pathlib.Path(os.fspath(path))
  if file.is_dir():
    if not (file / "user_artists.dat").is_file():
      raise DataPathError(f"{file}: no user_artists.dat in this folder")
    file = file / "user_artists.dat"
  data = _read_bytes(file)
  line, after = _first_line(data)
  start, first_line = (after, 2) if _header_fields(line, b"\t") == _LASTFM_HEADER else (0, 1)
  users, items, weights = _parse_table(
      file,
      data,
      start,
      first_line,
      b"\t",
      (INT_ID, INT_ID, REAL),
      ("user id", "artist id", "weight"),
  )
  return _build(str(file), users, items, weights, None, duplicates="sum")


_CSV_USER_NAMES = frozenset(
    {
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
)
_CSV_ITEM_NAMES = frozenset(
    {
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
)
_CSV_NAMES = ("user id", "item id", "weight", "timestamp")
_CSV_KINDS = (STR_ID, STR_ID, REAL, INT)


def _normalise_name(field: str) -> str:
  return re.sub(r"[\s_\-.]", "", field)


def _int_ids_or_none(ids: np.ndarray) -> np.ndarray | None:
  """The ids as int64 if every one is an ASCII integer ``[+-]?[0-9]+`` fitting int64."""
  try:
    as_bytes = ids.astype(bytes)  # fails on non-ASCII text
  except UnicodeError:
    return None
  width = as_bytes.dtype.itemsize
  v = as_bytes.view(np.uint8).reshape(ids.size, width)
  digit = (v >= 48) & (v <= 57)
  ok = digit | (v == 0)  # 0 = padding after the text (ids have no control characters)
  ok[:, 0] |= (v[:, 0] == 43) | (v[:, 0] == 45)
  if not (ok.all() and digit.any(axis=1).all()):
    return None
  if width < 19:
    return as_bytes.astype(np.int64)
  values = [int(x) for x in ids.tolist()]
  if any(not _INT64_MIN <= x <= _INT64_MAX for x in values):
    return None
  return np.array(values, np.int64)


def load_csv(path, *, delimiter: str = ",", has_header: bool | None = None) -> Interactions:
  """Loads a generic delimited file of ``user, item[, weight[, timestamp]]`` rows.

  The number of fields (2, 3 or 4) is set by the first data row; every row must match.
  Ids are strings; an id column whose ids are all ASCII integers fitting int64 is read as
  integers (so raw ids sort numerically), otherwise raw ids stay strings (sorted by code
  point). Weights are reals (float32), timestamps integers (int64). Duplicated pairs are
  merged: weights summed, latest timestamp kept.

  Header: ``has_header=True``/``False`` says whether line 1 is a header. With ``None`` line 1
  is taken as a header only when its first two fields name a user and an item column
  (case, spaces, ``_``, ``-`` and ``.`` ignored), e.g. ``user_id,item_id`` or
  ``userId,movieId`` (see ``_CSV_USER_NAMES``/``_CSV_ITEM_NAMES``); any other header must be
  declared with ``has_header=True``: ids can be arbitrary strings, so an unknown header
  cannot be told from data (a bad weight/timestamp on line 1 gets a hint saying so).
  """
  if (
      not isinstance(delimiter, str)
      or not delimiter
      or delimiter in "\r\n"
      or len(delimiter.encode()) != 1
      or delimiter in " "
  ):
    raise ValueError(
        f"load_csv: delimiter must be one ASCII character other than space, CR "
        f"or LF, got {delimiter!r}"
    )
  if has_header not in (None, True, False):
    raise ValueError(f"load_csv: has_header must be True, False or None, got {has_header!r}")
  file = pathlib.Path(os.fspath(path))
  data = _read_bytes(file)
  delim = delimiter.encode()
  line, after = _first_line(data)
  if has_header is None:
    fields = [_normalise_name(f) for f in _header_fields(line, delim)]
    has_header = len(fields) >= 2 and fields[0] in _CSV_USER_NAMES and fields[1] in _CSV_ITEM_NAMES
  start, first_line = (after, 2) if has_header else (0, 1)
  # The number of fields comes from the first non-blank data row.
  num_fields, line_no, pos = None, first_line, start
  while pos < len(data):
    end = data.find(b"\n", pos)
    end = len(data) if end < 0 else end
    row = data[pos:end].rstrip(b"\r")
    if row.strip(b" \t\r"):
      num_fields = row.count(delim) + 1
      break
    line_no, pos = line_no + 1, end + 1
  if num_fields is None:
    raise DataError(f"{file}: no interactions (the file has no data rows)")
  if not 2 <= num_fields <= 4:
    raise DataError(
        f"{file}:{line_no}: found {num_fields} field(s), expected 2 to 4 "
        f"(user, item[, weight[, timestamp]]) separated by {delimiter!r}"
    )
  kinds, names = _CSV_KINDS[:num_fields], _CSV_NAMES[:num_fields]
  try:
    cols = _parse_table(file, data, start, first_line, delim, kinds, names)
  except DataError as err:
    if not has_header and f"{file}:1:" in str(err) and num_fields > 2:
      fields = line.split(delim)
      if all(_bad_number(f) for f in fields[2:]):
        raise DataError(f"{err} (line 1 looks like a header: pass has_header=True)") from None
    raise
  users, items = cols[0], cols[1]
  users = _as_int(users)
  items = _as_int(items)
  weights = cols[2] if num_fields >= 3 else None
  timestamps = cols[3] if num_fields >= 4 else None
  return _build(str(file), users, items, weights, timestamps, duplicates="sum")


def _as_int(ids: np.ndarray) -> np.ndarray:
  as_int = _int_ids_or_none(ids)
  return ids if as_int is None else as_int


def _bad_number(token: bytes) -> bool:
  try:
    parse_field(token, REAL, "")
    return False
  except ValueError:
    return True


# --------------------------------------------------------------------------------------
# LightGCN / BARS fixed splits: one line per user, `user item item ...`.

_LIGHTGCN_FILES = ("train.txt", "test.txt")
_LIGHTGCN_SEP = re.compile(rb"[ \t]+")
_SIGNED_INT = re.compile(rb"[+-]?[0-9]+\Z")
_NOT_DIGIT_OR_BLANK = b"0123456789 \t"


def _lightgcn_ids(line: bytes, fname: str, line_no: int) -> list[int]:
  """The ids of one line, user first; raises DataError("FILE:LINE: reason")."""
  if not line.translate(None, _NOT_DIGIT_OR_BLANK):  # only digits and blanks: the fast case
    tokens = line.split()
  else:
    tokens = _LIGHTGCN_SEP.split(line.strip(b" \t"))
  ids = []
  for pos, token in enumerate(tokens):
    what = "user id" if pos == 0 else f"item id #{pos}"
    if _SIGNED_INT.match(token) is None:
      reason = (
          "contains a control character"
          if any(b < 32 and b != 9 for b in token)
          else "is not an integer"
      )
      raise DataError(f"{fname}:{line_no}: {what} {_show(token)} {reason}")
    value = int(token)
    if value < 0:
      raise DataError(f"{fname}:{line_no}: {what} {value} is negative (ids are 0-based)")
    if value >= _INT32_MAX:
      raise DataError(
          f"{fname}:{line_no}: {what} {value} is too large (ids must be below " f"{_INT32_MAX})"
      )
    ids.append(value)
  return ids


def _read_lightgcn_file(path: pathlib.Path):
  """(users that have a line [L], pair users [E], pair items [E]) of one file, int64."""
  fname = str(path)
  data = _read_bytes(path)
  first_line = {}
  line_users, pair_users, pair_items = [], [], []
  for line_no, line in enumerate(data.split(b"\n"), start=1):
    if line.endswith(b"\r"):
      line = line[:-1]
    if not line.strip(b" \t"):
      continue  # blank (also the empty piece after the final newline)
    ids = _lightgcn_ids(line, fname, line_no)
    user = ids[0]
    if user in first_line:
      raise DataError(
          f"{fname}:{line_no}: user {user} is listed twice in this file (first "
          f"on line {first_line[user]})"
      )
    first_line[user] = line_no
    line_users.append(user)
    pair_users.extend([user] * (len(ids) - 1))
    pair_items.extend(ids[1:])
  if not line_users:
    raise DataError(f"{fname}: no users (the file has no data lines)")
  if not pair_items:
    raise DataError(f"{fname}: no interactions (every user line is empty)")
  as_array = lambda xs: np.array(xs, np.int64)
  return as_array(line_users), as_array(pair_users), as_array(pair_items)


def load_lightgcn(path) -> tuple[Interactions, Interactions]:
  """Loads a fixed train/test split in the LightGCN / BARS format (He et al., SIGIR 2020).

  ``path`` is a folder holding ``train.txt`` and ``test.txt``, or either file (the other is
  looked up beside it). Each line is ``user item item ...``: 0-based dense ids separated
  by spaces or tabs; a user line may list no items; lines end in LF or CRLF; blank lines
  are skipped. A token that is not a non-negative integer below 2**31 - 1, or a user listed
  twice in one file, raises DataError("FILE:LINE: reason"). An item repeated on one line
  counts once. ``user_list.txt``/``item_list.txt`` (raw ids) are not read.

  Returns ``(train, test)`` in one id space, ids kept as given: ``num_users`` /
  ``num_items`` = 1 + the largest user / item id in either file (so ids that never occur
  are users/items without rows). Rows are sorted by (user, item); no weights, timestamps
  or raw ids. A pair in both files is kept in both (`metrics.evaluate` drops such test
  pairs). For a validation part carved out of train.txt only, see
  `jaxrec.data.splits.carve_valid`.
  """
  given = pathlib.Path(os.fspath(path))
  if not given.exists():
    raise DataPathError(f"{given}: no such file or directory")
  folder = given if given.is_dir() else given.parent
  files = [folder / name for name in _LIGHTGCN_FILES]
  for file in files:
    if not file.is_file():
      raise DataPathError(
          f"{folder}: no {file.name} in this folder (a LightGCN split needs "
          f"{' and '.join(_LIGHTGCN_FILES)})"
      )
  parts = [_read_lightgcn_file(file) for file in files]
  num_users = 1 + max(int(max(line_users.max(), users.max())) for line_users, users, _ in parts)
  num_items = 1 + max(int(items.max()) for _, _, items in parts)
  out = []
  for _, users, items in parts:
    keys = np.unique(users * num_items + items)  # sorted by (user, item), repeats merged
    out.append(Interactions(keys // num_items, keys % num_items, num_users, num_items))
  return out[0], out[1]
