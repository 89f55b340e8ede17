"""Explicit, opt-in download of the MovieLens archives from files.grouplens.org.

Nothing in jaxrec calls this at import time or in tests against the network; run it yourself:

  python -m jaxrec.data.download --name=ml-1m --dest=DIR [--sha256=HEX]

then point a config at the printed folder (``--config.data.path=DIR/ml-1m``). Read the
GroupLens terms (README inside each archive) before use; cite Harper & Konstan 2015.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import shutil
import sys
import tempfile
import urllib.request
import zipfile

BASE_URL = "https://files.grouplens.org/datasets/movielens/"
# name -> folder inside the archive that holds the ratings file.
ARCHIVES = {
    "ml-100k": "ml-100k",
    "ml-1m": "ml-1m",
    "ml-10m": "ml-10M100K",
    "ml-20m": "ml-20m",
    "ml-25m": "ml-25m",
    "ml-latest-small": "ml-latest-small",
}
_RATINGS = ("u.data", "ratings.dat", "ratings.csv")


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _safe_extract(archive: zipfile.ZipFile, dest: pathlib.Path) -> None:
  """Extracts every member, refusing absolute paths and '..' escapes."""
  root = dest.resolve()
  for member in archive.namelist():
    target = (dest / member).resolve()
    if target != root and root not in target.parents:
      raise ValueError(f"unsafe path {member!r} in the archive")
  archive.extractall(dest)


def download_movielens(
    name: str,
    dest_dir,
    *,
    sha256: str | None = None,
    base_url: str = BASE_URL,
    overwrite: bool = False,
    timeout: float = 60.0,
) -> pathlib.Path:
  """Downloads and unpacks ``{base_url}{name}.zip`` into ``dest_dir``; returns the data folder.

  ``name`` is one of `ARCHIVES`. An existing folder that already holds a ratings file is
  reused unless ``overwrite``. With ``sha256`` the archive's digest is checked before
  unpacking (mismatch: ValueError, nothing unpacked). The archive goes to a temporary file
  and is unpacked into a temporary folder that is renamed into place, so an interrupted
  download never leaves a half-written data folder behind.
  """
  if name not in ARCHIVES:
    raise ValueError(
        f"download_movielens: unknown name {name!r}; choose one of " f"{sorted(ARCHIVES)}"
    )
  dest = pathlib.Path(os.fspath(dest_dir))
  folder = dest / ARCHIVES[name]
  if folder.is_dir() and not overwrite and any((folder / f).is_file() for f in _RATINGS):
    return folder
  dest.mkdir(parents=True, exist_ok=True)
  url = f"{base_url}{name}.zip"
  with tempfile.TemporaryDirectory(dir=dest, prefix=f".{name}-") as tmp:
    tmp = pathlib.Path(tmp)
    archive_path = tmp / f"{name}.zip"
    with urllib.request.urlopen(url, timeout=timeout) as response, open(archive_path, "wb") as out:
      shutil.copyfileobj(response, out, length=1 << 20)
    if sha256 is not None:
      got = _sha256(archive_path)
      if got != sha256.lower():
        raise ValueError(f"download_movielens: {url} has sha256 {got}, expected {sha256}")
    unpack = tmp / "unpacked"
    with zipfile.ZipFile(archive_path) as archive:
      _safe_extract(archive, unpack)
    extracted = unpack / ARCHIVES[name]
    if not any((extracted / f).is_file() for f in _RATINGS):
      raise ValueError(
          f"download_movielens: {url} has no {ARCHIVES[name]}/ with one of " f"{_RATINGS}"
      )
    if folder.exists():
      shutil.rmtree(folder)
    os.replace(extracted, folder)
  return folder


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m jaxrec.data.download",
      description="Download a MovieLens archive from files.grouplens.org (opt-in).",
  )
  parser.add_argument("--name", required=True, choices=sorted(ARCHIVES))
  parser.add_argument("--dest", required=True, help="folder to unpack into")
  parser.add_argument("--sha256", default=None, help="expected sha256 of the .zip")
  parser.add_argument("--base_url", default=BASE_URL)
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  try:
    folder = download_movielens(
        args.name, args.dest, sha256=args.sha256, base_url=args.base_url, overwrite=args.overwrite
    )
  except (OSError, ValueError, zipfile.BadZipFile) as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  print(folder)
  return 0


if __name__ == "__main__":
  sys.exit(main())
