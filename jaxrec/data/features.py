"""Side features of users and items: a features file with declared column types, encoded per dense id.

A features file is a delimited text file with a header (`,`; a tab when the header holds
one; double-quoted fields as in RFC 4180, so MovieLens `movies.csv` titles with commas
read as one field), keyed by the raw user or item id. Its columns are declared by a
types string, e.g. ``"userId:id,age:categorical,country:categorical,income:numeric"``;
undeclared columns are ignored; the id column is the one declared ``id`` (else the
first column). Kinds:

  categorical  one value per id (the stripped text)
  multi        a bag of values: ``|``-separated in a field, and accumulated over the
               rows of an id (long files such as Last.fm's tag assignments list an id
               once per value); at most `MAX_VALUES` kept per id, most frequent first
               (ties: first seen)
  year         the last 4-digit number of the field (``Toy Story (1995)`` -> 1995),
               bucketed by `YEAR_BUCKET` years (1995 -> "1990"); a categorical
  numeric      a real number, standardised over the file ((x - mean) / std)

Encoding (the defined embedding of what is missing or unknown): each categorical, multi
or year column has a vocabulary of its distinct values in sorted order (of a bag: the
values kept after the cut to `MAX_VALUES`), ids 1..V; id 0 is
the reserved "unknown" row, taken by an empty field, a value outside the vocabulary
(`FeatureFile.encode`), and every id without a row in the file. A multi-valued bag
pools its values' rows (masked mean); an empty bag is the unknown row. A numeric column
gives two inputs: the standardised value (0 when missing) and a missing indicator (1
when missing).

The file's raw ids are matched to the dense ids through the data's own raw -> dense map
(`Interactions.user_raw` / `item_raw`, from `readers._remap`; a data set without raw
ids, such as the synthetic world, uses the dense id as the raw id): dense id d gets the
row of raw id raw[d]. Rows of ids that the data does not hold are read (they shape the
vocabulary) and otherwise ignored. Bad input raises `DataError("FILE:LINE: reason")`.

Presets (`PRESETS`): MovieLens ``movies.csv`` (genres, title year) and Last.fm HetRec
``user_taggedartists[-timestamps].dat`` (the artist's tags); an empty types string
means the preset of the file's name.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import os
import pathlib
import re

import numpy as np

from jaxrec.data.interactions import DataError, DataPathError

ID, CATEGORICAL, MULTI, YEAR, NUMERIC = "id", "categorical", "multi", "year", "numeric"
KINDS = (ID, CATEGORICAL, MULTI, YEAR, NUMERIC)
MAX_VALUES = 16  # multi-valued: values kept per id (most frequent first)
MULTI_SEP = "|"
YEAR_BUCKET = 10  # years per bucket of a `year` column
_YEAR_RE = re.compile(r"(?<![0-9])([0-9]{4})(?![0-9])")

# File name -> the types string used when none is given.
PRESETS = {
    "movies.csv": "movieId:id,genres:multi,title:year",  # MovieLens (Harper & Konstan 2015)
    "user_taggedartists.dat": "artistID:id,tagID:multi",  # HetRec 2011 Last.fm
    "user_taggedartists-timestamps.dat": "artistID:id,tagID:multi",
}


@dataclasses.dataclass(frozen=True)
class FeatureDecl:
  """One embedded feature as the towers see it: `size` rows (row 0: unknown) and `slots`
  id columns (1, or the bag length of a multi-valued one); numeric: size = slots = 0."""

  name: str
  kind: str
  size: int = 0
  slots: int = 0


def parse_types(types: str, *, where: str = "feature types") -> tuple[tuple[str, str], ...]:
  """ "col:kind,col:kind" -> ((col, kind), ...); raises ValueError naming `where`."""
  out, seen = [], set()
  for part in (p.strip() for p in types.split(",")):
    if not part:
      continue
    name, sep, kind = part.rpartition(":")
    name, kind = name.strip(), kind.strip()
    if not sep or not name or kind not in KINDS:
      raise ValueError(f"{where}: {part!r} must be COLUMN:KIND with KIND one of {', '.join(KINDS)}")
    if name in seen:
      raise ValueError(f"{where}: column {name!r} is declared twice")
    seen.add(name)
    out.append((name, kind))
  if sum(kind == ID for _, kind in out) > 1:
    raise ValueError(f"{where}: at most one column may be the id")
  if not any(kind != ID for _, kind in out):
    raise ValueError(f"{where}: {types!r} declares no feature column")
  return tuple(out)


def resolve_types(path, types: str) -> str:
  """The declared types, or the preset of the file's name when `types` is empty."""
  if types:
    return types
  name = pathlib.Path(os.fspath(path)).name
  if name not in PRESETS:
    raise ValueError(
        f"no feature types given for {path} and no preset for the file name {name!r} "
        f"(presets: {', '.join(PRESETS)})"
    )
  return PRESETS[name]


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureFile:
  """A parsed features file: its sorted unique raw ids (str), and per feature column
  (in declared order) the encoded rows aligned with them, plus the vocabularies."""

  path: str
  ids: np.ndarray  # [R] str, sorted, unique
  decls: tuple[FeatureDecl, ...]  # categorical / multi / year first, then numeric
  vocab: dict  # name -> [V] str (index v - 1 holds id v)
  cat_RxS: np.ndarray  # int32, the id columns of the embedded features, side by side
  num_RxG: np.ndarray  # float32 [R, 2G]: standardised values, then missing indicators

  def encode(self, name: str, values) -> np.ndarray:
    """Vocabulary ids of raw values of column `name` (0: unknown)."""
    vocab = self.vocab[name]
    values = np.asarray(values, dtype=str)
    pos = np.clip(np.searchsorted(vocab, values), 0, max(vocab.size - 1, 0))
    found = vocab.size > 0 and (vocab[pos] == values)
    return np.where(found, pos + 1, 0).astype(np.int32)

  def rows_for(self, raw_ids, num: int):
    """(cat_NxS, num_NxG) for dense ids 0..num-1 whose raw ids are `raw_ids` ([num], or
    None: raw id = dense id). An id without a row: unknown everywhere (cat 0, numeric 0
    with its missing indicator 1)."""
    if raw_ids is None:
      raw_ids = np.arange(num)
    raw_ids = np.asarray(raw_ids)
    if raw_ids.shape != (num,):
      raise ValueError(f"rows_for: raw ids must be [{num}], got {raw_ids.shape}")
    rows = np.arange(self.ids.size)
    if np.issubdtype(raw_ids.dtype, np.integer):  # integer raw ids match integer file ids
      is_int = np.array([re.fullmatch(r"[+-]?[0-9]{1,18}", s) is not None for s in self.ids])
      rows = rows[is_int]
      keys = np.array([int(s) for s in self.ids[is_int]], np.int64)
      wanted = raw_ids.astype(np.int64)
    else:
      keys, wanted = self.ids, raw_ids.astype(str)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if sorted_keys.size == 0:
      hit, pos = np.zeros(num, bool), np.zeros(num, np.int64)
    else:
      pos = np.clip(np.searchsorted(sorted_keys, wanted), 0, sorted_keys.size - 1)
      hit = sorted_keys[pos] == wanted
    row = np.where(hit, rows[order[pos]], 0)
    cat = np.where(hit[:, None], self.cat_RxS[row], 0).astype(np.int32)
    g = self.num_RxG.shape[1] // 2
    missing = np.concatenate([np.zeros((num, g)), np.ones((num, g))], axis=1)
    numeric = np.where(hit[:, None], self.num_RxG[row], missing).astype(np.float32)
    return cat, numeric


def _read_text(path: pathlib.Path) -> str:
  if not path.exists():
    raise DataPathError(f"{path}: no such file")
  if path.is_dir():
    raise DataError(f"{path}: is a directory, expected a features file")
  data = path.read_bytes()
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as err:
    line = data[: err.start].count(b"\n") + 1
    raise DataError(f"{path}:{line}: not valid UTF-8") from None


def _parse_real(text: str, where: str, name: str) -> float:
  """A decimal number finite in float32 (the readers' real grammar: no nan/inf)."""
  if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
    raise DataError(f"{where}: {name} {text[:40]!r} is not a number")
  with np.errstate(over="ignore"):
    finite = np.isfinite(np.float32(float(text)))
  if not finite:
    raise DataError(f"{where}: {name} {text[:40]!r} is not finite in float32")
  return float(text)


def read_features(path, types: str = "") -> FeatureFile:
  """Reads and encodes a features file (see the module docstring); cached per file
  version and types, so a run's config check and its data load parse it once."""
  path = pathlib.Path(os.fspath(path))
  if not path.exists():
    raise DataPathError(f"{path}: no such file")
  st = path.stat()
  return _read_cached(str(path), resolve_types(path, types), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _read_cached(fname: str, types: str, mtime_ns: int, size: int) -> FeatureFile:
  del mtime_ns, size  # cache keys only
  path = pathlib.Path(fname)
  declared = parse_types(types, where=f"{fname}: feature types")
  text = _read_text(path)
  first = text.split("\n", 1)[0]
  delimiter = "\t" if "\t" in first else ","
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
  try:
    header = next(reader)
  except StopIteration:
    raise DataError(f"{fname}: empty file (expected a header line)") from None
  except csv.Error as err:
    raise DataError(f"{fname}:1: {err}") from None
  header = [h.strip() for h in header]
  line = reader.line_num
  col_of = {h: i for i, h in enumerate(header)}
  for name, _ in declared:
    if name not in col_of:
      raise DataError(f"{fname}:1: no column {name!r} in the header (columns: {', '.join(header)})")
  id_name = next((n for n, k in declared if k == ID), header[0])
  feats = [(n, k) for n, k in declared if k != ID and n != id_name]
  id_col = col_of[id_name]
  long_ok = all(k == MULTI for _, k in feats)  # an id may repeat only when every column is a bag
  row_of, first_line, ids = {}, [], []
  cells = {n: [] for n, _ in feats}  # per id: str / float / None, or a {value: count} bag
  while True:
    try:
      fields = next(reader)
    except StopIteration:
      break
    except csv.Error as err:
      raise DataError(f"{fname}:{reader.line_num}: {err}") from None
    start = line + 1
    line = reader.line_num
    if not fields or all(not f.strip() for f in fields):
      continue  # blank line
    where = f"{fname}:{start}"
    if len(fields) != len(header):
      raise DataError(
          f"{where}: found {len(fields)} field(s), expected {len(header)} "
          f"({', '.join(header)}) separated by {delimiter!r}"
      )
    key = fields[id_col].strip()
    if not key:
      raise DataError(f"{where}: {id_name} is empty")
    if key in row_of:
      if not long_ok:
        raise DataError(
            f"{where}: {id_name} {key!r} repeated (first on line {first_line[row_of[key]]}); "
            "only a file whose every feature is multi may list an id on several rows"
        )
      r = row_of[key]
    else:
      r = row_of[key] = len(ids)
      ids.append(key)
      first_line.append(start)
      for n, k in feats:
        cells[n].append({} if k == MULTI else None)
    for n, k in feats:
      value = fields[col_of[n]].strip()
      if k == MULTI:
        bag = cells[n][r]
        for v in (v.strip() for v in value.split(MULTI_SEP)):
          if v:
            bag[v] = bag.get(v, 0) + 1  # dicts keep first-seen order for ties
      elif not value:
        continue  # missing
      elif k == NUMERIC:
        cells[n][r] = _parse_real(value, where, n)
      elif k == YEAR:
        years = _YEAR_RE.findall(value)
        cells[n][r] = str(int(years[-1]) // YEAR_BUCKET * YEAR_BUCKET) if years else None
      else:
        cells[n][r] = value
  if not ids:
    raise DataError(f"{fname}: no data rows (only a header)")
  order = np.argsort(np.array(ids, dtype=str), kind="stable")
  decls, vocab, cat_cols, num_cols, miss_cols = [], {}, [], [], []
  for n, k in feats:
    col = [cells[n][i] for i in order]
    if k == NUMERIC:
      present = np.array([v is not None for v in col])
      x = np.array([0.0 if v is None else v for v in col], np.float64)
      mean = x[present].mean() if present.any() else 0.0
      std = x[present].std() if present.sum() > 1 else 0.0
      z = np.where(present, (x - mean) / (std if std > 0 else 1.0), 0.0)
      num_cols.append(z)
      miss_cols.append((~present).astype(np.float64))
      continue
    if k == MULTI:
      bags = [sorted(b, key=lambda v, b=b: -b[v])[:MAX_VALUES] for b in col]
      values = sorted({v for b in bags for v in b})
    else:
      values = sorted({v for v in col if v is not None})
    voc = np.array(values, dtype=str)
    index = {v: i + 1 for i, v in enumerate(values)}
    if k == MULTI:
      slots = max(1, max(len(b) for b in bags))
      ids_rl = np.zeros((len(col), slots), np.int32)
      for r, b in enumerate(bags):
        ids_rl[r, : len(b)] = [index[v] for v in b]
    else:
      slots = 1
      ids_rl = np.array([[index.get(v, 0) if v is not None else 0] for v in col], np.int32)
    decls.append(FeatureDecl(n, k, size=len(values) + 1, slots=slots))
    vocab[n] = voc
    cat_cols.append(ids_rl)
  for n, k in feats:
    if k == NUMERIC:
      decls.append(FeatureDecl(n, k))
  r = len(ids)
  cat = np.concatenate(cat_cols, axis=1) if cat_cols else np.zeros((r, 0), np.int32)
  num = (
      np.stack(num_cols + miss_cols, axis=1).astype(np.float32)
      if num_cols
      else np.zeros((r, 0), np.float32)
  )
  return FeatureFile(
      fname, np.array(ids, dtype=str)[order], tuple(decls), vocab, cat.astype(np.int32), num
  )


@dataclasses.dataclass(frozen=True, eq=False)
class Features:
  """One side's features per dense id: `cat` [R, S] int32 vocabulary ids (0 unknown),
  `num` [R, 2G] float32 (values, missing indicators), laid out by `decls`."""

  decls: tuple[FeatureDecl, ...]
  cat: np.ndarray
  num: np.ndarray

  def __post_init__(self):
    slots = sum(d.slots for d in self.decls)
    g = sum(d.kind == NUMERIC for d in self.decls)
    if self.cat.shape[1] != slots or self.num.shape[1] != 2 * g:
      raise ValueError(
          f"Features: cat [R,{slots}] and num [R,{2 * g}] expected by the decls, got "
          f"{self.cat.shape} and {self.num.shape}"
      )
    if self.cat.shape[0] != self.num.shape[0]:
      raise ValueError(f"Features: {self.cat.shape[0]} cat rows, {self.num.shape[0]} num rows")

  @property
  def num_rows(self) -> int:
    return int(self.cat.shape[0])

  def take(self, rows) -> "Features":
    return Features(self.decls, self.cat[rows], self.num[rows])


def features_for(file: FeatureFile, raw_ids, num: int) -> Features:
  """The file's features for dense ids 0..num-1 (raw ids `raw_ids`, None: dense ids)."""
  cat, num_ = file.rows_for(raw_ids, num)
  return Features(file.decls, cat, num_)


def side_config(data_cfg, side: str) -> tuple[str, str]:
  """(path, types) of config data.{side}_features (side: "user" or "item"); ("", "")
  when unset (configs written before these keys existed have none)."""
  path = data_cfg.get(f"{side}_features", "") or ""
  types = data_cfg.get(f"{side}_feature_types", "") or ""
  return path, types


def schema(data_cfg, side: str) -> tuple[FeatureDecl, ...]:
  """The declared features of one side (() when none): read from the file (cached)."""
  path, types = side_config(data_cfg, side)
  if not path:
    return ()
  return read_features(path, types).decls


def attach(inter, data_cfg):
  """`inter` with config data.user_features / data.item_features attached per dense id."""
  out = {}
  for side, raw, num in (
      ("user", inter.user_raw, inter.num_users),
      ("item", inter.item_raw, inter.num_items),
  ):
    path, types = side_config(data_cfg, side)
    if path:
      out[f"{side}_features"] = features_for(read_features(path, types), raw, num)
  return dataclasses.replace(inter, **out) if out else inter
