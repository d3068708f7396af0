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


def test_response_widget_imports_exist_and_it_stays_qt_wiring():
    import ast
    import importlib

    path = HERE.parent / "PedTumorSeg" / "PedTumorSegWidgets" / "response.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pedtumorseg"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["ResponseSection"]
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 300
    logic = (HERE.parent / "PedTumorSeg" / "PedTumorSegLib" / "response_logic.py").read_text(encoding="utf-8")
    assert "import qt" not in logic and "slicer.util" not in logic and "slicer.mrmlScene" not in logic
