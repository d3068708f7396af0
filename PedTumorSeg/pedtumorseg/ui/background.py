"""Run ``pedtumorseg predict --progress json`` in a background process (Slicer-free).

The Slicer module starts the prediction with :class:`BackgroundPrediction`, polls it from a ``qt.QTimer``
(:meth:`BackgroundPrediction.poll` never blocks: a reader thread puts parsed stdout lines on a queue) and
cancels it by killing the whole process tree: the child runs in its own session / process group on POSIX
(``os.killpg``) and ``taskkill /T /F`` kills the tree on Windows. No environment variable of the calling
process is changed; the child gets its own environment.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from pedtumorseg import progress
from pedtumorseg.conventions import CHANNELS


def build_predict_command(python: str | os.PathLike, inputs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                          model: str | os.PathLike | None = None, device: str = "auto",
                          folds: Sequence[int] | None = None, tta: bool = True, case_id: str | None = None,
                          raw: bool = True, raw_only: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """argv of ``python -m pedtumorseg predict`` on four files with JSON progress (and ``--raw`` or
    ``--raw-only``: the network's labels only, for a caller that post-processes them itself)."""
    missing = [c for c in CHANNELS if not inputs.get(c)]
    if missing:
        raise ValueError(f"missing input file(s) for {', '.join(missing)}")
    command = [os.fspath(python), "-m", "pedtumorseg", "predict"]
    for channel in CHANNELS:
        command += [f"--{channel}", os.fspath(inputs[channel])]
    command += ["--out", os.fspath(out_dir), "--device", str(device), "--progress", "json"]
    if case_id:
        command += ["--case-id", str(case_id)]
    if model:
        command += ["--model", os.fspath(model)]
    if folds:
        command += ["--folds", *[str(int(f)) for f in folds]]
    if not tta:
        command.append("--no-tta")
    if raw_only:
        command.append("--raw-only")
    elif raw:
        command.append("--raw")
    command += list(extra)
    return command


def find_python_slicer(python_executable: str | os.PathLike | None = None) -> str | None:
    """Slicer's ``PythonSlicer`` launcher (it sets Slicer's library paths), else None.

    Looked up on PATH (Slicer's launcher puts its bin folder there) and next to ``python_executable``
    (default ``sys.executable``, Slicer's ``python-real`` inside Slicer).
    """
    found = shutil.which("PythonSlicer")
    if found:
        return found
    base = Path(python_executable or sys.executable).resolve().parent
    for folder in (base, base.parent / "bin"):
        for name in ("PythonSlicer.exe", "PythonSlicer"):
            candidate = folder / name
            if candidate.is_file():
                return str(candidate)
    return None


def child_environment(extra_python_path: Sequence[str | os.PathLike] = (),
                      base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with ``extra_python_path`` prepended to PYTHONPATH and
    unbuffered output; the calling process's environment is not modified."""
    env = dict(os.environ if base is None else base)
    paths = [os.fspath(p) for p in extra_python_path]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class BackgroundPrediction:
    """A prediction process: ``start()``, then ``poll()`` periodically until an ``exit`` event; ``cancel()``
    any time; ``cleanup()`` removes ``workdir`` (the temporary inputs and outputs) in all cases."""

    #: seconds to wait, after the process ended, for children that keep its output pipes open
    ORPHAN_GRACE_S = 2.0

    def __init__(self, command: Sequence[str], workdir: str | os.PathLike, env: Mapping[str, str] | None = None):
        self.command = [str(c) for c in command]
        self.workdir = Path(workdir)
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        self.error: str | None = None  # message of the last Failed event
        self.result: progress.Done | None = None
        self.stderr_tail: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._exit_reported = False
        self._exited_at: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("the prediction was already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: cancel kills the children too
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd=str(self.workdir), env=self.env, **kwargs)
        for stream, is_stdout in ((self.process.stdout, True), (self.process.stderr, False)):
            t = threading.Thread(target=self._read, args=(stream, is_stdout), daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def poll(self) -> list[progress.Event]:
        """Events received since the last call, without blocking (``pedtumorseg.progress``).

        The CLI's JSON lines come as their events (``Progress``, ``Done``, ``Failed``); other lines as ``Log``; a
        final ``Exited`` once the process ended and both streams were read to the end.
        """
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for event in events:
            if isinstance(event, progress.Failed):
                self.error = event.message
            elif isinstance(event, progress.Done):
                self.result = event
        if not self._exit_reported and self.process is not None and self.process.poll() is not None:
            if self._exited_at is None:
                self._exited_at = time.monotonic()
            readers_done = not any(t.is_alive() for t in self._threads)
            if not readers_done and time.monotonic() - self._exited_at > self.ORPHAN_GRACE_S:
                # a leftover child of the finished process still holds the pipes open: end it
                if os.name != "nt":
                    self._killpg(self.process.pid)
                for t in self._threads:
                    t.join(timeout=1)
                readers_done = True
            if readers_done and self._queue.empty():
                self._exit_reported = True
                events.append(progress.Exited(self.process.returncode))
        return events

    def wait(self, timeout: float | None = None) -> list[progress.Event]:
        """Block until the process ends (used by the synchronous self-test and headless callers); all events."""
        if self.process is None:
            raise RuntimeError("the prediction was not started")
        self.process.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        return self.poll()

    def cancel(self) -> None:
        """Kill the process and all its children (idempotent)."""
        self.cancelled = True
        p = self.process
        if p is None or p.poll() is not None:
            if p is not None and os.name != "nt":
                self._killpg(p.pid)  # the leader is gone but children may still run in its group
            return
        if os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(p.pid)], capture_output=True, check=False)
        else:
            self._killpg(p.pid)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)

    @staticmethod
    def _killpg(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        """Cancel if still running, close the pipes and remove ``workdir``."""
        if self.running:
            self.cancel()
        if self.process is not None:
            for t in self._threads:
                t.join(timeout=5)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def failure_message(self) -> str:
        """One line saying why the run failed (error event, else the last stderr lines, else the exit code)."""
        if self.cancelled:
            return "cancelled"
        if self.error:
            return self.error
        tail = [line for line in self.stderr_tail if line.strip()]
        if tail:
            return tail[-1]
        return f"the prediction process ended with exit code {self.returncode}"

    # -- reader threads -----------------------------------------------------------------------------------------
    def _read(self, stream, is_stdout: bool) -> None:
        # readline() on a binary pipe returns whole lines; a final line without "\n" arrives at EOF, and a line
        # written in several chunks by the child is joined by the pipe buffer before "\n" is seen.
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                continue
            if not is_stdout:
                self.stderr_tail = (self.stderr_tail + [line])[-20:]
            self._queue.put(progress.parse_line(line, "stdout" if is_stdout else "stderr"))

