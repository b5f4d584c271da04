"""stbench.io.download against a local HTTP server on 127.0.0.1 (Range support in the handler)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from stbench.io.download import (
    LOCK_NAME,
    Manifest,
    RemoteFile,
    download,
    download_dataset,
    read_npy_strings,
    safe_extract,
)
from stbench.errors import ConfigError, DataError

PAYLOAD = bytes(range(256)) * 4000  # 1,024,000 bytes


class _Server:
    """Serves ``files`` (path -> bytes); honours ``Range: bytes=N-`` unless ``ranges`` is off."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and server.ranges:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    chunk = body[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    chunk = body
                    self.send_response(200)
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    s.files["/data.bin"] = PAYLOAD
    yield s
    s.close()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_verifies_sha256(server, tmp_path):
    dest = tmp_path / "d" / "data.bin"
    digest = download(server.url + "/data.bin", dest, _sha(PAYLOAD), progress=False)
    assert digest == _sha(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.bin.part").exists()


def test_download_resumes_a_partial_file(server, tmp_path):
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    part.write_bytes(PAYLOAD[:300_000])
    digest = download(server.url + "/data.bin", dest, _sha(PAYLOAD), progress=True)
    assert digest == _sha(PAYLOAD) and dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data.bin", "bytes=300000-")
    assert not part.exists()


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    server.ranges = False
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"garbage" * 100)
    assert download(server.url + "/data.bin", dest, _sha(PAYLOAD), progress=False) == _sha(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD


def test_download_complete_part_file_416(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # already whole: server answers 416
    assert download(server.url + "/data.bin", dest, _sha(PAYLOAD), progress=False) == _sha(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD


def test_sha_mismatch_removes_the_file(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(DataError, match="checksum mismatch") as err:
        download(server.url + "/data.bin", dest, "0" * 64, progress=False)
    assert "\n" not in err.value.one_line()
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    download(server.url + "/data.bin", dest, _sha(PAYLOAD), progress=False)
    assert server.requests == []


def test_http_404_is_a_data_error(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        download(server.url + "/missing.bin", tmp_path / "x", None, progress=False)


def test_offline_gives_a_clear_message(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    dest = tmp_path / "x.bin"
    with pytest.raises(DataError) as err:
        download(f"http://127.0.0.1:{port}/x.bin", dest, None, progress=False, timeout=5)
    line = err.value.one_line()
    assert "cannot download" in line and "network" in line and f"127.0.0.1:{port}" in line
    assert "fix:" in line and "\n" not in line


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, bytes | None, str | None, str]]) -> Path:
    """members: (name, data, linkname, kind in file|sym|hard)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, link, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
            else:
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = link or ""
                tar.addfile(info)
    return path


@pytest.mark.parametrize("members, needle", [
    ([("top/ok.txt", b"ok", None, "file"), ("top/../../evil.txt", b"x", None, "file")], "'..'"),
    ([("/etc/evil.txt", b"x", None, "file")], "absolute path"),
    ([("top/link", None, "/etc/passwd", "sym")], "links outside"),
    ([("top/sub/link", None, "../../../outside", "sym")], "links outside"),
    ([("top/hard", None, "../outside", "hard")], "links outside"),
])
def test_unsafe_tar_is_refused(tmp_path, members, needle):
    archive = _tar(tmp_path / "bad.tar.gz", members)
    target = tmp_path / "out"
    with pytest.raises(DataError, match=re.escape(needle)):
        safe_extract(archive, target)
    assert not (tmp_path / "evil.txt").exists()
    assert not any(target.rglob("*")) if target.exists() else True


def test_unsafe_zip_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/ok.txt", "ok")
        zf.writestr("a/../../evil.txt", "x")
    with pytest.raises(DataError, match="extraction refused"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_strips_and_selects(tmp_path):
    archive = _tar(tmp_path / "repo.tar.gz", [
        ("repo-abc/data/ST-cnts/A1.tsv.gz", b"c", None, "file"),
        ("repo-abc/data/ST-imgs/A/A1/x.jpg", b"j", None, "file"),
        ("repo-abc/res/big.zip", b"z", None, "file"),
        ("repo-abc/data/ST-cnts/link.tsv.gz", None, "A1.tsv.gz", "sym"),  # inside: allowed
    ])
    out = safe_extract(archive, tmp_path / "root", members=("ST-cnts/*", "ST-imgs/*"), strip=2)
    root = tmp_path / "root"
    assert (root / "ST-cnts" / "A1.tsv.gz").read_bytes() == b"c"
    assert (root / "ST-imgs" / "A" / "A1" / "x.jpg").read_bytes() == b"j"
    assert not (root / "res").exists()
    assert (root / "ST-cnts" / "link.tsv.gz").is_symlink()
    assert len(out) == 2


def test_zip_extraction(tmp_path):
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("count-matrices/A1.tsv.gz", "c")
    safe_extract(archive, tmp_path / "root", strip=1)
    assert (tmp_path / "root" / "A1.tsv.gz").read_text() == "c"


def test_corrupt_archive_is_a_data_error(tmp_path):
    good = _tar(tmp_path / "g.tar.gz", [("a/b.txt", np.random.default_rng(0).bytes(100_000), None, "file")])
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError):
        safe_extract(bad, tmp_path / "out")


# --------------------------------------------------------------------------------------------
# Gene lists in .npy
# --------------------------------------------------------------------------------------------


def test_npy_gene_lists(tmp_path):
    genes = ["ERBB2", "GRB7", "KRT5"]
    np.save(tmp_path / "obj.npy", np.array(genes, dtype=object), allow_pickle=True)
    np.save(tmp_path / "uni.npy", np.array(genes))
    assert read_npy_strings(tmp_path / "obj.npy") == genes
    assert read_npy_strings(tmp_path / "uni.npy") == genes


def test_npy_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    path = tmp_path / "evil.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=True)
    with pytest.raises(DataError, match="refusing"):
        read_npy_strings(path)


# --------------------------------------------------------------------------------------------
# Whole datasets: manifest, extraction, lock file
# --------------------------------------------------------------------------------------------


def _dataset_server(server, tmp_path) -> Manifest:
    buf = tmp_path / "repo.tar.gz"
    _tar(buf, [("her2st-1/data/ST-cnts/A1.tsv.gz", b"counts", None, "file"),
               ("her2st-1/data/ST-imgs/A/A1/a.jpg.gz", _gz(b"jpeg"), None, "file"),
               ("her2st-1/README.md", b"r", None, "file")])
    server.files["/repo.tar.gz"] = buf.read_bytes()
    npy = io.BytesIO()
    np.save(npy, np.array(["ERBB2", "GRB7"], dtype=object), allow_pickle=True)
    server.files["/panel.npy"] = npy.getvalue()
    return Manifest(name="her2st", source="test", files=(
        RemoteFile(url=server.url + "/repo.tar.gz", filename="repo.tar.gz", kind="archive",
                   members=("ST-cnts/*", "ST-imgs/*"), strip=2, gunzip=("*.jpg.gz",)),
        RemoteFile(url=server.url + "/panel.npy", filename="panel.npy", kind="gene_list_npy",
                   target="panels/her2st_785.txt"),
    ))


def _gz(b: bytes) -> bytes:
    import gzip

    return gzip.compress(b)


def test_download_dataset_records_digests_and_verifies_later(server, tmp_path):
    m = _dataset_server(server, tmp_path)
    root = tmp_path / "her2st"
    lines: list[str] = []
    download_dataset("her2st", root, progress=False, manifest_override=m, log=lines.append)
    assert (root / "ST-cnts" / "A1.tsv.gz").read_bytes() == b"counts"
    assert (root / "ST-imgs" / "A" / "A1" / "a.jpg").read_bytes() == b"jpeg"
    assert (root / "panels" / "her2st_785.txt").read_text().split() == ["ERBB2", "GRB7"]
    assert not (root / "README.md").exists() and not (root / ".downloads").exists()
    lock = json.loads((root / LOCK_NAME).read_text())
    assert lock["files"]["repo.tar.gz"]["sha256"] == _sha(server.files["/repo.tar.gz"])
    # second run: everything in place, nothing fetched
    n = len(server.requests)
    download_dataset("her2st", root, progress=False, manifest_override=m)
    assert len(server.requests) == n
    # the publisher's file changes: a forced re-download is checked against the lock file
    server.files["/panel.npy"] = server.files["/panel.npy"] + b"tampered"
    with pytest.raises(DataError, match="checksum mismatch"):
        download_dataset("her2st", root, progress=False, force=True, manifest_override=m)


def test_unknown_manifest_and_hest_without_ids(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no download manifest"):
        download_dataset("nope", tmp_path)
    with pytest.raises(ConfigError, match="--ids"):
        download_dataset("hest", tmp_path / "hest")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):
        download_dataset("hest", tmp_path / "hest", ids=["TENX95"])
