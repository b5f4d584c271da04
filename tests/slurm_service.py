"""A real single-node SLURM cluster on 127.0.0.1 for tests (Debian ``slurm-wlm`` + ``munge``).

:func:`slurm_cluster` writes a ``slurm.conf`` in a temporary folder, starts ``munged``,
``slurmctld`` and ``slurmd`` as this user, waits until the node is idle and yields the
environment (``SLURM_CONF``) that the SLURM client commands and submitit need. Everything is
stopped and removed afterwards. The packages are installed by ``.ci/run``, never by a test.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def slurm_available() -> bool:
    """Whether the SLURM daemons and client commands are installed."""
    return all(shutil.which(c) for c in (*DAEMONS, "sbatch", "sinfo", "sacct"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(folder: Path, user: str, cpus: int) -> str:
    host = socket.gethostname()
    return "\n".join([
        "ClusterName=stbench-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"SlurmUser={user}", f"SlurmdUser={user}",
        "AuthType=auth/munge", f"AuthInfo=socket={folder / 'munge.socket'}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/builtin", "MpiDefault=none", "ReturnToService=2",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={folder / 'jobcomp.txt'}",
        "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=5",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _memory_mb() -> int:
    """This machine's memory in MB, less 1 GB for the system."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(512, pages // 2**20 - 1024)


def _wait_idle(env: dict[str, str], timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                              text=True, timeout=10, check=False)
        last = (proc.stdout + proc.stderr).strip()
        if proc.returncode == 0 and last.startswith("idle"):
            return
        time.sleep(1)
    raise RuntimeError(f"the SLURM node did not become idle: {last}")


@contextmanager
def slurm_cluster(cpus: int | None = None) -> Iterator[dict[str, str]]:
    """Start a one-node cluster; yield the environment for SLURM clients (``SLURM_CONF``)."""
    folder = Path(tempfile.mkdtemp(prefix="stbench-slurm-"))
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    user = getpass.getuser()
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, user, cpus or os.cpu_count() or 1))
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs: list[subprocess.Popen] = []
    try:
        munge_key = folder / "munge.key"
        munge_key.write_bytes(os.urandom(1024))
        munge_key.chmod(0o600)
        procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--socket={folder / 'munge.socket'}",
             f"--key-file={munge_key}", f"--pid-file={folder / 'munged.pid'}",
             f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munge.seed'}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
        procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_idle(env)
        yield env
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(folder, ignore_errors=True)


def cluster_logs(env: dict[str, str]) -> str:
    """The controller's and the node's logs (for failure messages)."""
    folder = Path(env["SLURM_CONF"]).parent
    return "\n".join(f"== {name}\n{(folder / name).read_text()[-3000:]}"
                     for name in ("slurmctld.log", "slurmd.log") if (folder / name).exists())
