"""The downloader against a real HTTP server on 127.0.0.1 serving zips built here."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from fedrec.common.data.download import ChecksumError, download_dataset
from fedrec.common.data.movielens import load_ml_100k


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


GOOD = _zip({"ml-100k/u.data": "1\t1\t5\t881250949\n2\t1\t3\t881250950\n",
             "ml-100k/README": "tiny"})


@pytest.fixture
def server():
    """Serve a dict path -> bytes on 127.0.0.1; yields (base_url, files)."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verifies_and_unpacks(server, tmp_path):
    base, files = server
    files["/ml-100k.zip"] = GOOD
    digest = "sha256:" + hashlib.sha256(GOOD).hexdigest()
    seen = []
    folder = download_dataset("ml-100k", tmp_path, url=f"{base}/ml-100k.zip", digest=digest,
                              progress=lambda done, total: seen.append((done, total)))
    assert folder == tmp_path / "ml-100k"
    assert len(load_ml_100k(folder)) == 2
    assert seen[-1] == (len(GOOD), len(GOOD))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k"]  # no temp files left


def test_checksum_mismatch_leaves_nothing_behind(server, tmp_path):
    base, files = server
    files["/ml-100k.zip"] = GOOD
    with pytest.raises(ChecksumError, match="expected 00"):
        download_dataset("ml-100k", tmp_path, url=f"{base}/ml-100k.zip",
                         digest="sha256:" + "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_published_md5_beside_the_archive_is_used(server, tmp_path):
    base, files = server
    files["/ml-latest-small.zip"] = _zip({"ml-latest-small/ratings.csv": "x"})
    md5 = hashlib.md5(files["/ml-latest-small.zip"]).hexdigest()
    files["/ml-latest-small.zip.md5"] = f"MD5 (ml-latest-small.zip) = {md5}\n".encode()
    folder = download_dataset("ml-latest-small", tmp_path, url=f"{base}/ml-latest-small.zip")
    assert (folder / "ratings.csv").read_text() == "x"
    files["/ml-latest-small.zip.md5"] = b"0" * 32
    with pytest.raises(ChecksumError):
        download_dataset("ml-latest-small", tmp_path / "again",
                         url=f"{base}/ml-latest-small.zip")


def test_refuses_to_overwrite_and_to_unpack_outside(server, tmp_path):
    base, files = server
    (tmp_path / "ml-100k").mkdir()
    files["/a.zip"] = GOOD
    with pytest.raises(FileExistsError, match="already exists"):
        download_dataset("ml-100k", tmp_path, url=f"{base}/a.zip",
                         digest="sha256:" + hashlib.sha256(GOOD).hexdigest())
    evil = _zip({"../../evil.txt": "x"})
    files["/evil.zip"] = evil
    with pytest.raises(ValueError, match="outside"):
        download_dataset("ml-100k", tmp_path / "other", url=f"{base}/evil.zip",
                         digest="sha256:" + hashlib.sha256(evil).hexdigest())
    assert not (tmp_path / "evil.txt").exists() and not Path("evil.txt").exists()


def test_bad_digest_syntax_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Digest must look like"):
        download_dataset("ml-100k", tmp_path, url="http://127.0.0.1:9/x.zip", digest="crc:12")
