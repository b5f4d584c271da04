"""What some tests need from outside the repository, and what happens when it is absent.

Headless Chromium and a throwaway PostgreSQL server (Debian packages ``chromium`` and
``postgresql``; ``.ci/run`` installs them, the tests install nothing), and the real data
folder ``$STBENCH_SHARED``. A test whose need is unmet is skipped with a one-line reason,
except under ``STBENCH_REQUIRE_REAL_DATA=1`` (set by ``.ci/run``), where it fails instead: CI
never skips.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

#: The CI switch: with it, a missing data folder or system service fails instead of skipping.
REQUIRE_ENV = "STBENCH_REQUIRE_REAL_DATA"


def required() -> bool:
    """Whether ``STBENCH_REQUIRE_REAL_DATA=1`` (CI) is set."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``; fail it instead under ``STBENCH_REQUIRE_REAL_DATA=1``."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: required here)", pytrace=False)
    pytest.skip(reason)


def need_program(package: str, probe: str) -> None:
    """``probe`` (a command or a glob) exists, else :func:`unavailable` naming the package."""
    if not (shutil.which(probe) or glob.glob(probe)):
        unavailable(f"{probe} not found: install the Debian package {package!r} "
                    f"(apt-get install -y {package}; .ci/run does)")


def chromium_path() -> str:
    """Path of headless Chromium (Debian ``chromium``), or skip/fail via :func:`unavailable`."""
    need_program("chromium", "chromium")
    return shutil.which("chromium") or "/usr/bin/chromium"


def dump_dom(url: str) -> str:
    """The DOM after load (scripts have run) as real headless Chromium serialises it."""
    profile = tempfile.mkdtemp(prefix="stbench-chromium-")
    try:
        proc = subprocess.run(
            [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    assert "<table" in proc.stdout, f"no table in the dumped DOM; stderr: {proc.stderr[-2000:]}"
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL URL: ``$STBENCH_TEST_POSTGRES``, or a throwaway server on 127.0.0.1.

    As root (CI) a Debian cluster (``pg_createcluster``, run as the postgres user); otherwise
    ``initdb`` and ``pg_ctl`` in a temporary folder of the current user.
    """
    url = os.environ.get("STBENCH_TEST_POSTGRES")
    if url:
        yield url
        return
    need_program("postgresql", "/usr/lib/postgresql/*/bin/postgres")
    bindir = sorted((Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")),
                    key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)[-1]
    port = _free_port()
    server = _debian_cluster if os.geteuid() == 0 else _user_cluster
    with server(bindir, port):
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"


@contextmanager
def _debian_cluster(bindir: Path, port: int) -> Iterator[None]:
    need_program("postgresql", "pg_createcluster")
    version, name = bindir.parent.name, f"stbench_test_{port}"
    subprocess.run(["pg_createcluster", version, name, "-p", str(port), "--", "--auth=trust"],
                   check=True, capture_output=True, timeout=120)
    try:
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True,
                       capture_output=True, timeout=120)
        yield
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True,
                       timeout=120, check=False)


@contextmanager
def _user_cluster(bindir: Path, port: int) -> Iterator[None]:
    folder = Path(tempfile.mkdtemp(prefix="stbench-pg-"))
    data = folder / "data"
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
        try:
            yield
        finally:
            subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=120, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
