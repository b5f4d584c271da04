"""System services some tests need: headless Chromium and a throwaway PostgreSQL server.

On a Debian machine where the tests run as root (the CI machine), missing packages are
installed with apt-get; elsewhere the test fails with the command to run (never a skip).
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

import pytest


def apt_install(package: str, probe: str) -> None:
    """Install a Debian package when running as root with apt-get, else fail with a hint."""
    if shutil.which(probe) or glob.glob(probe):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"{probe} not found: install it (Debian: `apt-get install -y {package}`); "
                    ".ci/run does this")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env, timeout=900)


def chromium_path() -> str:
    apt_install("chromium", "chromium")
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
    """A PostgreSQL URL: ``$STBENCH_TEST_POSTGRES``, or a new Debian cluster on 127.0.0.1."""
    url = os.environ.get("STBENCH_TEST_POSTGRES")
    if url:
        yield url
        return
    apt_install("postgresql", "/usr/lib/postgresql/*/bin/postgres")
    if not shutil.which("pg_createcluster"):
        pytest.fail("pg_createcluster not found: install Debian's postgresql package")
    version = sorted(Path(p).parent.parent.name for p in glob.glob("/usr/lib/postgresql/*/bin/postgres"))[-1]
    port = _free_port()
    name = f"stbench_test_{port}"
    subprocess.run(["pg_createcluster", version, name, "-p", str(port), "--",
                    "--auth=trust"], check=True, capture_output=True, timeout=120)
    try:
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True,
                       capture_output=True, timeout=120)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True,
                       timeout=120, check=False)
