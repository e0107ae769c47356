"""Fetch a MovieLens archive, verify its checksum, and unpack it atomically.

The archive streams into a unique temporary file beside the destination while its digest is
computed; a mismatch deletes it and raises :class:`ChecksumError`. The archive is then
unpacked into a temporary folder and renamed into place, so ``DATA_DIR/<name>/`` either holds
a complete, verified dataset or does not exist.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BASE_URL = "https://files.grouplens.org/datasets/movielens"
CHUNK = 1 << 16


@dataclass(frozen=True)
class Source:
    """Where a dataset's archive is, and the digest (``md5:HEX`` or ``sha256:HEX``) it must
    have. ``digest=None`` means: fetch the digest the publisher lists beside the archive
    (``URL.md5``), for archives that are re-issued over time."""

    url: str
    digest: str | None


# Digests are those GroupLens publishes beside each archive (ml-100k.zip.md5, ...).
SOURCES: dict[str, Source] = {
    "ml-100k": Source(f"{BASE_URL}/ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": Source(f"{BASE_URL}/ml-1m.zip", "md5:c4d9eecfca2ab87c1945afe126590906"),
    "ml-latest-small": Source(f"{BASE_URL}/ml-latest-small.zip", None),
}


class ChecksumError(ValueError):
    """A downloaded file's digest is not the expected one."""


Progress = Callable[[int, int | None], None]


def download_dataset(name: str, data_dir: str | Path, url: str | None = None,
                     digest: str | None = None, timeout: float = 60.0,
                     progress: Progress | None = None) -> Path:
    """Download, verify and unpack dataset ``name`` into ``data_dir/<name>/``.

    ``url`` and ``digest`` override the registered source (a mirror). Returns the folder.
    Raises :class:`FileExistsError` if the folder already exists.
    """
    if name not in SOURCES and url is None:
        raise ValueError(f"No download source for {name!r}; known: {', '.join(SOURCES)}.")
    source = SOURCES.get(name, Source(url or "", digest))
    url = url or source.url
    digest = digest or source.digest
    data_dir = Path(data_dir)
    target = data_dir / name
    if target.exists():
        raise FileExistsError(f"{target} already exists; remove it to download again")
    data_dir.mkdir(parents=True, exist_ok=True)
    if digest is None:
        digest = "md5:" + _published_md5(url, timeout)
    algorithm, expected = _parse_digest(digest)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{name}-") as tmp:
        archive = Path(tmp) / "archive.zip"
        found = _fetch(url, archive, algorithm, timeout, progress)
        if found != expected:
            raise ChecksumError(f"{url}: {algorithm} is {found}, expected {expected}; "
                                f"the file was discarded")
        unpacked = Path(tmp) / "unpacked"
        _safe_extract(archive, unpacked)
        root = _dataset_root(unpacked)
        root.rename(target)
    return target


def _fetch(url: str, dest: Path, algorithm: str, timeout: float,
           progress: Progress | None) -> str:
    hasher = hashlib.new(algorithm)
    with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        while chunk := response.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return hasher.hexdigest()


def _published_md5(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url + ".md5", timeout=timeout) as response:
        text = response.read(4096).decode("ascii", "replace")
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if not match:
        raise ChecksumError(f"{url}.md5 does not hold an MD5 digest: {text[:80]!r}")
    return match.group(0).lower()


def _parse_digest(digest: str) -> tuple[str, str]:
    algorithm, _, value = digest.partition(":")
    if algorithm not in ("md5", "sha256") or not re.fullmatch(r"[0-9a-fA-F]+", value):
        raise ValueError(f"Digest must look like 'sha256:HEX' or 'md5:HEX'. Found {digest!r}.")
    return algorithm, value.lower()


def _safe_extract(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            resolved = (dest / member).resolve()
            if not resolved.is_relative_to(dest.resolve()):
                raise ValueError(f"{archive}: member {member!r} would unpack outside the folder")
        zf.extractall(dest)


def _dataset_root(unpacked: Path) -> Path:
    """The archive's single top folder (MovieLens zips hold one), else the whole tree."""
    entries = [p for p in unpacked.iterdir() if not p.name.startswith("__MACOSX")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    moved = unpacked.parent / "root"
    shutil.move(str(unpacked), moved)
    return moved
