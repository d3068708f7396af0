"""BackgroundPrediction with real subprocesses: progress parsing, partial lines, errors, cancel kills the tree."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pedtumorseg import progress as events_
from pedtumorseg.ui.background import BackgroundPrediction, build_predict_command, child_environment, find_python_slicer

FAKE = textwrap.dedent(r'''
    import json, os, subprocess, sys, time
    mode = sys.argv[1]
    pidfile = sys.argv[2]
    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
    if mode == "tree":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        for i in range(600):
            emit({"event": "progress", "fraction": i / 600, "message": f"tile {i}"})
            time.sleep(0.1)
    elif mode == "partial":
        text = json.dumps({"event": "progress", "fraction": 0.5, "message": "half"}) + "\n"
        sys.stdout.write(text[:10]); sys.stdout.flush(); time.sleep(0.3)
        sys.stdout.write(text[10:]); sys.stdout.flush()
        print("plain text line", flush=True)
        sys.stdout.write(json.dumps({"event": "done", "case_id": "X", "outputs": {"seg": "a"}})); sys.stdout.flush()
    elif mode == "error":
        emit({"event": "progress", "fraction": 0.1, "message": "loading"})
        emit({"event": "error", "message": "t1.nii.gz: image contains NaN"})
        print("Traceback: boom", file=sys.stderr, flush=True)
        sys.exit(1)
    elif mode == "orphan":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        emit({"event": "done", "case_id": "X", "outputs": {}})
    elif mode == "crash":
        print("something went wrong badly", file=sys.stderr, flush=True)
        sys.exit(3)
''')


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_predict.py"
    script.write_text(FAKE)
    return script


def _run_to_exit(bg: BackgroundPrediction, timeout=20.0) -> list:
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = bg.poll()
        events += new
        if any(e.event == "exit" for e in new):
            return events
        time.sleep(0.02)
    raise AssertionError(f"no exit event within {timeout} s; got {events}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_partial_lines_plain_text_and_done_without_newline(fake, tmp_path):
    work = tmp_path / "work"
    bg = BackgroundPrediction([sys.executable, str(fake), "partial", "-"], work)
    bg.start()
    assert work.is_dir()
    events = _run_to_exit(bg)
    kinds = [e.event for e in events]
    assert kinds == ["progress", "log", "done", "exit"]
    assert events[0] == events_.Progress(0.5, "half")
    assert events[1].message == "plain text line"
    assert bg.result.outputs == {"seg": "a"}
    assert bg.returncode == 0 and events[-1].returncode == 0
    assert bg.poll() == []  # exit is reported once
    bg.cleanup()
    assert not work.exists()


def test_error_event_surfaces_message(fake, tmp_path):
    bg = BackgroundPrediction([sys.executable, str(fake), "error", "-"], tmp_path / "w")
    bg.start()
    events = _run_to_exit(bg)
    assert bg.returncode == 1
    assert bg.error == "t1.nii.gz: image contains NaN"
    assert bg.failure_message() == "t1.nii.gz: image contains NaN"
    assert any(e.event == "log" and e.stream == "stderr" for e in events)
    bg.cleanup()


def test_crash_without_error_event_reports_stderr(fake, tmp_path):
    bg = BackgroundPrediction([sys.executable, str(fake), "crash", "-"], tmp_path / "w")
    bg.start()
    _run_to_exit(bg)
    assert bg.returncode == 3
    assert bg.failure_message() == "something went wrong badly"
    bg.cleanup()


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_kills_process_and_child_and_cleanup_removes_workdir(fake, tmp_path):
    pidfile = tmp_path / "pids.txt"
    work = tmp_path / "work"
    bg = BackgroundPrediction([sys.executable, str(fake), "tree", str(pidfile)], work)
    bg.start()
    deadline = time.monotonic() + 15
    progress = []
    while time.monotonic() < deadline and not (pidfile.exists() and progress):
        progress += [e for e in bg.poll() if e.event == "progress"]
        time.sleep(0.05)
    assert progress, "no progress event before cancel"
    assert 0.0 <= progress[0].fraction < 1.0
    parent, child = (int(x) for x in pidfile.read_text().split())
    assert _alive(parent) and _alive(child)
    (work / "input.nii.gz").write_bytes(b"x")
    bg.cancel()
    assert bg.returncode is not None and bg.returncode != 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(parent)
    assert not _alive(child), "the grandchild survived cancel"
    assert bg.failure_message() == "cancelled"
    events = _run_to_exit(bg)
    assert events[-1].event == "exit"
    bg.cleanup()
    assert not work.exists()
    bg.cancel()  # idempotent


def test_cleanup_of_a_running_process_cancels_it(fake, tmp_path):
    pidfile = tmp_path / "pids.txt"
    bg = BackgroundPrediction([sys.executable, str(fake), "tree", str(pidfile)], tmp_path / "w")
    bg.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not pidfile.exists():
        time.sleep(0.05)
    bg.cleanup()
    assert bg.returncode is not None
    assert not (tmp_path / "w").exists()


def test_start_twice_refused(fake, tmp_path):
    bg = BackgroundPrediction([sys.executable, str(fake), "crash", "-"], tmp_path / "w")
    bg.start()
    with pytest.raises(RuntimeError):
        bg.start()
    bg.wait(timeout=20)
    bg.cleanup()


def test_build_predict_command():
    inputs = {"t1": "/t/a-t1.nii.gz", "t1ce": "/t/b.nii.gz", "t2": "/t/c.nii.gz", "flair": "/t/d.nii.gz"}
    cmd = build_predict_command("/s/PythonSlicer", inputs, "/t/out", model="/m.zip", device="cpu", folds=[0],
                                tta=False, case_id="case")
    assert cmd[:4] == ["/s/PythonSlicer", "-m", "pedtumorseg", "predict"]
    assert cmd[cmd.index("--t1") + 1] == "/t/a-t1.nii.gz"
    assert cmd[cmd.index("--t1ce") + 1] == "/t/b.nii.gz"
    assert cmd[cmd.index("--flair") + 1] == "/t/d.nii.gz"
    assert cmd[cmd.index("--progress") + 1] == "json"
    assert cmd[cmd.index("--folds") + 1:cmd.index("--folds") + 2] == ["0"]
    assert "--no-tta" in cmd and "--raw" in cmd
    assert cmd[cmd.index("--model") + 1] == "/m.zip"
    full = build_predict_command("py", inputs, "o", folds=None, tta=True)
    assert "--no-tta" not in full and "--folds" not in full and "--model" not in full
    with pytest.raises(ValueError, match="flair"):
        build_predict_command("py", {k: v for k, v in inputs.items() if k != "flair"}, "o")


def test_build_predict_command_is_accepted_by_the_cli_parser():
    from pedtumorseg.cli import build_parser

    inputs = {"t1": "a", "t1ce": "b", "t2": "c", "flair": "d"}
    cmd = build_predict_command("py", inputs, "out", model="m", device="cuda", folds=[0, 1], tta=False, case_id="X")
    args = build_parser().parse_args(cmd[3:])
    assert (args.t1, args.t1ce, args.t2, args.flair) == ("a", "b", "c", "d")
    assert args.folds == [0, 1] and args.no_tta and args.raw and args.progress == "json"
    assert args.device == "cuda" and args.model == "m" and args.case_id == "X" and args.out == "out"
    only = build_parser().parse_args(build_predict_command("py", inputs, "out", raw_only=True)[3:])
    assert only.raw_only and not only.raw  # --raw-only replaces --raw


def test_parse_line():
    assert events_.parse_line('{"event": "progress", "fraction": 0.2, "message": "m"}') == events_.Progress(0.2, "m")
    assert events_.parse_line('{"no_event": 1}') == events_.Log('{"no_event": 1}')
    assert events_.parse_line("{broken").event == "log"
    assert events_.parse_line("[ 10%] text") == events_.Log("[ 10%] text")
    assert events_.parse_line('{"event": "progress", "fraction": 0.2, "message": "m"}', "stderr").event == "log"
    # a writer's event with a field this reader does not know is still read; a malformed one is a log line
    assert events_.parse_line('{"event": "error", "message": "x", "new_field": 1}') == events_.Failed("x")
    assert events_.parse_line('{"event": "done"}').event == "log"


def test_child_environment_does_not_touch_os_environ(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/existing")
    before = dict(os.environ)
    env = child_environment(["/module"])
    assert env["PYTHONPATH"] == os.pathsep.join(["/module", "/existing"])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert dict(os.environ) == before
    assert child_environment([], base={})["PYTHONUNBUFFERED"] == "1"


def test_find_python_slicer_next_to_python(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python-real"
    python.write_text("")
    assert find_python_slicer(python) is None
    (bin_dir / "PythonSlicer").write_text("")
    assert find_python_slicer(python) == str(bin_dir / "PythonSlicer")


def test_real_cli_error_event_through_background(tmp_path):
    """The real CLI in a background process: a missing input file ends with an error event naming the file."""
    inputs = {c: str(tmp_path / f"missing-{c}.nii.gz") for c in ("t1", "t1ce", "t2", "flair")}
    env = child_environment([Path(__file__).resolve().parents[1] / "PedTumorSeg"])
    bg = BackgroundPrediction(build_predict_command(sys.executable, inputs, tmp_path / "out", device="cpu"),
                              tmp_path / "w", env=env)
    bg.start()
    _run_to_exit(bg, timeout=60)
    assert bg.returncode != 0
    assert "missing-t1" in bg.failure_message()
    bg.cleanup()


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_leftover_child_holding_the_pipes_does_not_block_the_exit_event(fake, tmp_path):
    pidfile = tmp_path / "pids.txt"
    bg = BackgroundPrediction([sys.executable, str(fake), "orphan", str(pidfile)], tmp_path / "w")
    bg.start()
    t0 = time.monotonic()
    events = _run_to_exit(bg, timeout=20)
    assert time.monotonic() - t0 < 15
    assert [e.event for e in events] == ["done", "exit"] and bg.returncode == 0
    child = int(pidfile.read_text().split()[1])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)
    bg.cleanup()
