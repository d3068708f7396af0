"""A one-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd of Debian's ``slurm-wlm`` and
``munge`` packages, each started in the foreground with a generated config under one temporary folder, and
stopped again. ``start_cluster`` raises ``ClusterUnavailable`` (with the failing command's output) when the
programs are missing or a daemon does not come up, so that a test can skip saying why.

Every SLURM command of the test must run with :meth:`Cluster.env` (``SLURM_CONF`` names the generated config).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run here; the message says which step failed and what it printed."""


@dataclass
class Cluster:
    root: Path
    conf: Path
    node: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        result = subprocess.run(list(argv), env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name} (last lines)\n" + "\n".join(path.read_text(errors="replace")
                                                                   .splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the daemons (SIGTERM, then SIGKILL after 10 s), newest first."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.processes.clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(root: Path, node: str, cpus: int, memory_mb: int, socket_path: Path) -> str:
    spool, state = root / "spool", root / "state"
    return "\n".join([
        "ClusterName=pedtumorseg-test",
        f"SlurmctldHost={node}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}",  # free ports: never a system SLURM's 6817/6818 or another test's
        f"SlurmdPort={_free_port()}",
        f"AuthInfo=socket={socket_path}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"StateSaveLocation={state}",
        f"SlurmdSpoolDir={spool}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/pgid",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "MinJobAge=300",  # finished jobs stay known to scontrol for the test's duration
        "KillWait=10",
        "SchedulerParameters=sched_interval=2",
        "SlurmdTimeout=60",
        f"NodeName={node} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _start(cluster: Cluster, argv: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    proc = subprocess.Popen(argv, env=cluster.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    cluster.processes.append(proc)
    return proc


def _wait_for(what: str, check, cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in cluster.processes:
            if proc.poll() is not None:
                raise ClusterUnavailable(f"{proc.args[0]} exited {proc.returncode} while waiting for {what}\n"
                                         f"{cluster.logs()}")
        if check():
            return
        time.sleep(0.5)
    raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}\n{cluster.logs()}")


def start_cluster(root: Path, cpus: int = 2, memory_mb: int = 2000, timeout: float = 60) -> Cluster:
    """Start munged, slurmctld and slurmd (one node named after this host, ``cpus`` CPUs) under ``root``."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if missing:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmd must run as root to start jobs as their user; this process is not root")
    root = Path(root)
    for sub in ("spool", "state", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # munge checks that the socket's folders are not writable by others
    os.chmod(root / "munge", 0o755)
    node = socket.gethostname().split(".")[0]
    key, sock = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    result = subprocess.run([_program("mungekey"), "--create", "--keyfile", str(key)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise ClusterUnavailable(f"mungekey --create failed: {result.stderr.strip()}")
    conf = root / "slurm.conf"
    conf.write_text(_config(root, node, cpus, memory_mb, sock), encoding="utf-8")
    cluster = Cluster(root, conf, node)
    try:
        _start(cluster, [_program("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                         f"--log-file={root / 'munged.log'}", f"--pid-file={root / 'munge' / 'munged.pid'}",
                         f"--seed-file={root / 'munge' / 'munged.seed'}"], root / "munged.out")
        _wait_for("the munge socket", sock.exists, cluster, timeout)
        _start(cluster, [_program("slurmctld"), "-D", "-i", "-f", str(conf)], root / "slurmctld.out")
        _wait_for("slurmctld", lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, cluster, timeout)
        _start(cluster, [_program("slurmd"), "-D", "-f", str(conf)], root / "slurmd.out")
        _wait_for("the node to be idle", lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%t", check=False).stdout,
                  cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))
