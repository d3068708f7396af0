"""The module's logic on real Slicer code: runs ``Testing/mrml_cases.py`` with pytest in a process of its own.

``mrml_cases.py`` drives ``PedTumorSegLib`` on a real MRML scene from ``slicer-core`` (PyPI) with Slicer's Volumes,
Segmentations, Terminologies and Subject Hierarchy logics: loading, Apply with the demo bundle against the command
line, segments, slider moves, hand edits, exports, leftover nodes. The ``slicer`` module is process-wide (and
loads VTK's and Slicer's C++ libraries), so it never enters the process that runs the rest of the suite.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_module_logic_on_slicer_core(tmp_path):
    if importlib.util.find_spec("slicer_core") is None or importlib.util.find_spec("slicerio") is None:
        pytest.skip("slicer-core and slicerio are not installed (pip install -e '.[slicer-test]')")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "PedTumorSeg"), str(HERE)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           str(HERE / "mrml_cases.py"), "--basetemp", str(tmp_path / "base")],
                          cwd=str(HERE.parent), env=env, capture_output=True, text=True, timeout=1500)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0, "\n".join(lines[-60:]) + "\n" + proc.stderr[-3000:]
    assert " passed" in lines[-1], lines[-1]
    if importlib.util.find_spec("torch") is not None and importlib.util.find_spec("nilearn") is not None:
        assert "skipped" not in lines[-1], lines[-1]  # Apply with the demo bundle ran
