"""The module's logic on real Slicer code: runs ``Testing/mrml_cases.py`` with pytest in a process of its own.

``mrml_cases.py`` drives ``PedTumorSegLib`` on a real MRML scene from ``slicer-core`` (PyPI) with Slicer's Volumes,
Segmentations, Terminologies and Subject Hierarchy logics: loading, Apply with the demo bundle against the command
line, segments, slider moves, hand edits, exports, leftover nodes. The ``slicer`` module is process-wide (and
loads VTK's and Slicer's C++ libraries), so it never enters the process that runs the rest of the suite.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import run_cases_in_own_process

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_module_logic_on_slicer_core(tmp_path):
    if importlib.util.find_spec("slicer_core") is None or importlib.util.find_spec("slicerio") is None:
        pytest.skip("slicer-core and slicerio are not installed (pip install -e '.[slicer-test]')")
    summary = run_cases_in_own_process(HERE / "mrml_cases.py", tmp_path, timeout=1500)
    if importlib.util.find_spec("torch") is not None and importlib.util.find_spec("nilearn") is not None:
        assert "skipped" not in summary, summary  # Apply with the demo bundle ran
