"""Start ``pedtumorseg serve`` as a process for the browser tests, and the reasons to skip them."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pedtumorseg.web.launcher import free_port

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PEDTUMORSEG_CHROMIUM", "/usr/bin/chromium")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    for module in ("playwright", "trame", "trame_slicer", "slicer"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[web]' playwright)"
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        return "Debian's chromium is not installed (apt-get install -y chromium)"
    from pedtumorseg.web.checks import rendering_problem

    return rendering_problem()


def chromium_path() -> str:
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


def processes(*words: bytes, parent: int | None = None) -> list[int]:
    """Running processes whose command line holds each of ``words`` as an argument (``parent``: only the children
    of that pid), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            arguments = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if all(w in arguments for w in words) and (parent is None or ppid == parent):
            found.append(int(stat.parent.name))
    return found


class Server:
    """``pedtumorseg serve`` on 127.0.0.1 in its own process group; ``url`` once it answers."""

    def __init__(self, data: Path, model: Path, extra=(), log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(REPO / "PedTumorSeg"), os.environ.get("PYTHONPATH", "")]))
        self.log = open(log or os.devnull, "wb")
        command = [sys.executable, "-m", "pedtumorseg", "serve", "--data", str(data), "--model", str(model),
                   "--device", "CPU", "--port", str(self.port), *extra]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def wait_ready(self, timeout: float = 120.0, path: str = "status") -> float:
        """Seconds from the start until the server answered HTTP (``/status``: asking starts no session)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pedtumorseg serve exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.url + path, timeout=2)
                return time.monotonic() - self.started
            except urllib.error.HTTPError:
                return time.monotonic() - self.started  # it answers (e.g. 403 without the token)
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("pedtumorseg serve did not answer")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.log.close()
