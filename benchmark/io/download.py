"""Downloading the published dataset files: resumable, checksummed, safely extracted.

* :func:`download` fetches one URL to a file with HTTP Range resumption (a ``.part`` file that
  survives interruptions), a rich progress bar and SHA-256 verification (a mismatch removes
  the bad file and raises :class:`~stbench.errors.DataError`).
* :func:`safe_extract` unpacks tar/zip archives, refusing members with absolute paths, ``..``
  components, links that escape the target folder, and device files.
* :data:`MANIFESTS` lists the published files of each dataset. Where the publisher gives no
  checksum, the first download records the digest it saw in ``<root>/stbench-lock.json`` and
  every later download of that file is verified against it (trust on first use).

Downloaded data lands in ``--root`` or, by default, ``$STBENCH_DATA/<dataset>`` (default
``~/.cache/stbench/data/<dataset>``), which is also where the dataset readers look when
``dataset.root`` is not set.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import os
import posixpath
import shutil
import socket
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, Optional

from stbench.errors import ConfigError, DataError

LOCK_NAME = "stbench-lock.json"
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Where data lives
# --------------------------------------------------------------------------------------------


def data_home() -> Path:
    """``$STBENCH_DATA`` or ``~/.cache/stbench/data``."""
    env = os.environ.get("STBENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stbench" / "data"


def default_root(name: str) -> Path:
    """The default folder of dataset ``name`` (what ``stbench data download NAME`` fills)."""
    return data_home() / name


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One published file and what to do with it once downloaded.

    Attributes:
        url: Where it is published.
        filename: Name it is saved under (in ``<root>/.downloads`` for archives and
            converted files, else at ``<root>/<target or filename>``).
        sha256: Published or verified digest; None when not (yet) known: then the digest seen
            on first download is recorded in the lock file and enforced afterwards.
        kind: ``file`` (kept as is at ``target``), ``archive`` (tar/zip extracted into the
            root) or ``gene_list_npy`` (a NumPy array of gene symbols written as a one-per-line
            text file at ``target``).
        target: Destination relative to the root (``file`` and ``gene_list_npy``).
        members: For archives, glob patterns (after ``strip``) of the members to extract
            (all when empty).
        strip: Leading path components removed from archive members.
        gunzip: Glob patterns of extracted files to decompress (``x.jpg.gz`` -> ``x.jpg``).
    """

    url: str
    filename: str
    sha256: Optional[str] = None
    kind: str = "file"
    target: str = ""
    members: tuple[str, ...] = ()
    strip: int = 0
    gunzip: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """The published files of one dataset."""

    name: str
    source: str
    files: tuple[RemoteFile, ...] = ()
    note: str = ""
    #: Hugging Face dataset repository (files chosen by sample id) instead of plain URLs.
    hf_repo: Optional[str] = None
    hf_patterns: tuple[str, ...] = field(default_factory=tuple)


_HIST2ST_COMMIT = "a8e00a5858b0ae8438803cb615d590c9191017e7"

MANIFESTS: dict[str, Manifest] = {
    "her2st": Manifest(
        name="her2st",
        source="https://github.com/almaan/her2st (data/: ST-cnts, ST-spotfiles, ST-imgs, "
               "ST-pat); also Zenodo 10.5281/zenodo.4751624 (password-protected zips)",
        files=(
            RemoteFile(
                url="https://github.com/almaan/her2st/archive/HEAD.tar.gz",
                filename="her2st-HEAD.tar.gz",
                kind="archive",
                members=("ST-cnts/*", "ST-spotfiles/*", "ST-imgs/*", "ST-pat/lbl/*"),
                strip=2,  # her2st-<commit>/data/...
            ),
            RemoteFile(
                url="https://raw.githubusercontent.com/biomed-AI/Hist2ST/"
                    f"{_HIST2ST_COMMIT}/data/her_hvg_cut_1000.npy",
                filename="her_hvg_cut_1000.npy",
                kind="gene_list_npy",
                target="panels/her2st_785.txt",
            ),
        ),
        note="No publisher checksums: digests are recorded in stbench-lock.json on first "
             "download and verified on later ones.",
    ),
    "cscc": Manifest(
        name="cscc",
        source="https://www.ncbi.nlm.nih.gov/geo/query/acc.cgi?acc=GSE144240 (supplementary "
               "files of the ST samples GSM4284316-GSM4284327: *_stdata.tsv.gz, "
               "*_spot_data-selection-*.tsv.gz, H&E *.jpg)",
        files=(
            RemoteFile(
                url="https://www.ncbi.nlm.nih.gov/geo/download/?acc=GSE144240&format=file",
                filename="GSE144240_RAW.tar",
                kind="archive",
                members=("*_stdata.tsv*", "*spot_data*", "*.jpg", "*.jpg.gz", "*.jpeg",
                         "*.jpeg.gz"),
                gunzip=("*.jpg.gz", "*.jpeg.gz"),
            ),
            RemoteFile(
                url="https://raw.githubusercontent.com/biomed-AI/Hist2ST/"
                    f"{_HIST2ST_COMMIT}/data/skin_hvg_cut_1000.npy",
                filename="skin_hvg_cut_1000.npy",
                kind="gene_list_npy",
                target="panels/cscc_171.txt",
            ),
        ),
        note="GEO publishes no checksums: digests are recorded in stbench-lock.json on first "
             "download and verified on later ones.",
    ),
    "hest": Manifest(
        name="hest",
        source="https://huggingface.co/datasets/MahmoodLab/hest (gated: accept the terms on "
               "the page and log in with `huggingface-cli login`)",
        hf_repo="MahmoodLab/hest",
        hf_patterns=("st/{id}.h5ad", "wsis/{id}.tif", "metadata/{id}.json", "patches/{id}.h5"),
        note="Files are chosen by sample id (--ids); the Hub verifies each file's SHA-256 "
             "(LFS oid) and the digests are also recorded in stbench-lock.json.",
    ),
}


def manifest(name: str) -> Manifest:
    if name not in MANIFESTS:
        raise ConfigError(f"no download manifest for dataset {name!r}",
                          fix=f"choose one of {sorted(MANIFESTS)}")
    return MANIFESTS[name]


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress_factory(progress: bool | None):
    """A context manager yielding ``task(description, total) -> advance(n)``."""
    import contextlib
    import sys

    enabled = sys.stderr.isatty() if progress is None else bool(progress)

    @contextlib.contextmanager
    def bars():
        if not enabled:
            yield lambda desc, total, completed=0: (lambda n: None)
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=False) as prog:
            def task(desc, total, completed=0):
                tid = prog.add_task(desc, total=total, completed=completed)
                return lambda n: prog.advance(tid, n)
            yield task

    return bars


def _offline_error(url: str, reason: object) -> DataError:
    return DataError(
        f"cannot download (network unreachable or refused: {reason})",
        where=url,
        fix="check the internet connection or proxy (HTTPS_PROXY) and rerun: an interrupted "
            "download resumes from its .part file; or fetch the file by hand into the root")


_HEADERS = {"User-Agent": "stbench-download/1", "Accept-Encoding": "identity"}


class _Transfer(NamedTuple):
    """What one pass of :func:`_fetch` moved into the ``.part`` file."""

    digest: str  # SHA-256 of the whole .part file
    start: int  # bytes kept from an earlier pass (0: started over)
    received: int  # bytes received in this pass
    remaining: Optional[int]  # bytes the server announced for this pass (None: unknown)
    total: Optional[int]  # start + remaining (None: unknown)


def _open_url(url: str, offset: int, timeout: float) -> Any:
    """Open ``url``, asking for the bytes from ``offset`` on when ``offset`` is not 0."""
    h = dict(_HEADERS)
    if offset:
        h["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=timeout)


def _open_resumable(url: str, part: Path, start: int, timeout: float) -> tuple[Any, int]:
    """Open ``url`` from ``start``; restart from 0 (removing ``part``) on HTTP 416.

    Returns:
        The response and the offset it was requested from.
    """
    try:
        return _open_url(url, start, timeout), start
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left past our offset: restart cleanly
            part.unlink()
            return _open_url(url, 0, timeout), 0
        raise


def _resume_offset(resp: Any, start: int) -> int:
    """``start`` when the server honoured the Range request for it, else 0 (start over)."""
    status = getattr(resp, "status", 200) or 200
    if start and status != 206:  # the server ignored Range: start over
        return 0
    if start and status == 206:
        content_range = resp.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {start}-"):
            return 0  # unexpected range: restart rather than corrupt
    return start


def _receive(resp: Any, part: Path, start: int, total: Optional[int], hasher: Any,
             label: str, progress: bool | None) -> int:
    """Write the response body to ``part`` (appending after ``start`` bytes), hashing it all.

    Args:
        resp: The open response.
        part: The ``.part`` file; its first ``start`` bytes are kept and hashed first.
        start: Bytes of ``part`` to keep (0: overwrite it).
        total: Expected final size for the progress bar (None: unknown).
        hasher: A ``hashlib`` object updated with every byte of the final file.
        label: Progress bar description.
        progress: Show a progress bar (None: when stderr is a terminal).

    Returns:
        The number of bytes received.
    """
    if start:
        with open(part, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                hasher.update(chunk)
    mode = "ab" if start else "wb"
    received = 0
    with _progress_factory(progress)() as task, open(part, mode) as out:
        advance = task(label, total, start)
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
            advance(len(chunk))
    return received


def _fetch(url: str, part: Path, start: int, label: str, progress: bool | None,
           timeout: float) -> _Transfer:
    """Stream ``url`` into ``part``, resuming after its first ``start`` bytes when possible.

    Network errors propagate as raised by :mod:`urllib` (see :func:`download`).
    """
    hasher = hashlib.sha256()
    resp, start = _open_resumable(url, part, start, timeout)
    with resp:
        start = _resume_offset(resp, start)
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = start + remaining if remaining is not None else None
        received = _receive(resp, part, start, total, hasher, label, progress)
    return _Transfer(hasher.hexdigest(), start, received, remaining, total)


def download(url: str, dest: str | Path, sha256: str | None = None,
             progress: bool | None = None, *, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest``, resuming a previous ``dest.part``; return the SHA-256.

    Args:
        url: http(s) or file URL.
        dest: Final path; bytes go to ``<dest>.part`` until complete and verified.
        sha256: Expected hex digest; None skips verification (the digest is still returned).
        progress: Show a rich progress bar (None: when stderr is a terminal).
        timeout: Socket timeout in seconds.

    Raises:
        DataError: Offline / refused / HTTP error (the ``.part`` file is kept for resuming),
            an interrupted transfer, or a checksum mismatch (the bad file is removed).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and expected is not None:
        if sha256_file(dest) == expected:
            return expected
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    try:
        t = _fetch(url, part, start, dest.name, progress, timeout)
    except urllib.error.HTTPError as exc:
        raise DataError(f"download failed: HTTP {exc.code} {exc.reason}", where=url,
                        fix="check the URL in stbench.io.download.MANIFESTS, or retry later") from exc
    except urllib.error.URLError as exc:
        raise _offline_error(url, exc.reason) from exc
    except (socket.timeout, TimeoutError, ConnectionError) as exc:
        raise _offline_error(url, exc) from exc
    if t.remaining is not None and t.received < t.remaining:
        raise DataError(f"download interrupted after {t.start + t.received} of {t.total} bytes",
                        where=url, fix="rerun the command: it resumes from the .part file")
    if expected is not None and t.digest != expected:
        part.unlink(missing_ok=True)
        raise DataError(
            f"checksum mismatch for {dest.name}: expected sha256 {expected}, got {t.digest}; "
            "the file was removed", where=url,
            fix="rerun the download; if it persists the published file changed (delete its "
                f"entry in {LOCK_NAME} only if you trust the new file)")
    os.replace(part, dest)
    return t.digest


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------


def _safe_relpath(name: str, archive: Path) -> PurePosixPath:
    """The member path as a relative POSIX path; a DataError if absolute or with ``..``."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or raw.startswith("//"):
        raise DataError(f"archive member {name!r} has an absolute path; extraction refused",
                        where=str(archive), fix="do not use this archive; re-download it from the "
                        "publisher")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive member {name!r} escapes the target folder ('..'); extraction "
                        "refused", where=str(archive),
                        fix="do not use this archive; re-download it from the publisher")
    return PurePosixPath(*parts) if parts else PurePosixPath()


def _strip(rel: PurePosixPath, n: int) -> PurePosixPath | None:
    if len(rel.parts) <= n:
        return None
    return PurePosixPath(*rel.parts[n:])


def _selected(rel: PurePosixPath, members: Sequence[str]) -> bool:
    if not members:
        return True
    s = str(rel)
    return any(fnmatch.fnmatch(s, pat) or fnmatch.fnmatch(rel.name, pat) for pat in members)


def _link_escapes(member_rel: PurePosixPath, link_target: str, hard: bool) -> bool:
    target = link_target.replace("\\", "/")
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        return True
    base = "" if hard else str(member_rel.parent)
    joined = posixpath.normpath(posixpath.join(base, target))
    return joined == ".." or joined.startswith("../") or joined.startswith("/")


def _dest_for(root: Path, rel: PurePosixPath, archive: Path) -> Path:
    """The resolved output path of member ``rel``; a DataError if it lands outside ``root``."""
    out = (root / Path(*rel.parts)).resolve()
    if out != root and root not in out.parents:
        raise DataError(f"archive member {str(rel)!r} would land outside {root}; "
                        "extraction refused", where=str(archive),
                        fix="do not use this archive")
    return out


def _check_link_inside(root: Path, link: Path, name: str, archive: Path) -> None:
    """A link made through earlier links may point outside though its text does not.

    Removes ``link`` and raises a DataError when it resolves outside ``root``.
    """
    try:
        resolved = link.resolve()
    except (RuntimeError, OSError):  # a symlink loop
        resolved = root.parent
    if resolved != root and root not in resolved.parents:
        link.unlink()
        raise DataError(f"archive member {name!r} links outside the target folder through "
                        "another link; extraction refused", where=str(archive),
                        fix="do not use this archive; re-download it from the publisher")


def _make_symlink(root: Path, out: Path, link_text: str, name: str, archive: Path) -> None:
    """Create (replacing any existing entry) symlink ``out`` -> ``link_text``, checked inside."""
    if out.is_symlink() or out.exists():
        out.unlink()
    os.symlink(link_text, out)
    _check_link_inside(root, out, name, archive)


def _link_escape_error(name: str, link: str, archive: Path) -> DataError:
    """The error for member ``name`` whose link text ``link`` points outside the target."""
    return DataError(
        f"archive member {name!r} links outside the target folder "
        f"({link!r}); extraction refused", where=str(archive),
        fix="do not use this archive; re-download it from the publisher")


def _corrupt_archive_error(archive: Path, exc: BaseException) -> DataError:
    """The error for an archive that cannot be read."""
    return DataError(f"corrupt or truncated archive ({exc})", where=str(archive),
                     fix="delete it and download again")


def _plan_tar(tar: tarfile.TarFile, archive: Path, members: Sequence[str],
              strip: int) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    """Check every tar member (refusing unsafe ones) and list the selected ones.

    Returns:
        ``(member, output path relative to the target)`` for each member to extract.
    """
    plan = []
    for m in tar.getmembers():
        rel = _safe_relpath(m.name, archive)
        if m.issym() or m.islnk():
            if _link_escapes(rel, m.linkname, hard=m.islnk()):
                raise _link_escape_error(m.name, m.linkname, archive)
        elif m.isdev() or m.isfifo():
            raise DataError(f"archive member {m.name!r} is a device or FIFO; "
                            "extraction refused", where=str(archive),
                            fix="do not use this archive")
        out_rel = _strip(rel, strip)
        if out_rel is None or not _selected(out_rel, members):
            continue
        plan.append((m, out_rel))
    return plan


def _extract_tar_member(tar: tarfile.TarFile, m: tarfile.TarInfo, out_rel: PurePosixPath,
                        root: Path, archive: Path, strip: int) -> Path | None:
    """Write one planned tar member; return its path when it is a (copied) regular file.

    Hard links are written as copies of their (already extracted) source file.
    """
    out = _dest_for(root, out_rel, archive)
    if m.isdir():
        out.mkdir(parents=True, exist_ok=True)
    elif m.issym():
        out.parent.mkdir(parents=True, exist_ok=True)
        _make_symlink(root, out, m.linkname, m.name, archive)
    elif m.islnk():
        src_rel = _strip(_safe_relpath(m.linkname, archive), strip)
        if src_rel is not None and _dest_for(root, src_rel, archive).is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_dest_for(root, src_rel, archive), out)
            return out
    elif m.isfile():
        out.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(m)
        assert src is not None
        with src, open(out, "wb") as fh:
            shutil.copyfileobj(src, fh, _CHUNK)
        return out
    return None


def _extract_tar(archive: Path, root: Path, members: Sequence[str], strip: int) -> list[Path]:
    """:func:`safe_extract` of a tar archive (any compression) into the resolved ``root``."""
    written: list[Path] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m, out_rel in _plan_tar(tar, archive, members, strip):
                out = _extract_tar_member(tar, m, out_rel, root, archive, strip)
                if out is not None:
                    written.append(out)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _corrupt_archive_error(archive, exc) from exc
    return written


def _plan_zip(zf: zipfile.ZipFile, archive: Path, members: Sequence[str],
              strip: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath, bool]]:
    """Check every zip member (refusing unsafe ones) and list the selected ones.

    Returns:
        ``(member, output path relative to the target, is a symlink)`` for each member to
        extract.
    """
    plan = []
    for info in zf.infolist():
        rel = _safe_relpath(info.filename, archive)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            link = zf.read(info).decode("utf-8", "replace")
            if _link_escapes(rel, link, hard=False):
                raise _link_escape_error(info.filename, link, archive)
        out_rel = _strip(rel, strip)
        if out_rel is None or not _selected(out_rel, members):
            continue
        plan.append((info, out_rel, stat.S_ISLNK(mode)))
    return plan


def _extract_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out_rel: PurePosixPath,
                        is_link: bool, root: Path, archive: Path) -> Path | None:
    """Write one planned zip member; return its path when it is a regular file."""
    out = _dest_for(root, out_rel, archive)
    if info.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    if is_link:
        _make_symlink(root, out, zf.read(info).decode("utf-8"), info.filename, archive)
        return None
    with zf.open(info) as src, open(out, "wb") as fh:
        shutil.copyfileobj(src, fh, _CHUNK)
    return out


def _extract_zip(archive: Path, root: Path, members: Sequence[str], strip: int) -> list[Path]:
    """:func:`safe_extract` of a zip archive into the resolved ``root``."""
    written: list[Path] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info, out_rel, is_link in _plan_zip(zf, archive, members, strip):
                out = _extract_zip_member(zf, info, out_rel, is_link, root, archive)
                if out is not None:
                    written.append(out)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _corrupt_archive_error(archive, exc) from exc
    except RuntimeError as exc:  # encrypted members
        raise DataError(f"cannot extract archive ({exc})", where=str(archive),
                        fix="extract it by hand (it may be password-protected)") from exc
    return written


def safe_extract(archive: str | Path, target: str | Path, members: Sequence[str] = (),
                 strip: int = 0) -> list[Path]:
    """Extract a tar (any compression) or zip archive into ``target``, safely.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symbolic or hard links that point outside the target, and device/FIFO members make the
    whole extraction fail with a DataError. Links that stay inside are recreated as links.

    Args:
        archive: The archive file.
        target: Destination folder (created).
        members: Glob patterns of member paths (after ``strip``) to extract; all when empty.
        strip: Leading path components to remove from member paths.

    Returns:
        The extracted file paths.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, root, members, strip)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, root, members, strip)
    raise DataError("not a tar or zip archive", where=str(archive),
                    fix="delete it and download again")


def gunzip_file(path: Path) -> Path:
    """``x.gz`` -> ``x`` (the ``.gz`` removed afterwards); a DataError if it is corrupt."""
    out = path.with_name(path.name[:-3])
    tmp = out.with_name(out.name + ".part")
    try:
        with gzip.open(path, "rb") as src, open(tmp, "wb") as fh:
            shutil.copyfileobj(src, fh, _CHUNK)
    except (OSError, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"corrupt gzip file ({exc})", where=str(path),
                        fix="delete it and download again") from exc
    os.replace(tmp, out)
    path.unlink()
    return out


# --------------------------------------------------------------------------------------------
# Gene lists published as NumPy arrays
# --------------------------------------------------------------------------------------------


def read_npy_strings(path: str | Path) -> list[str]:
    """Strings of a ``.npy`` array (unicode, bytes, or pickled object array of str).

    Object arrays are unpickled with a restricted unpickler that only rebuilds NumPy arrays
    and plain Python strings, so a malicious file cannot run code.
    """
    import io
    import pickle

    import numpy as np

    path = Path(path)

    class _Restricted(pickle.Unpickler):
        _ALLOWED = {
            ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("builtins", "str"),
        }

        def find_class(self, module, name):
            if (module, name) in self._ALLOWED:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            if dtype.hasobject:
                arr = _Restricted(io.BytesIO(fh.read())).load()
            else:
                fh.seek(0)
                arr = np.load(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError) as exc:
        raise DataError(f"cannot read gene list array ({exc})", where=str(path),
                        fix="delete it and download again") from exc
    values = np.asarray(arr).ravel().tolist()
    out = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    if not out or not all(isinstance(v, str) and v for v in out):
        raise DataError("gene list array holds no gene symbols", where=str(path),
                        fix="delete it and download again")
    return out


# --------------------------------------------------------------------------------------------
# Lock file and whole datasets
# --------------------------------------------------------------------------------------------


def read_lock(root: Path) -> dict:
    path = root / LOCK_NAME
    if not path.is_file():
        return {"files": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the lock file ({exc})", where=str(path),
                        fix="fix or delete it (digests are then re-recorded)") from exc
    data.setdefault("files", {})
    return data


def write_lock(root: Path, lock: dict) -> None:
    path = root / LOCK_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def download_dataset(name: str, root: str | Path | None = None, *, ids: Sequence[str] = (),
                     progress: bool | None = None, force: bool = False,
                     manifest_override: Manifest | None = None,
                     log: Callable[[str], None] = lambda s: None) -> Path:
    """Download (and unpack) every published file of dataset ``name`` into ``root``.

    Args:
        name: ``her2st``, ``cscc`` or ``hest``.
        root: Destination (default :func:`default_root`).
        ids: Sample ids (HEST-1k only).
        progress: Progress bars (None: when stderr is a terminal).
        force: Download again even if the lock file says a file is in place.
        manifest_override: Use this manifest instead of the built-in one (tests, mirrors).
        log: Receives one line per step.

    Returns:
        The root folder.
    """
    m = manifest_override or manifest(name)
    root = Path(root).expanduser() if root else default_root(name)
    root.mkdir(parents=True, exist_ok=True)
    lock = read_lock(root)
    lock["dataset"] = name
    if m.hf_repo:
        _download_hf(m, root, ids, lock, log)
        write_lock(root, lock)
        return root
    downloads = root / ".downloads"
    for rf in m.files:
        entry = lock["files"].get(rf.filename, {})
        if entry.get("done") and not force and _outputs_present(root, entry):
            log(f"{rf.filename}: already in place (sha256 {entry.get('sha256', '?')[:12]})")
            continue
        expected = rf.sha256 or entry.get("sha256")
        if rf.kind == "file":
            dest = root / (rf.target or rf.filename)
        else:
            dest = downloads / rf.filename
        log(f"{rf.filename}: downloading {rf.url}")
        digest = download(rf.url, dest, expected, progress)
        outputs: list[str] = []
        if rf.kind == "archive":
            log(f"{rf.filename}: extracting")
            files = safe_extract(dest, root, rf.members, rf.strip)
            for f in files:
                if rf.gunzip and any(fnmatch.fnmatch(f.name, p) for p in rf.gunzip):
                    f = gunzip_file(f)
                outputs.append(str(f.relative_to(root.resolve())))
            if not files:
                raise DataError(f"the archive holds none of the expected files {list(rf.members)}",
                                where=rf.url, fix="check the manifest in stbench.io.download")
            dest.unlink()
        elif rf.kind == "gene_list_npy":
            genes = read_npy_strings(dest)
            out = root / rf.target
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("\n".join(genes) + "\n")
            outputs.append(rf.target)
            dest.unlink()
            log(f"{rf.filename}: {len(genes)} genes -> {rf.target}")
        else:
            outputs.append(str(dest.relative_to(root)))
        lock["files"][rf.filename] = {
            "url": rf.url, "sha256": digest, "source_checksum": bool(rf.sha256),
            "done": True, "outputs": sorted(outputs)[:10000]}
        write_lock(root, lock)
    try:
        downloads.rmdir()
    except OSError:
        pass
    return root


def _outputs_present(root: Path, entry: dict) -> bool:
    outs = entry.get("outputs") or []
    return bool(outs) and all((root / o).exists() for o in outs)


def _download_hf(m: Manifest, root: Path, ids: Sequence[str], lock: dict,
                 log: Callable[[str], None]) -> None:
    if not ids:
        raise ConfigError(f"{m.name} is downloaded by sample id", fix="pass --ids ID1,ID2 "
                          "(e.g. --ids TENX95,NCBI783; see the HEST-1k metadata table)")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise DataError("HF_HUB_OFFLINE is set: cannot download from the Hugging Face Hub",
                        where=f"https://huggingface.co/datasets/{m.hf_repo}",
                        fix="unset HF_HUB_OFFLINE (and log in: `huggingface-cli login`)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub ships with timm
        raise DataError("huggingface_hub is not installed", fix="pip install huggingface_hub") from exc
    patterns = [p.format(id=i) for i in ids for p in m.hf_patterns]
    log(f"{m.hf_repo}: downloading {len(patterns)} patterns for {len(ids)} sample(s)")
    try:
        snapshot_download(repo_id=m.hf_repo, repo_type="dataset", local_dir=str(root),
                          allow_patterns=patterns)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise DataError(f"Hugging Face download failed ({str(exc).splitlines()[0]})",
                        where=f"https://huggingface.co/datasets/{m.hf_repo}",
                        fix="accept the dataset terms on its page, log in with "
                            "`huggingface-cli login`, check the network and rerun") from exc
    missing = [i for i in ids if not (root / "st" / f"{i}.h5ad").is_file()]
    if missing:
        raise DataError(f"no HEST-1k sample named {missing}", where=f"https://huggingface.co/"
                        f"datasets/{m.hf_repo}", fix="check the ids in the HEST-1k metadata table")
    for i in ids:
        for p in m.hf_patterns:
            rel = p.format(id=i)
            f = root / rel
            if f.is_file():
                digest = sha256_file(f)
                seen = lock["files"].get(rel, {}).get("sha256")
                if seen and seen != digest:
                    raise DataError(f"checksum of {rel} differs from the one recorded earlier",
                                    where=str(f), fix=f"delete the file and its {LOCK_NAME} "
                                    "entry to accept the new version")
                lock["files"][rel] = {"url": f"hf://datasets/{m.hf_repo}/{rel}", "sha256": digest,
                                      "done": True, "outputs": [rel]}


__all__ = [
    "LOCK_NAME",
    "MANIFESTS",
    "Manifest",
    "RemoteFile",
    "data_home",
    "default_root",
    "download",
    "download_dataset",
    "gunzip_file",
    "read_npy_strings",
    "safe_extract",
    "sha256_file",
]
