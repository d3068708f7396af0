"""The module's response section on real Slicer code: runs ``Testing/mrml_response_cases.py`` in a process of its
own (the ``slicer`` module is process-wide), as ``test_slicer_mrml.py`` does for the rest of the module."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_response_section_on_slicer_core(tmp_path):
    if importlib.util.find_spec("slicer_core") is None:
        pytest.skip("slicer-core is not installed (pip install -e '.[slicer-test]')")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "PedTumorSeg"), str(HERE)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           str(HERE / "mrml_response_cases.py"), "--basetemp", str(tmp_path / "base")],
                          cwd=str(HERE.parent), env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0, "\n".join(lines[-60:]) + "\n" + proc.stderr[-3000:]
    assert " passed" in lines[-1] and "skipped" not in lines[-1], lines[-1]
