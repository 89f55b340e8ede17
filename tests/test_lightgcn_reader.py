"""Tests for `readers.load_lightgcn` on small files written here (never the real data)."""

import numpy as np
import pytest

from jaxrec.data import readers
from jaxrec.data.interactions import DataError, DataPathError


def _write(folder, train: bytes, test: bytes):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "train.txt").write_bytes(train)
  (folder / "test.txt").write_bytes(test)
  return folder


def _pairs(inter):
  return list(zip(inter.user_ids.tolist(), inter.item_ids.tolist()))


def test_reads_pairs_in_one_id_space(tmp_path):
  folder = _write(tmp_path / "d", b"0 3 1 2\n1 0\n2\n4 5 1\n", b"0 4\n1 6\n2 0 3\n3 2\n")
  train, test = readers.load_lightgcn(folder)
  # Ids as given; users 0..4 (user 3 only in test, user 2 has no train item), items 0..6.
  for part in (train, test):
    assert (part.num_users, part.num_items) == (5, 7)
    assert part.weights is None and part.timestamps is None and part.user_raw is None
  assert _pairs(train) == [(0, 1), (0, 2), (0, 3), (1, 0), (4, 1), (4, 5)]
  assert _pairs(test) == [(0, 4), (1, 6), (2, 0), (2, 3), (3, 2)]
  assert train.user_ids.dtype == np.int32
  # Either file names the split.
  for path in (folder / "train.txt", folder / "test.txt", str(folder)):
    again = readers.load_lightgcn(path)
    assert _pairs(again[0]) == _pairs(train) and _pairs(again[1]) == _pairs(test)


def test_user_without_items_still_counts_towards_num_users(tmp_path):
  folder = _write(tmp_path, b"0 1\n9\n", b"0 0\n")
  train, test = readers.load_lightgcn(folder)
  assert train.num_users == test.num_users == 10
  assert train.num_items == 2


def test_crlf_tabs_blank_lines_and_repeats(tmp_path):
  folder = _write(tmp_path, b"0 1  2\t3\r\n\r\n  \n1 2 2 0\r\n", b"0 4\r\n1 3")
  train, test = readers.load_lightgcn(folder)
  assert _pairs(train) == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2)]  # repeated 2 counted once
  assert _pairs(test) == [(0, 4), (1, 3)]  # last line without a newline


@pytest.mark.parametrize(
    "train, test, where, reason",
    [
        (b"0 1\n1 2 x\n", b"0 0\n", "train.txt:2:", r"item id #2 'x' is not an integer"),
        (b"0 1\n1 2\n", b"0 0\n1 -3\n", "test.txt:2:", r"item id #1 -3 is negative"),
        (b"0 1\n-1 2\n", b"0 0\n", "train.txt:2:", r"user id -1 is negative"),
        (
            b"0 1\n\n0 2\n",
            b"0 0\n",
            "train.txt:3:",
            r"user 0 is listed twice in this file " r"\(first on line 1\)",
        ),
        (b"0 1\n1 2.5\n", b"0 0\n", "train.txt:2:", r"item id #1 '2.5' is not an integer"),
        (b"0 1\n1 2\r3\n", b"0 0\n", "train.txt:2:", r"contains a control character"),
        (b"0 1\n", b"0 0\n1 2147483647\n", "test.txt:2:", r"is too large"),
        (b"0 1\n", b"\n\n", "test.txt:", r"no users"),
        (b"0\n1\n", b"0 0\n", "train.txt:", r"no interactions"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, train, test, where, reason):
  folder = _write(tmp_path, train, test)
  with pytest.raises(DataError, match=reason) as err:
    readers.load_lightgcn(folder)
  assert f"{folder / where}" in str(err.value)


def test_missing_files(tmp_path):
  with pytest.raises(DataPathError, match="no such file"):
    readers.load_lightgcn(tmp_path / "nowhere")
  (tmp_path / "train.txt").write_bytes(b"0 1\n")
  with pytest.raises(DataPathError, match="no test.txt in this folder"):
    readers.load_lightgcn(tmp_path)
