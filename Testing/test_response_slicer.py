"""The module's response section on real Slicer code: runs ``Testing/mrml_response_cases.py`` in a process of its
own (the ``slicer`` module is process-wide), as ``test_slicer_mrml.py`` does for the rest of the module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import run_cases_in_own_process

HERE = Path(__file__).resolve().parent


def test_response_section_on_slicer_core(tmp_path):
    if importlib.util.find_spec("slicer_core") is None:
        pytest.skip("slicer-core is not installed (pip install -e '.[slicer-test]')")
    summary = run_cases_in_own_process(HERE / "mrml_response_cases.py", tmp_path, timeout=900)
    assert "skipped" not in summary, summary


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
